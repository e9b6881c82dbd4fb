"""A deterministic vendor that speaks the reference protocol (DESIGN §5) over real HTTP.

It can also speak a vendor's own dialect (paths, field names, codes, form bodies…; see
:mod:`orderwatch.sim_dialect`), translated at the edge so that fates stay the same.

The worker, the demo and the integration tests need a vendor that misbehaves the way real
ones do — refusals, lost answers, hangs, garbage, bad signatures, maintenance windows, orders
that fail or arrive late — and does so *reproducibly*: an order's fate is drawn once from
``(seed, order_no)`` and each request's noise from ``(seed, order_no, kind, n)``, so the same
seed and the same request sequence give the same answers.

Logistics and maintenance windows run on the schedule clock (``clock.now()``) so that a
compressed clock plays days of delivery in seconds; latency and hangs are real seconds
because they exercise the client's HTTP timeouts, which stay in real time.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from aiohttp import web

from .clock import Clock, SystemClock
from .sim_dialect import REFERENCE, Dialect
from .vendors.signing import DEFAULT_SM2_USER_ID, SIGN_TYPES, Signer

__all__ = ["Dialect", "Simulator", "SimulatorConfig", "serve"]

_RATES = (
    "reject_rate",
    "place_timeout_rate",
    "place_timeout_recorded",
    "fail_rate",
    "forget_rate",
    "late_rate",
    "ship_fraction",
    "garbage_rate",
    "bad_sign_rate",
    "error_rate",
    "query_timeout_rate",
)
_DURATIONS = (
    "delivery_min",
    "delivery_max",
    "late_min",
    "late_max",
    "latency",
    "latency_jitter",
    "hang",
)
_MAINTENANCE_STYLES = ("http", "code")


@dataclass
class SimulatorConfig:
    """How the simulated vendor behaves; checked on creation so a typo fails loudly."""

    merchant_id: str = "M0001"
    secret: str = "demo-secret"
    sign_type: str = "HMAC-SHA256"
    # Signing options (vendors/signing.py); where the signature goes is the dialect's.
    # RSA2/SM2: the vendor's own private key and orderwatch's public key, each as PEM text
    # or a file path (SM2: or hex).
    private_key: str = ""
    merchant_public_key: str = ""
    sm2_user_id: str = DEFAULT_SM2_USER_ID
    sign_exclude: list[str] = field(default_factory=list)
    sign_keep_empty: bool = False
    sign_hex_case: str = ""  # "" = the scheme's default, or "lower" / "upper"
    seed: int = 1
    # Decided once per order from (seed, order_no).
    reject_rate: float = 0.0
    place_timeout_rate: float = 0.0
    place_timeout_recorded: float = 0.5
    fail_rate: float = 0.0
    forget_rate: float = 0.0
    late_rate: float = 0.0
    ship_fraction: float = 0.4
    delivery_min: float = 3600.0
    delivery_max: float = 3 * 86400.0
    late_min: float = 8 * 86400.0
    late_max: float = 10 * 86400.0
    # Decided per request from (seed, order_no, kind, n).
    garbage_rate: float = 0.0
    bad_sign_rate: float = 0.0
    error_rate: float = 0.0
    query_timeout_rate: float = 0.0
    # (start, end) schedule-second offsets from the simulator's start time.
    maintenance: list[tuple[float, float]] = field(default_factory=list)
    maintenance_style: str = "http"
    latency: float = 0.0
    latency_jitter: float = 0.0
    hang: float = 30.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "str" and not isinstance(value, str):
                problems.append(f"{f.name}: must be a string")
            elif f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"{f.name}: must be an integer")
            elif f.type == "float" and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                problems.append(f"{f.name}: must be a number")
        if problems:
            raise ValueError("; ".join(problems))
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}: must be between 0 and 1")
        for name in _DURATIONS:
            if not getattr(self, name) >= 0.0:  # also rejects NaN
                problems.append(f"{name}: must be >= 0")
        if self.delivery_min > self.delivery_max:
            problems.append("delivery_min: must not exceed delivery_max")
        if self.late_min > self.late_max:
            problems.append("late_min: must not exceed late_max")
        if self.sign_type not in SIGN_TYPES:
            problems.append(f"sign_type: must be one of {', '.join(SIGN_TYPES)}")
        else:
            problems.extend(_signing_problems(self))
        if self.maintenance_style not in _MAINTENANCE_STYLES:
            problems.append(f"maintenance_style: must be one of {', '.join(_MAINTENANCE_STYLES)}")
        if not self.merchant_id:
            problems.append("merchant_id: must not be empty")
        windows: list[tuple[float, float]] = []
        if not isinstance(self.maintenance, list | tuple):
            problems.append("maintenance: must be a list of [start, end] pairs")
        else:
            for i, window in enumerate(self.maintenance):
                if (
                    not isinstance(window, list | tuple)
                    or len(window) != 2
                    or not all(
                        isinstance(v, int | float) and not isinstance(v, bool) for v in window
                    )
                    or not window[0] < window[1]
                ):
                    problems.append(f"maintenance[{i}]: must be [start, end] with start < end")
                else:
                    windows.append((float(window[0]), float(window[1])))
        if problems:
            raise ValueError("; ".join(problems))
        self.maintenance = windows


@dataclass(slots=True)
class _Fate:
    """Everything decided once per order; drawn in a fixed order so rates don't shift draws."""

    reject: str | None  # "E101" / "E102"
    timeout: bool
    timeout_recorded: bool
    fail: bool
    forget: bool
    delay: float  # schedule seconds from acceptance to the final status
    ship_after: float  # schedule seconds from acceptance to SHIPPED
    vendor_order_id: str
    tracking_no: str


