"""What the Celery and procrastinate implementations share (runs in the peers' venv).

The workload is the one orderwatch runs in ``bench/compare/run.py``: place each order once
with a signed place-order request, then poll it with signed queries on orderwatch's backoff
(first poll ``initial_delay`` after placing, then ``initial_interval × factor**(n-1)``,
capped, jittered ±``jitter``) until the answer is final or ``max_polls`` queries were
answered, then store the final state. Times are schedule seconds divided by ``speed``.

The signature is the reference protocol's HMAC-SHA256 (DESIGN §5), re-implemented here in a
few lines of standard library (orderwatch's ``vendors/signing.py`` needs orderwatch's
dependencies); run.py checks at start that both give the same signatures.
The run's settings come from the ``BENCH_CFG`` environment variable (JSON), so the Celery
worker processes, which the ``celery`` command starts, see them too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sign(fields: dict[str, Any], secret: str) -> str:
    """HMAC-SHA256 over DESIGN §5's canonical string, as orderwatch.vendors.signing.sign."""
    text = "&".join(
        f"{k}={_text(fields[k])}"
        for k in sorted(fields)
        if k != "sign" and fields[k] is not None and fields[k] != ""
    )
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(fields: dict[str, Any], secret: str) -> bool:
    given = fields.get("sign")
    return isinstance(given, str) and hmac.compare_digest(given, sign(fields, secret))


CFG: dict[str, Any] = json.loads(os.environ.get("BENCH_CFG", "{}"))
HEADERS = {"Content-Type": "application/json; charset=utf-8"}
FINAL_VENDOR = {"DELIVERED": "SUCCEEDED", "FAILED": "FAILED"}
_rng = random.Random()


def cfg(key: str) -> Any:
    try:
        return CFG[key]
    except KeyError:
        raise SystemExit(f"BENCH_CFG has no {key!r} (run bench/compare/run.py)") from None


def delay_after(queries: int) -> float:
    """Real seconds to wait after placing (queries=0) or after the n-th query."""
    p = cfg("polling")
    if queries == 0:
        d = p["initial_delay_s"]
    else:
        d = min(p["initial_interval_s"] * p["factor"] ** (queries - 1), p["max_interval_s"])
        j = p["jitter"]
        d = _rng.uniform(d * (1 - j), d * (1 + j))
    return float(d) / float(cfg("speed"))


def signed(fields: dict[str, Any]) -> bytes:
    """As ReferenceAdapter._signed (real time: the simulator does not check the clock)."""
    fields["timestamp"] = int(time.time())
    fields["nonce"] = os.urandom(12).hex()
    fields["sign"] = sign(fields, cfg("secret"))
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def place_body(order: dict[str, Any]) -> bytes:
    return signed(
        {
            "merchant_id": cfg("merchant"),
            "order_no": order["order_no"],
            "sku": order["sku"],
            "quantity": order["quantity"],
            "recipient": {
                "name": order["name"],
                "phone": order["phone"],
                "address": order["address"],
            },
            "points": order["points"],
        }
    )


def query_body(order_no: str) -> bytes:
    return signed({"merchant_id": cfg("merchant"), "order_no": order_no})


def interpret(kind: str, http_status: int, raw: bytes) -> tuple[str, str | None]:
    """("accepted" | "rejected" | "final" | "progress" | "error", vendor status)."""
    if http_status != 200:
        return "error", f"HTTP {http_status}"
    try:
        answer = json.loads(raw)
    except ValueError:
        return "error", "not JSON"
    if not isinstance(answer, dict) or not verify(answer, cfg("secret")):
        return "error", "bad signature"
    code = answer.get("code")
    data = answer.get("data") or {}
    if code != "0000":
        return ("rejected" if kind == "place" else "error"), str(code)
    status = data.get("status")
    if kind == "place":
        return ("accepted" if status == "ACCEPTED" else "error"), status
    if status in FINAL_VENDOR:
        return "final", status
    return "progress", status


def final_record(outcome: str, vendor_status: str | None, lateness: list[float]) -> str:
    return json.dumps({"outcome": outcome, "vendor_status": vendor_status, "late": lateness})


def order_fields(n: int, prefix: str, start: int = 0) -> list[dict[str, Any]]:
    """The benchmark's synthetic orders (bench/pipeline.py's generator)."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from pipeline import order_data  # stdlib-only at import time

    return [
        {
            "order_no": d.order_no,
            "sku": d.sku,
            "quantity": d.quantity,
            "points": d.points,
            "name": d.name,
            "phone": d.phone,
            "address": d.address,
        }
        for d in order_data(n, prefix, start)
    ]


def summarise(records: Any) -> dict[str, Any]:
    """Stored final records (JSON texts) → count, outcomes, poll lateness percentiles (ms)."""
    by: dict[str, int] = {}
    late: list[float] = []
    for raw in records:
        r = json.loads(raw)
        by[r["outcome"]] = by.get(r["outcome"], 0) + 1
        late.extend(r["late"])
    late.sort()

    def pct(q: float) -> float:
        return late[min(len(late) - 1, int(q / 100 * len(late)))] * 1000 if late else 0.0

    return {
        "final": sum(by.values()),
        "by_outcome": by,
        "polls": len(late),
        "poll_lateness_p50_ms": pct(50),
        "poll_lateness_p99_ms": pct(99),
        "poll_lateness_max_ms": late[-1] * 1000 if late else 0.0,
    }
