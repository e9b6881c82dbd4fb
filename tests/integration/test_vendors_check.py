"""``orderwatch vendors check NAME`` and ``orderwatch simulator --dialect FILE``, as processes.

The simulator runs as its own ``orderwatch simulator`` process speaking GiftCo's or
ShopMall's dialect from ``examples/vendors``; ``vendors check`` reads an orderwatch.toml
built from the matching example config and sends one signed query for a made-up order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ORDERWATCH = Path(sys.executable).parent / "orderwatch"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vendors"
SIMS = {  # name → simulator flags matching the example config
    "giftco": ["--merchant-id", "GC10001", "--sign-type", "MD5"],
    "shopmall": ["--merchant-id", "SM-APP-01", "--sign-type", "HMAC-SHA256"],
}


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ORDERWATCH_")}
    e.update({"COLUMNS": "200", "NO_COLOR": "1"})
    return e


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ORDERWATCH), *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


StartSim = Callable[..., str]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[StartSim]:
    """``start_sim("giftco", secret=...)`` → the base URL of a simulator process."""
    procs: list[subprocess.Popen[str]] = []

    def start(name: str | None, *, secret: str) -> str:
        args = [str(ORDERWATCH), "simulator", "--port", "0", "--secret", secret]
        if name is not None:
            args += [*SIMS[name], "--dialect", str(EXAMPLES / f"{name}.sim.toml")]
        proc = subprocess.Popen(
            args, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on "), (
            line,
            proc.stderr and proc.stderr.read(),
        )
        return line.split()[-1]

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.communicate(timeout=10)  # also closes its pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def write_config(tmp_path: Path, name: str, base_url: str, secret: str) -> Path:
    """orderwatch.toml: the example's [vendors.NAME] with the simulator's URL and secret."""
    text = (EXAMPLES / f"{name}.toml").read_text(encoding="utf-8")
    data: dict[str, Any] = tomllib.loads(text)
    default_url = data["vendors"][name]["base_url"]
    text = text.replace(f'base_url = "{default_url}"', f'base_url = "{base_url}"')
    text = text.replace(f'secret = "env:{name.upper()}_SECRET"', f'secret = "{secret}"')
    path = tmp_path / "orderwatch.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "ow.db"}"\n\n{text}', "utf-8")
    return path


@pytest.mark.parametrize("name", sorted(SIMS))
def test_check_reports_an_unknown_order_as_understood(
    name: str, tmp_path: Path, start_sim: StartSim
) -> None:
    url = start_sim(name, secret="shared-secret")
    cfg = write_config(tmp_path, name, url, "shared-secret")
    done = run("vendors", "check", name, "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["vendor"] == name
    assert report["adapter"] == "mapped"
    assert report["order_no"].startswith("OW-CHECK-")
    assert report["http_status"] == 200
    assert report["signature"] == "valid"
    assert report["outcome"] == "unknown_order"
    assert report["code"] == {"giftco": "ORDER_NOT_EXIST", "shopmall": "40404"}[name]
    assert report["understood"] is True
    assert report["latency_ms"] >= 0
    assert "order not found" in report["body"]  # the raw answer is shown
    # what was sent: the vendor's own field names, signed
    sent = report["request"]
    assert {"giftco": "outTradeNo", "shopmall": "bizOrderNo"}[name] in sent
    if name == "giftco":  # MD5 in the body field `sign`
        assert len(sent["sign"]) == 32
    else:  # HMAC-SHA256 in a header
        assert "sign" not in sent
        assert len(report["request_headers"]["X-Mall-Signature"]) == 64
    assert "shared-secret" not in done.stdout


def test_check_table_and_chosen_order_no(tmp_path: Path, start_sim: StartSim) -> None:
    url = start_sim("giftco", secret="shared-secret")
    cfg = write_config(tmp_path, "giftco", url, "shared-secret")
    done = run(
        "vendors", "check", "giftco", "-c", str(cfg), "--order-no", "R-PROBE-7", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "R-PROBE-7" in out
    assert "unknown_order" in out
    assert "ORDER_NOT_EXIST" in out
    assert "valid" in out


def test_check_with_the_wrong_secret_fails(tmp_path: Path, start_sim: StartSim) -> None:
    url = start_sim("shopmall", secret="the-vendors-secret")
    cfg = write_config(tmp_path, "shopmall", url, "not-the-secret")
    done = run("vendors", "check", "shopmall", "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    # the vendor refused our signature, and its refusal is not signed with our secret
    assert report["signature"] == "invalid"
    assert report["outcome"] == "abnormal:bad_signature"
    assert report["understood"] is False
    assert "40100" in report["body"]


def test_check_shows_an_answer_the_mapping_does_not_know(
    tmp_path: Path, start_sim: StartSim
) -> None:
    url = start_sim("giftco", secret="shared-secret")
    cfg = write_config(tmp_path, "giftco", url, "shared-secret")
    text = cfg.read_text(encoding="utf-8")
    assert 'ORDER_NOT_EXIST = "unknown_order"\n' in text
    cfg.write_text(text.replace('ORDER_NOT_EXIST = "unknown_order"\n', ""), encoding="utf-8")
    done = run("vendors", "check", "giftco", "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["signature"] == "valid"
    assert report["outcome"] == "abnormal:unmapped"
    assert report["detail"] == "resultCode = 'ORDER_NOT_EXIST' is not in codes"


def test_check_an_unreachable_vendor_fails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "giftco", "http://127.0.0.1:9", "s")  # nothing on port 9
    done = run("vendors", "check", "giftco", "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "abnormal:network"
    assert report["http_status"] is None


def test_check_an_unknown_vendor_is_a_usage_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "giftco", "http://127.0.0.1:9", "s")
    done = run("vendors", "check", "nosuch", "-c", str(cfg), cwd=tmp_path)
    assert done.returncode == 2
    assert "vendors.nosuch" in done.stderr
    assert "giftco" in done.stderr


def test_check_a_reference_vendor(tmp_path: Path, start_sim: StartSim) -> None:
    """Adapters without a ``check`` method are driven through ``query``."""
    url = start_sim(None, secret="ref-secret")
    cfg = tmp_path / "orderwatch.toml"
    cfg.write_text(
        f'[vendors.acme]\nbase_url = "{url}"\nmerchant_id = "M0001"\nsecret = "ref-secret"\n',
        encoding="utf-8",
    )
    done = run("vendors", "check", "acme", "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["adapter"] == "reference"
    assert report["outcome"] == "unknown_order"
    assert report["code"] == "E404"
    assert report["signature"] == "valid"
    # the wrong secret: the answer's signature no longer checks out
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("ref-secret", "not-it"))
    done = run("vendors", "check", "acme", "-c", str(cfg), "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "abnormal:bad_signature"
    assert report["signature"] == "invalid"


def test_a_mapped_vendor_without_mapping_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "orderwatch.toml"
    cfg.write_text(
        '[vendors.acme]\nadapter = "mapped"\nbase_url = "http://127.0.0.1:9"\n'
        'merchant_id = "M0001"\nsecret = "s"\n',
        encoding="utf-8",
    )
    done = run("config", "check", str(cfg), cwd=tmp_path)
    assert done.returncode == 2
    assert "vendors.acme.mapping" in done.stderr
    assert "required when adapter = 'mapped'" in done.stderr


def test_simulator_rejects_a_bad_dialect_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('body = "xml"\n[request]\norder_number = "x"\n', encoding="utf-8")
    done = run("simulator", "--port", "0", "--dialect", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert "body: must be 'json' or 'form'" in done.stderr
    assert "request.order_number" in done.stderr