@dataclass(slots=True)
class _Order:
    """What the vendor remembers about an order_no: its body, first answer and timeline."""

    business: tuple[Any, ...]
    answer: dict[str, Any]  # the first answer, unsigned; repeated for the same body
    answer_name: str
    fate: _Fate
    accepted_at: datetime | None  # None for a rejection


_REJECTIONS = {"E101": "out of stock", "E102": "bad address"}
_CONFLICT: dict[str, Any] = {"code": "E103", "message": "duplicate order_no with a different body"}
_UNKNOWN: dict[str, Any] = {"code": "E404", "message": "order not found"}
_GARBAGE = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


def _signer(cfg: SimulatorConfig) -> Signer:
    """The simulated vendor's signer: it signs with its key, verifies with the merchant's."""
    return _cached_signer(
        sign_type=cfg.sign_type,
        secret=cfg.secret,
        private_key=cfg.private_key or None,
        public_key=cfg.merchant_public_key or None,
        exclude=tuple(cfg.sign_exclude),
        keep_empty=cfg.sign_keep_empty,
        hex_case=cfg.sign_hex_case or None,
        sm2_user_id=cfg.sm2_user_id,
    )


@functools.lru_cache(maxsize=32)
def _cached_signer(
    *,
    sign_type: str,
    secret: str,
    private_key: str | None,
    public_key: str | None,
    exclude: tuple[str, ...],
    keep_empty: bool,
    hex_case: Any,
    sm2_user_id: str,
) -> Signer:
    return Signer(
        sign_type=sign_type,
        secret=secret,
        private_key=private_key,
        public_key=public_key,
        exclude=exclude,
        keep_empty=keep_empty,
        hex_case=hex_case,
        sm2_user_id=sm2_user_id,
    )


def _signing_problems(cfg: SimulatorConfig) -> list[str]:
    if not isinstance(cfg.sign_exclude, list) or not all(
        isinstance(name, str) and name for name in cfg.sign_exclude
    ):
        return ["sign_exclude: must be a list of field names"]
    if not isinstance(cfg.sign_keep_empty, bool):
        return ["sign_keep_empty: must be true or false"]
    if cfg.sign_hex_case not in ("", "lower", "upper"):
        return ["sign_hex_case: must be 'lower', 'upper' or '' (the scheme's default)"]
    try:
        _signer(cfg)
    except ValueError as exc:
        return [str(exc).replace("vendor_public_key:", "merchant_public_key:", 1)]
    return []


