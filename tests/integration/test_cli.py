"""The ``orderwatch`` command as a user runs it: the installed console script, in a process.

Each test writes its own ``orderwatch.toml`` and SQLite file under ``tmp_path`` and runs the
command there with a clean environment, then checks exit status, output and what landed in
the database (read back through the CLI itself where a user would).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

ORDERWATCH = Path(sys.executable).parent / "orderwatch"
SECRET = "s3cret-do-not-print"

ORDER: dict[str, Any] = {
    "order_no": "R20261126000001",
    "vendor": "acme",
    "sku": "SKU-1001",
    "quantity": 1,
    "points": 12000,
    "customer_id": "C0001",
    "payment_status": "PAID",
    "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区世纪大道1号"},
}


def run(
    *args: str, cwd: Path, timeout: float = 60, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERWATCH_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    env.update(extra_env or {})
    return subprocess.run(
        [str(ORDERWATCH), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def write_config(tmp_path: Path, extra: str = "", base_url: str = "http://127.0.0.1:9") -> Path:
    cfg = tmp_path / "orderwatch.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "ow.db"}"

[vendors.acme]
base_url = "{base_url}"
merchant_id = "M0001"
secret = "{SECRET}"
timeout = "300ms"
{extra}
""",
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config whose database is already upgraded."""
    path = write_config(tmp_path)
    done = run("db", "upgrade", "-c", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return path


def listed(cfg: Path) -> list[dict[str, Any]]:
    done = run("orders", "list", "--json", "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


# ---------------------------------------------------------------------------- database


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    done = run("db", "upgrade", "-c", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "schema is current" in done.stdout
    with closing(sqlite3.connect(tmp_path / "ow.db")) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"orders", "order_events", "outbox"} <= tables
    again = run("db", "upgrade", "-c", str(cfg), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


# ---------------------------------------------------------------------------- import


def test_import_json_lines_shows_pending_orders(cfg: Path) -> None:
    second = {**ORDER, "order_no": "R20261126000002", "recipient": {**ORDER["recipient"]}}
    second["recipient"]["name"] = "李四"
    file = write_lines(cfg.parent / "orders.jsonl", [ORDER, second])

    done = run("orders", "import", str(file), "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 0, done.stderr
    assert "imported 2 orders" in done.stdout

    orders = listed(cfg)
    assert sorted(o["order_no"] for o in orders) == ["R20261126000001", "R20261126000002"]
    assert {o["status"] for o in orders} == {"PENDING"}
    assert {o["status_label"] for o in orders} == {"待处理"}
    assert {o["reason"] for o in orders} == {None}
    assert {o["recipient"]["name"] for o in orders} == {"张三", "李四"}

    # Importing the same file again changes nothing.
    again = run("orders", "import", str(file), "-c", str(cfg), cwd=cfg.parent)
    assert again.returncode == 0, again.stderr
    assert "imported 0 orders" in again.stdout
    assert len(listed(cfg)) == 2


def test_import_with_one_bad_record_imports_nothing(cfg: Path) -> None:
    bad = {**ORDER, "order_no": "R2", "recipient": {**ORDER["recipient"], "phone": "call me"}}
    third = {**ORDER, "order_no": "R3"}
    file = write_lines(cfg.parent / "orders.jsonl", [ORDER, bad, third])

    done = run("orders", "import", str(file), "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 1
    assert re.search(r"line 2: recipient\.phone: ", done.stderr), done.stderr
    assert "line 1" not in done.stderr
    assert "line 3" not in done.stderr
    assert listed(cfg) == []


def test_import_gb18030_csv_with_chinese_names(cfg: Path) -> None:
    header = (
        "order_no,vendor,sku,quantity,points,customer_id,payment_status,"
        "recipient.name,recipient.phone,recipient.address\n"
    )
    rows = (
        "C1,acme,SKU-1,1,3000,C0001,PAID,欧阳娜娜,13900000001,广州市天河区体育西路3号\n"
        "C2,acme,SKU-2,2,8000,C0002,UNPAID,王五,13900000002,北京市朝阳区建国路8号\n"
    )
    file = cfg.parent / "orders.csv"
    file.write_bytes((header + rows).encode("gb18030"))
    with pytest.raises(UnicodeDecodeError):
        file.read_bytes().decode("utf-8")  # the file really is not UTF-8

    done = run("orders", "import", str(file), "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 0, done.stderr
    shown = run("orders", "show", "C1", "--json", "-c", str(cfg), cwd=cfg.parent)
    assert shown.returncode == 0, shown.stderr
    order = json.loads(shown.stdout)
    assert order["recipient"]["name"] == "欧阳娜娜"
    assert order["recipient"]["address"] == "广州市天河区体育西路3号"
    assert {o["order_no"]: o["payment_status"] for o in listed(cfg)} == {
        "C1": "PAID",
        "C2": "UNPAID",
    }


# ---------------------------------------------------------------------------- show


def test_orders_show_json_has_the_timeline(cfg: Path) -> None:
    file = write_lines(cfg.parent / "orders.jsonl", [ORDER])
    assert run("orders", "import", str(file), "-c", str(cfg), cwd=cfg.parent).returncode == 0

    done = run("orders", "show", ORDER["order_no"], "--json", "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 0, done.stderr
    order = json.loads(done.stdout)
    assert order["order_no"] == ORDER["order_no"]
    assert (order["status"], order["status_label"]) == ("PENDING", "待处理")
    assert [e["kind"] for e in order["events"]] == ["created"]
    assert order["events"][0]["to"] == "PENDING"
    assert order["events"][0]["actor"] == "cli-import"


def test_orders_show_missing_order_exits_1(cfg: Path) -> None:
    done = run("orders", "show", "MISSING", "-c", str(cfg), cwd=cfg.parent)
    assert done.returncode == 1
    assert "MISSING" in done.stderr


# ---------------------------------------------------------------------------- config


def test_unknown_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra="\n[polling]\nmax_pols = 3\n")
    done = run("orders", "list", "-c", str(cfg), cwd=tmp_path)
    assert done.returncode == 2
    assert "polling.max_pols" in done.stderr
    assert "unknown key" in done.stderr


@pytest.mark.parametrize(
    ("extra", "named", "why"),
    [
        ('\n[api]\nlisten = "localhost"\n', "api.listen", "expected HOST:PORT"),
        ('\n[api]\nlisten = "0.0.0.0:70000"\n', "api.listen", "expected HOST:PORT"),
        (
            '\n[notify]\nwebhook_url = "https://hooks.example.com/ow"\n',
            "notify.secret",
            "required to sign webhooks",
        ),
        ('\n[notify]\nwebhook_url = "gopher://x"\n', "notify.webhook_url", "'gopher'"),
        ('\n[notify]\nwebhook_url = "hooks.example.com"\n', "notify.webhook_url", "not a URL"),
        ('\n[notify]\nwebhook_url = "https://[::1"\n', "notify.webhook_url", "not a URL"),
    ],
)
def test_config_check_refuses_what_serve_would_refuse(
    tmp_path: Path, extra: str, named: str, why: str
) -> None:
    """`config check` reports the API address and the notification channel too, not
    only when `serve` starts."""
    cfg = write_config(tmp_path, extra=extra)
    done = run("config", "check", str(cfg), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert named in done.stderr
    assert why in done.stderr


def test_config_check_accepts_a_complete_file(tmp_path: Path) -> None:
    extra = (
        '\n[api]\nlisten = "[::1]:8080"\n\n[notify]\nwebhook_url = "https://hooks.example.com/ow"'
        '\nsecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
    )
    done = run("config", "check", str(write_config(tmp_path, extra=extra)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ": ok" in done.stdout


def test_schedule_prints_the_default_table(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    done = run("schedule", "-c", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "max_polls 30" in done.stdout
    assert "deadline 7d" in done.stdout
    for column in ("query", "delay", "elapsed since placing"):
        assert column in done.stdout
    rows = [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in done.stdout.splitlines()
        if re.match(r"^│\s*\d+\s*│", line)
    ]
    assert len(rows) == 30
    assert (rows[0][0], rows[0][1], rows[0][3]) == ("1", "10m", "10m")
    assert (rows[1][0], rows[1][1], rows[1][3]) == ("2", "5m", "15m")
    assert (rows[2][0], rows[2][1], rows[2][3]) == ("3", "10m", "25m")
    assert rows[-1][1] == "6h"  # capped at max_interval


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    done = run("config", "show", "-c", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "vendors.acme.secret = ***  (file)" in lines
    assert "polling.max_polls = 30  (default)" in lines
    assert f"database.url = sqlite:///{tmp_path / 'ow.db'}  (file)" in lines
    assert SECRET not in done.stdout


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    done = run(
        "config",
        "show",
        "-c",
        str(cfg),
        cwd=tmp_path,
        extra_env={"ORDERWATCH_POLLING__MAX_POLLS": "7"},
    )
    assert done.returncode == 0, done.stderr
    assert "polling.max_polls = 7  (env)" in done.stdout.splitlines()


# ---------------------------------------------------------------------------- running


@pytest.mark.slow
def test_demo_json_summary(tmp_path: Path) -> None:
    done = run("demo", "--orders", "60", "--speed", "40000", "--json", cwd=tmp_path, timeout=90)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["orders"] == 60
    assert summary["max_place_requests"] == 1
    assert summary["active"] == 0
    assert sum(summary["by_status"].values()) == 60
    assert sum(summary["by_reason"].values()) == summary["by_status"].get("FAILED", 0)
    assert summary["by_status"].get("SUCCEEDED", 0) > 40


def test_redeliver_failed_counts_first_then_queues(cfg: Path) -> None:
    """An operator re-sends every failed notification of a filter, after a dry-run count."""
    import asyncio
    from dataclasses import replace as copy
    from datetime import UTC, datetime

    from orderwatch.lifecycle import Event, Transition
    from orderwatch.order import NewOrder, Recipient
    from orderwatch.statuses import Reason, Status
    from orderwatch.store.base import OutboxItem, OutboxResult, Write
    from orderwatch.store.sql import SqlStore

    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

    async def a_failed_notification() -> None:
        store = SqlStore(f"sqlite:///{cfg.parent / 'ow.db'}")
        try:
            recipient = Recipient("张三", "13800000000", "上海")
            await store.insert_orders([NewOrder("R1", "acme", "SKU-1", 1, 100, recipient)], now=now)
            (order,) = await store.claim_due(
                now=now, real_now=now, limit=1, worker_id="t", lease=60
            )
            done = copy(order, status=Status.FAILED, reason=Reason.VENDOR_FAILED, next_run_at=None)
            event = Event(kind="failed", at=now, from_status=order.status, to_status=Status.FAILED)
            note = OutboxItem("order.failed", "{}")
            await store.apply(
                [Write(Transition(done, (event,), "order.failed"), order.lease_token, note)]
            )
            (row,) = await store.claim_outbox(now=now, real_now=now, limit=1, lease=60)
            assert row.lease_token is not None
            gone = OutboxResult(row.id, row.lease_token, "failed", 1, None, "HTTP 410", None)
            await store.finish_outbox([gone])
        finally:
            await store.close()

    asyncio.run(a_failed_notification())
    dry = run("orders", "redeliver-failed", "-c", str(cfg), "--dry-run", cwd=cfg.parent)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"matched": 1, "changed": 0, "dry_run": True}
    done = run(
        "orders", "redeliver-failed", "-c", str(cfg), "--reason", "VENDOR_FAILED", cwd=cfg.parent
    )
    assert json.loads(done.stdout)["changed"] == 1
    with closing(sqlite3.connect(cfg.parent / "ow.db")) as db:
        assert db.execute("SELECT state FROM outbox").fetchall() == [("pending",)]