def _rolls(seed: int, order_no: str, kind: str, n: int) -> tuple[float, ...]:
    """Five independent uniforms in [0, 1) for one request; blake2b is cheaper than Random."""
    digest = hashlib.blake2b(f"{seed}:{order_no}:{kind}:{n}".encode(), digest_size=40).digest()
    return tuple(
        int.from_bytes(digest[i : i + 8], "big") / 18446744073709551616.0 for i in range(0, 40, 8)
    )


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: ``True`` is an int to Python but not a quantity to a vendor."""
    return type(value) is int


def _check(body: Any, *, place: bool) -> str | None:
    """The first field problem of a request body, as ``"field: problem"``, or None."""
    if not isinstance(body, dict):
        return "body: must be a JSON object"
    merchant_id = body.get("merchant_id")
    if not isinstance(merchant_id, str) or not merchant_id:
        return "merchant_id: must be a non-empty string"
    order_no = body.get("order_no")
    if not isinstance(order_no, str) or not order_no or len(order_no) > 64:
        return "order_no: must be a string of 1-64 characters"
    if place:
        sku = body.get("sku")
        if not isinstance(sku, str) or not sku:
            return "sku: must be a non-empty string"
        quantity = body.get("quantity")
        if not _is_int(quantity) or quantity < 1:
            return "quantity: must be an integer >= 1"
        recipient = body.get("recipient")
        if not isinstance(recipient, dict):
            return "recipient: must be an object with name, phone and address"
        for key in ("name", "phone", "address"):
            value = recipient.get(key)
            if not isinstance(value, str) or not value:
                return f"recipient.{key}: must be a non-empty string"
        points = body.get("points")
        if not _is_int(points) or points < 0:
            return "points: must be an integer >= 0"
    if not _is_int(body.get("timestamp")):
        return "timestamp: must be an integer (Unix seconds)"
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 32:
        return "nonce: must be a string of 16-32 characters"
    if not isinstance(body.get("sign"), str) or not body["sign"]:
        return "sign: must be a non-empty string"
    return None


class Simulator:
    """The simulated vendor: an aiohttp app plus the state it needs to answer consistently."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        dialect: Dialect | None = None,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        # The vendor's own protocol (sim_dialect.py); the reference protocol by default.
        self.dialect = dialect if dialect is not None else REFERENCE
        self.clock: Clock = clock if clock is not None else SystemClock()
        # Maintenance windows count from here; start() resets it to when serving begins.
        self.started_at = self.clock.now()
        self.place_requests: Counter[str] = Counter()
        self.query_requests: Counter[str] = Counter()
        self.by_answer: Counter[str] = Counter()
        self._orders: dict[str, _Order] = {}
        # order_nos whose place request already hung once: a retry is handled normally.
        self._timed_out: set[str] = set()
        self._hangs: set[asyncio.Future[None]] = set()
        self._jitter_rng = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = web.Application()
        d = self.dialect
        self.app.router.add_route(d.place_method, d.place_path, self._handle_place)
        self.app.router.add_route(d.query_method, d.query_path, self._handle_query)
        self.app.router.add_get("/_sim/stats", self._handle_stats)
        self.app.router.add_post("/_sim/config", self._handle_config)
        self.app.router.add_get("/_sim/healthz", self._handle_healthz)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = any free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self.started_at = self.clock.now()
        # Small shutdown_timeout: stop() must not wait for slow or hanging handlers.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.base_url = f"http://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Release hanging requests at once, then close the server; safe to call twice."""
        for fut in list(self._hangs):
            if not fut.done():
                fut.set_result(None)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- control ---------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change settings at runtime (rates, windows, latency...); all or nothing."""
        known = {f.name for f in fields(SimulatorConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        self.config = replace(self.config, **changes)

    def stats(self) -> dict[str, Any]:
        """Counters a benchmark or test checks: place requests per order above all."""
        counts = self.place_requests.values()
        return {
            "orders": len(self._orders),
            "accepted": sum(1 for o in self._orders.values() if o.accepted_at is not None),
            "place_requests": sum(counts),
            "max_place_requests": max(counts, default=0),
            "duplicates": sum(1 for c in counts if c > 1),
            "queries": sum(self.query_requests.values()),
            "by_answer": dict(self.by_answer),
        }

    # -- decisions -------------------------------------------------------------------------

    def _fate(self, order_no: str) -> _Fate:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{order_no}")
        r = [rng.random() for _ in range(9)]
        vendor_order_id = f"V{rng.randrange(10**8):08d}"
        tracking_no = f"SF{rng.randrange(10**10):010d}"
        if r[6] < cfg.late_rate:
            delay = cfg.late_min + r[8] * (cfg.late_max - cfg.late_min)
        else:
            delay = cfg.delivery_min + r[7] * (cfg.delivery_max - cfg.delivery_min)
        return _Fate(
            reject=("E101" if r[1] < 0.5 else "E102") if r[0] < cfg.reject_rate else None,
            timeout=r[2] < cfg.place_timeout_rate,
            timeout_recorded=r[3] < cfg.place_timeout_recorded,
            fail=r[4] < cfg.fail_rate,
            forget=r[5] < cfg.forget_rate,
            delay=delay,
            ship_after=delay * cfg.ship_fraction,
            vendor_order_id=vendor_order_id,
            tracking_no=tracking_no,
        )

    def _accept(self, order_no: str, business: tuple[Any, ...], fate: _Fate) -> _Order:
        order = _Order(
            business=business,
            answer={
                "code": "0000",
                "message": "ok",
                "data": {"vendor_order_id": fate.vendor_order_id, "status": "ACCEPTED"},
            },
            answer_name="accepted",
            fate=fate,
            accepted_at=self.clock.now(),
        )
        self._orders[order_no] = order
        return order

    def _status(self, order_no: str) -> tuple[dict[str, Any], str]:
        """The query answer for an order at schedule time now, and its counter name."""
        order = self._orders.get(order_no)
        if order is None or order.accepted_at is None or order.fate.forget:
            return _UNKNOWN, "unknown"
        fate, start = order.fate, order.accepted_at
        elapsed = (self.clock.now() - start).total_seconds()
        data: dict[str, Any] = {"order_no": order_no, "vendor_order_id": fate.vendor_order_id}
        if elapsed < fate.ship_after:
            data["status"], data["description"] = "PROCESSING", "备货中"
            name = "processing"
        else:
            shipped = start + timedelta(seconds=fate.ship_after)
            events = [{"at": _rfc3339(shipped), "text": "已揽收"}]
            middle = (fate.ship_after + fate.delay) / 2
            if elapsed >= middle:
                at = start + timedelta(seconds=middle)
                events.append({"at": _rfc3339(at), "text": "到达转运中心"})
            if elapsed < fate.delay:
                data["status"], data["description"] = "SHIPPED", "运输中"
                name = "shipped"
            else:
                at = start + timedelta(seconds=fate.delay)
                if fate.fail:
                    data["status"], data["description"] = "FAILED", "收件人拒收"
                    events.append({"at": _rfc3339(at), "text": "收件人拒收，退回中"})
                    name = "failed"
                else:
                    data["status"], data["description"] = "DELIVERED", "已签收"
                    events.append({"at": _rfc3339(at), "text": "已签收"})
                    name = "delivered"
            data["logistics"] = {
                "carrier": "SF",
                "tracking_no": fate.tracking_no,
                "events": events,
            }
        return {"code": "0000", "message": "ok", "data": data}, name

    # -- responses -------------------------------------------------------------------------

    def _signed(self, payload: dict[str, Any], *, bad_sign: bool = False) -> web.Response:
        cfg = self.config
        body = self.dialect.to_vendor(payload)
        signer = _signer(cfg)
        # bad_sign: a well-formed signature of other fields, so it is wrong for these
        signature = signer.sign({**body, "\x00not-signed": "x"} if bad_sign else body)
        headers: dict[str, str] = {}
        if self.dialect.sign_location == "header":
            headers[self.dialect.sign_header] = signature
        else:
            body[self.dialect.sign_field] = signature
        return web.Response(
            body=json.dumps(body, ensure_ascii=False).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    async def _latency(self, roll: float) -> None:
        cfg = self.config
        delay = cfg.latency + roll * cfg.latency_jitter
        if delay > 0:
            await asyncio.sleep(delay)

    async def _hang(self) -> web.Response:
        """Hold the request ``hang`` real seconds (or until stop()), then answer 504."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(self.config.hang, _resolve, fut)
        self._hangs.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._hangs.discard(fut)
        return web.Response(status=504, text="gateway timeout")

    async def _maintenance(self) -> web.Response | None:
        """The maintenance answer if schedule time is inside a window; checked before all."""
        cfg = self.config
        if not cfg.maintenance:
            return None
        offset = (self.clock.now() - self.started_at).total_seconds()
        for start, end in cfg.maintenance:
            if start <= offset < end:
                break
        else:
            return None
        headers = {"Retry-After": str(max(1, math.ceil(end - offset)))}
        self.by_answer["maintenance"] += 1
        await self._latency(self._jitter_rng.random())
        if cfg.maintenance_style == "code":
            response = self._signed({"code": "E503", "message": "under maintenance"})
            response.headers.update(headers)
            return response
        return web.Response(status=503, text="service under maintenance", headers=headers)

    async def _read(self, request: web.Request, *, place: bool) -> dict[str, Any] | web.Response:
        """The validated body, or the signed E400/E401 answer (not counted as a request)."""
        raw = await request.read()
        dialect = self.dialect
        if dialect.is_reference:
            fields: Any = None
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                problem: str | None = "body: not valid JSON"
            else:
                problem = _check(body, place=place)
        else:
            decoded = dialect.decode(raw, request.query, request.method)
            problem = decoded if isinstance(decoded, str) else None
            if isinstance(decoded, dict):
                fields = dialect.signed_fields(decoded, request.headers)
                translated = dialect.to_reference(decoded)
                problem = translated if isinstance(translated, str) else None
                if isinstance(translated, dict):
                    body = translated
                    problem = _check(body, place=place)
                    problem = dialect.problem(problem) if problem else None
        cfg = self.config
        if problem is None and body["merchant_id"] != cfg.merchant_id:
            problem = f"merchant_id: unknown merchant {body['merchant_id']!r}"
        if problem is not None:
            self.by_answer["bad_request"] += 1
            await self._latency(self._jitter_rng.random())
            return self._signed({"code": "E400", "message": problem})
        if not _signer(cfg).verify_fields(body if fields is None else fields):
            self.by_answer["unauthorized"] += 1
            await self._latency(self._jitter_rng.random())
            return self._signed({"code": "E401", "message": "invalid sign"})
        result: dict[str, Any] = body
        return result

    async def _answer(
        self, payload: dict[str, Any], name: str, rolls: tuple[float, ...], *, query: bool
    ) -> web.Response:
        """Apply the per-request noise in its documented order, then latency."""
        cfg = self.config
        error_roll, garbage_roll, timeout_roll, sign_roll, jitter_roll = rolls
        response: web.Response
        if error_roll < cfg.error_rate:
            self.by_answer["error"] += 1
            response = web.Response(status=500, text="internal server error")
        elif garbage_roll < cfg.garbage_rate:
            self.by_answer["garbage"] += 1
            response = web.Response(body=_GARBAGE, content_type="text/html", charset="utf-8")
        elif query and timeout_roll < cfg.query_timeout_rate:
            self.by_answer["timeout"] += 1
            return await self._hang()
        elif sign_roll < cfg.bad_sign_rate:
            self.by_answer["bad_sign"] += 1
            response = self._signed(payload, bad_sign=True)
        else:
            self.by_answer[name] += 1
            response = self._signed(payload)
        await self._latency(jitter_roll)
        return response

    # -- handlers --------------------------------------------------------------------------

    async def _handle_place(self, request: web.Request) -> web.Response:
        maintenance = await self._maintenance()
        if maintenance is not None:
            return maintenance
        body = await self._read(request, place=True)
        if isinstance(body, web.Response):
            return body
        order_no: str = body["order_no"]
        n = self.place_requests[order_no]
        self.place_requests[order_no] = n + 1
        rolls = _rolls(self.config.seed, order_no, "place", n)
        business = (
            body["merchant_id"],
            body["sku"],
            body["quantity"],
            body["points"],
            body["recipient"],
        )
        order = self._orders.get(order_no)
        if order is not None:
            if order.business != business:
                return await self._answer(_CONFLICT, "conflict", rolls, query=False)
            return await self._answer(order.answer, order.answer_name, rolls, query=False)
        fate = self._fate(order_no)
        if fate.reject is not None:
            order = _Order(
                business=business,
                answer={"code": fate.reject, "message": _REJECTIONS[fate.reject]},
                answer_name="rejected",
                fate=fate,
                accepted_at=None,
            )
            self._orders[order_no] = order
            return await self._answer(order.answer, order.answer_name, rolls, query=False)
        if fate.timeout and order_no not in self._timed_out:
            # The answer is lost either way; whether the vendor kept the order is the question.
            self._timed_out.add(order_no)
            if fate.timeout_recorded:
                self._accept(order_no, business, fate)
            self.by_answer["timeout"] += 1
            return await self._hang()
        order = self._accept(order_no, business, fate)
        return await self._answer(order.answer, order.answer_name, rolls, query=False)

    async def _handle_query(self, request: web.Request) -> web.Response:
        maintenance = await self._maintenance()
        if maintenance is not None:
            return maintenance
        body = await self._read(request, place=False)
        if isinstance(body, web.Response):
            return body
        order_no: str = body["order_no"]
        n = self.query_requests[order_no]
        self.query_requests[order_no] = n + 1
        rolls = _rolls(self.config.seed, order_no, "query", n)
        payload, name = self._status(order_no)
        return await self._answer(payload, name, rolls, query=True)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_config(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body: not valid JSON"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "body: must be a JSON object"}, status=400)
        try:
            self.configure(**changes)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.config))

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def serve(
    config: SimulatorConfig | None = None,
    clock: Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[str], None] | None = None,
    dialect: Dialect | None = None,
) -> None:
    """Run a simulator until cancelled (``orderwatch simulator``); ``ready`` gets its URL."""
    simulator = Simulator(config, clock=clock, dialect=dialect)
    url = await simulator.start(host, port)
    try:
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
