"""The ``orderwatch`` command.

Exit status: 0 done; 1 refused, not found or bad data; 2 usage or configuration error.
Every command reads ``--config`` (or ``ORDERWATCH_CONFIG``, or ``./orderwatch.toml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import ConfigError, Conflict, OrderNotFound, OrderwatchError, ValidationFailed
from .log import configure as configure_logging
from .process import tune_gc
from .settings import Loaded, effective_lines, format_duration, load_settings
from .statuses import Reason, Status
from .store.base import OrderFilter
from .views import event_view, order_view, rfc3339

T = TypeVar("T")

app = typer.Typer(
    name="orderwatch",
    help="Place redemption orders with vendors exactly once, poll them until they end, "
    "record why, and tell the customer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
orders_app = typer.Typer(help="Look at and bring in orders.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
vendors_app = typer.Typer(
    help="Configured vendors: dry runs for integrators.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(orders_app, name="orders")
app.add_typer(config_app, name="config")
app.add_typer(vendors_app, name="vendors")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="ORDERWATCH_CONFIG",
        help="orderwatch.toml to read (default: ./orderwatch.toml if present).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


Exit = typer.Exit


def _config_error(exc: ConfigError, where: str = "") -> Exit:
    """Print every problem of ``exc`` (``where``: which source) and give exit status 2."""
    heading = (
        f"[red]configuration error[/red] ({where}):" if where else "[red]configuration error:[/red]"
    )
    err.print(heading)
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, highlight=False)
    return Exit(2)


def _load(config: Path | None, *, remote: bool = True) -> Loaded:
    """defaults < file < env, then (``remote``) the config center's data id on top."""
    try:
        loaded = load_settings(config)
    except ConfigError as exc:
        raise _config_error(exc, str(config or "defaults + environment")) from None
    log = loaded.settings.log
    configure_logging(log.level, log.format)
    if remote and loaded.settings.config_center is not None:
        from .config_center import load_initial

        try:
            loaded = asyncio.run(load_initial(loaded))
        except ConfigError as exc:
            raise _config_error(exc, "config center") from None
        log = loaded.settings.log
        configure_logging(log.level, log.format)
    return loaded


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ValidationFailed as exc:
        err.print("[red]invalid input[/red]; nothing was written:")
        for e in exc.errors:
            err.print(f"  {e}", markup=False, highlight=False)
        raise Exit(1) from None
    except OrderNotFound as exc:
        err.print(f"[red]not found:[/red] {exc}", highlight=False)
        raise Exit(1) from None
    except Conflict as exc:
        err.print(f"[red]refused:[/red] {exc}", highlight=False)
        raise Exit(1) from None
    except ConfigError as exc:
        raise _config_error(exc) from None
    except OrderwatchError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise Exit(2) from None


async def _with_service(loaded: Loaded, fn: Callable[[Any], Awaitable[T]]) -> T:
    from .service import Service

    service = await Service.open(loaded)
    try:
        return await fn(service)
    finally:
        await service.close()


def _dump(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(f"orderwatch {__version__}")
        raise typer.Exit(0)


# ---------------------------------------------------------------------------- demo


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=200_000, help="Orders to redeem.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for the orders and the simulated vendors.")] = 1,
    speed: Annotated[
        float | None,
        typer.Option(min=1, help="Schedule seconds per real second (default: ~40 s run)."),
    ] = None,
    days: Annotated[
        float, typer.Option(min=0.5, max=30, help="Logistics horizon of the vendors, in days.")
    ] = 5.0,
    json_out: JsonOpt = False,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the demo database in this folder.")
    ] = None,
) -> None:
    """Run a campaign on the embedded database against simulated vendors, then summarise."""
    from .demo import run_demo

    configure_logging("warning")
    tune_gc()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if (keep / "orderwatch.db").exists():
            err.print(f"[red]refused:[/red] {keep / 'orderwatch.db'} exists; pick another folder")
            raise Exit(1)

    if json_out:
        result = asyncio.run(
            run_demo(orders=orders, seed=seed, speed=speed, days=days, workdir=keep)
        )
        _dump(result.as_dict())
        return

    live = Live(
        _progress_table(
            {"simulated_days": 0, "by_status": {}, "vendor_calls": 0, "orders": orders}
        ),
        console=out,
        refresh_per_second=8,
    )
    with live:
        result = asyncio.run(
            run_demo(
                orders=orders,
                seed=seed,
                speed=speed,
                days=days,
                workdir=keep,
                on_progress=lambda p: live.update(_progress_table(p)),
            )
        )
    _print_summary(result)


def _progress_table(p: dict[str, Any]) -> Table:
    t = Table(
        title=f"orderwatch demo — simulated day {p['simulated_days']:.2f}",
        show_header=True,
        header_style="bold",
    )
    for s in Status:
        t.add_column(f"{s.value}\n{s.label}", justify="right")
    t.add_column("vendor calls", justify="right")
    t.add_row(*(str(p["by_status"].get(s.value, 0)) for s in Status), str(p["vendor_calls"]))
    return t


def _print_summary(r: Any) -> None:
    t = Table(
        title=f"{r.orders} orders, {r.simulated_days} simulated days in "
        f"{r.real_seconds} s (speed ×{r.speed:,.0f})"
    )
    t.add_column("status")
    t.add_column("reason")
    t.add_column("orders", justify="right")
    for status, n in r.by_status.items():
        if status == "FAILED":
            for reason, m in r.by_reason.items():
                t.add_row(
                    f"FAILED {Status.FAILED.label}", f"{reason} — {Reason(reason).text}", str(m)
                )
        else:
            t.add_row(f"{status} {Status(status).label}", "", str(n))
    out.print(t)
    facts = Table(show_header=False, box=None)
    facts.add_row("polls per finished order", f"mean {r.polls_mean}, max {r.polls_max}")
    facts.add_row("vendor calls", f"{r.vendor_calls} ({r.calls_per_second}/s)")
    facts.add_row(
        "place-order requests",
        f"{r.place_requests}; most for one order: [bold]{r.max_place_requests}[/bold]",
    )
    facts.add_row(
        "poll lateness p50 / p99",
        f"{r.lateness_p50_real_ms} ms / {r.lateness_p99_real_ms} ms real "
        f"({r.lateness_p50_s} s / {r.lateness_p99_s} s of schedule)",
    )
    facts.add_row("notifications delivered", str(r.notifications))
    facts.add_row("orders still open", str(r.active))
    out.print(facts)


# ---------------------------------------------------------------------------- running


@app.command()
def worker(
    config: ConfigOpt = None,
    burst: Annotated[bool, typer.Option(help="Return when nothing is due.")] = False,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Compressed clock for tests and demos: schedule seconds per real second."
        ),
    ] = None,
    clock_start: Annotated[
        float | None,
        typer.Option(
            help="Unix time at which the compressed clock equals real time (share it with the "
            "simulator)."
        ),
    ] = None,
) -> None:
    """Claim due orders, place and poll them; stops cleanly on SIGTERM or Ctrl-C."""
    loaded = _load(config)
    _run(_serve(loaded, burst=burst, speed=speed, clock_start=clock_start, deliver=False))


ListenOpt = Annotated[
    str | None, typer.Option(help="HOST:PORT for the HTTP API (default: api.listen).")
]


@app.command()
def serve(
    config: ConfigOpt = None,
    speed: Annotated[float | None, typer.Option(help="Compressed clock (tests).")] = None,
    clock_start: Annotated[float | None, typer.Option(help="Compressed clock origin.")] = None,
    listen: ListenOpt = None,
) -> None:
    """Run the workers, the notification deliverer and the HTTP API in one process."""
    loaded = _load(config)
    _run(
        _serve(
            loaded,
            burst=False,
            speed=speed,
            clock_start=clock_start,
            deliver=True,
            api=True,
            listen=listen,
        )
    )


@app.command()
def api(config: ConfigOpt = None, listen: ListenOpt = None) -> None:
    """Serve the HTTP API (/api/v1, docs at /api/v1/docs); stops cleanly on SIGTERM."""
    loaded = _load(config)
    _run(_serve_api(loaded, listen))


async def _serve_api(loaded: Loaded, listen: str | None) -> None:
    from .api.server import make_server
    from .config_center import watch_config
    from .service import Service

    service = await Service.open(loaded)
    try:
        server = make_server(service, listen=listen)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        async with watch_config(service.settings, loaded):
            await server.run_bound()
    finally:
        await service.close()


def _clock(speed: float | None, clock_start: float | None) -> Any:
    from .clock import CompressedClock, SystemClock

    if speed is None or (speed == 1.0 and clock_start is None):
        return SystemClock()
    return CompressedClock(speed=speed, start=clock_start)


async def _serve(
    loaded: Loaded,
    *,
    burst: bool,
    speed: float | None,
    clock_start: float | None,
    deliver: bool,
    api: bool = False,
    listen: str | None = None,
) -> None:
    from .config_center import watch_config
    from .log import get_logger
    from .service import Service

    log = get_logger("orderwatch.cli")
    service = await Service.open(loaded, clock=_clock(speed, clock_start))
    tune_gc()  # after start-up, so that what it made is frozen
    try:
        w = service.worker()
        d = service.deliverer() if deliver else None
        server = None
        if api:
            from .api.server import make_server

            server = make_server(service, listen=listen, wake=w.wake)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            w.stop()
            if d is not None:
                d.stop()
            if server is not None:
                server.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        log.info(
            "worker_started",
            worker_id=w.worker_id,
            burst=burst,
            vendors=",".join(service.settings.current.vendors) or "(none)",
        )
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(w.run(burst=burst))]
        if d is not None:
            tasks.append(asyncio.create_task(d.run()))
        if server is not None:
            tasks.append(asyncio.create_task(server.run_bound()))
        async with watch_config(service.settings, loaded):
            await asyncio.gather(*tasks)
        s = w.stats
        log.info(
            "worker_stopped",
            claimed=s.claimed,
            places=s.places,
            queries=s.queries,
            finished=s.finished,
            discarded=s.discarded,
        )
    finally:
        await service.close()


@app.command()
def notify(
    config: ConfigOpt = None,
    burst: Annotated[bool, typer.Option(help="Return when the outbox is empty.")] = False,
) -> None:
    """Deliver pending customer notifications from the outbox."""
    loaded = _load(config)

    async def go(service: Any) -> None:
        d = service.deliverer()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, d.stop)
        await d.run(burst=burst)

    _run(_with_service(loaded, go))


@app.command()
def simulator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8700,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same answers.")] = 1,
    merchant_id: Annotated[str, typer.Option(help="Merchant id the vendor expects.")] = "M0001",
    secret: Annotated[
        str,
        typer.Option(envvar="ORDERWATCH_SIM_SECRET", help="Signing secret shared with orderwatch."),
    ] = "demo-secret",
    sign_type: Annotated[
        str,
        typer.Option(
            help="HMAC-SHA256, MD5, WECHAT-HMAC-SHA256, SM3, RSA2 or SM2 (RSA2/SM2: "
            "--set private_key=FILE --set merchant_public_key=FILE)."
        ),
    ] = "HMAC-SHA256",
    speed: Annotated[float | None, typer.Option(help="Compressed clock speed.")] = None,
    clock_start: Annotated[float | None, typer.Option(help="Compressed clock origin.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Behaviour as NAME=VALUE, e.g. --set reject_rate=0.05 "
            "--set delivery_max=86400 (see SimulatorConfig).",
        ),
    ] = None,
    dialect: Annotated[
        Path | None,
        typer.Option(
            help="Speak a vendor's own protocol from this TOML file instead of the reference "
            "one (e.g. examples/vendors/giftco.sim.toml).",
        ),
    ] = None,
) -> None:
    """Run the reference vendor simulator (DESIGN §5) on its own."""
    from .sim_dialect import load_dialect
    from .simulator import SimulatorConfig
    from .simulator import serve as sim_serve

    try:
        spoken = load_dialect(dialect) if dialect is not None else None
    except ValueError as exc:
        err.print(f"[red]--dialect:[/red] {exc}", highlight=False)
        raise Exit(2) from None

    values: dict[str, Any] = {
        "seed": seed,
        "merchant_id": merchant_id,
        "secret": secret,
        "sign_type": sign_type,
    }
    for item in set_ or []:
        name, sep, raw = item.partition("=")
        if not sep:
            err.print(f"[red]--set {item!r}:[/red] expected NAME=VALUE")
            raise Exit(2)
        try:
            values[name.strip()] = json.loads(raw)
        except ValueError:
            values[name.strip()] = raw
    try:
        cfg = SimulatorConfig(**values)
    except (TypeError, ValueError) as exc:
        err.print(f"[red]simulator configuration error:[/red] {exc}", highlight=False)
        raise Exit(2) from None
    configure_logging("info")

    def ready(url: str) -> None:
        sys.stdout.write(f"simulator listening on {url}\n")
        sys.stdout.flush()

    async def go() -> None:
        task = asyncio.create_task(
            sim_serve(cfg, _clock(speed, clock_start), host, port, ready=ready, dialect=spoken)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())


# ---------------------------------------------------------------------------- schedule


@app.command()
def schedule(
    config: ConfigOpt = None,
    vendor: Annotated[str | None, typer.Option(help="Use this vendor's polling overrides.")] = None,
) -> None:
    """Print the polling schedule (query n, delay, elapsed since placing) of the config."""
    from .backoff import schedule_table

    loaded = _load(config)
    if vendor is not None and vendor not in loaded.settings.vendors:
        err.print(
            f"[red]unknown vendor {vendor!r}[/red]; configured: "
            f"{', '.join(loaded.settings.vendors) or '(none)'}"
        )
        raise Exit(1)
    p = loaded.settings.policy(vendor)
    rows = schedule_table(
        initial_delay=p.initial_delay,
        initial_interval=p.initial_interval,
        factor=p.factor,
        max_interval=p.max_interval,
        jitter=p.jitter,
        max_polls=p.max_polls,
    )
    t = Table(
        title=f"polling schedule{f' for {vendor}' if vendor else ''}: "
        f"max_polls {p.max_polls}, deadline {format_duration(p.deadline)}"
    )
    for col in ("query", "delay", "jitter range", "elapsed since placing"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r.query), _human(r.delay), f"{_human(r.low)} – {_human(r.high)}", _human(r.elapsed)
        )
    out.print(t)
    last = rows[-1].elapsed if rows else 0.0
    covered = min(last, p.deadline)  # the deadline counts from creation, so this is generous
    if covered < 3 * 86400:
        err.print(
            f"[yellow]warning:[/yellow] polling covers {_human(covered)} after placing: less "
            "than the 3 days logistics usually need"
        )
    if last > p.deadline:
        err.print(
            f"[yellow]warning:[/yellow] deadline {format_duration(p.deadline)} ends "
            f"polling before the schedule's last query at {_human(last)}; queries past it "
            "are never sent"
        )
    else:
        err.print(
            f"max_polls ends polling {_human(last)} after placing, within the deadline of "
            f"{format_duration(p.deadline)} (which stays a backstop)"
        )


def _human(seconds: float) -> str:
    seconds = round(seconds)
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s else ""]
    return "".join(parts) or "0s"


# ---------------------------------------------------------------------------- db / config


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the schema to the current version."""
    from .store.sql import SqlStore

    loaded = _load(config)

    async def go() -> None:
        store = SqlStore(loaded.settings.database.url)
        try:
            await store.upgrade()
        finally:
            await store.close()

    _run(go())
    out.print("database schema is current")


@db_app.command("prune")
def db_prune(
    older_than: Annotated[
        str, typer.Option(help="Prune final orders unchanged for this long, e.g. 90d.")
    ],
    config: ConfigOpt = None,
) -> None:
    """Delete old final orders with their timelines, keeping a tombstone of each order_no."""
    from .clock import SystemClock
    from .settings import parse_duration
    from .store.sql import SqlStore

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        err.print(f"[red]--older-than:[/red] {exc}")
        raise Exit(2) from None
    loaded = _load(config)

    async def go() -> int:
        store = SqlStore(loaded.settings.database.url)
        try:
            await store.ensure_schema(auto_upgrade=store.dialect == "sqlite")
            now = SystemClock().now()
            total = 0
            while n := await store.prune(finished_before=now - age, now=now):
                total += n
            return total
        finally:
            await store.close()

    pruned = _run(go())
    out.print(f"pruned {pruned} final orders older than {older_than}; their order_no stay taken")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print every key in force as `dotted.key = value  (source)`, secrets masked."""
    loaded = _load(config)
    for key, value, source in effective_lines(loaded):
        sys.stdout.write(f"{key} = {value}  ({source})\n")


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="orderwatch.toml to check.")]) -> None:
    """Validate a config file without starting anything (the config center is not read)."""
    loaded = _load(file, remote=False)
    from .notify import build_channel

    try:  # the notification channel as `serve` builds it (URL scheme, secret), not started
        build_channel(loaded.settings.notify)
    except ConfigError as exc:
        raise _config_error(exc, str(file)) from None
    out.print(f"{file}: ok")


# ---------------------------------------------------------------------------- orders


@orders_app.command("import")
def orders_import(
    file: Annotated[Path, typer.Argument(help="JSON lines, a JSON array, or CSV (UTF-8/GB18030).")],
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import orders: every record is checked first; one bad record imports nothing."""
    loaded = _load(config)
    if not file.is_file():
        err.print(f"[red]no such file:[/red] {file}")
        raise Exit(1)

    async def go(service: Any) -> Any:
        return await service.import_file(file, actor="cli-import")

    result = _run(_with_service(loaded, go))
    if json_out:
        _dump(
            {
                "created": len(result.created),
                "existing": len(result.existing),
                "order_nos": [o.order_no for o in result.created],
            }
        )
    else:
        out.print(
            f"imported {len(result.created)} orders"
            + (
                f"; {len(result.existing)} were already there with the same body"
                if result.existing
                else ""
            )
        )


@orders_app.command("list")
def orders_list(
    config: ConfigOpt = None,
    status: Annotated[
        str | None, typer.Option(help="PENDING, SENT, ORDERED, SUCCEEDED, FAILED")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="A failure reason code.")] = None,
    vendor: Annotated[str | None, typer.Option()] = None,
    customer_id: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    json_out: JsonOpt = False,
) -> None:
    """List orders, newest first."""
    if status is not None and status not in Status.__members__:
        err.print(f"[red]--status {status!r}[/red]: expected one of {', '.join(Status)}")
        raise Exit(2)
    if reason is not None and reason not in Reason.__members__:
        err.print(f"[red]--reason {reason!r}[/red]: expected one of {', '.join(Reason)}")
        raise Exit(2)
    loaded = _load(config)
    flt = OrderFilter(status=status, reason=reason, vendor=vendor, customer_id=customer_id)

    async def go(service: Any) -> Any:
        found: list[Any] = []
        cursor = None
        while len(found) < limit:
            page = await service.list(flt, limit=min(500, limit - len(found)), before_id=cursor)
            if not page:
                break
            found.extend(page)
            cursor = page[-1].id
        return found

    found = _run(_with_service(loaded, go))
    if json_out:
        _dump([order_view(o) for o in found])
        return
    t = Table(title=f"{len(found)} orders")
    for col in ("order_no", "vendor", "status", "reason", "queries", "next run", "description"):
        t.add_column(col)
    for o in found:
        t.add_row(
            o.order_no,
            o.vendor,
            f"{o.status.value} {o.status.label}",
            o.reason.value if o.reason else "",
            str(o.queries),
            rfc3339(o.next_run_at) if o.next_run_at else "",
            (o.description or "")[:60],
        )
    out.print(t)


@orders_app.command("show")
def orders_show(
    order_no: Annotated[str, typer.Argument(help="The order's order_no.")],
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one order with its timeline (exit status 1 if there is no such order)."""
    loaded = _load(config)

    async def go(service: Any) -> Any:
        return await service.get(order_no)

    detail = _run(_with_service(loaded, go))
    view = order_view(detail.order, events=detail.events)
    view["notifications"] = [
        {
            "id": n.id,
            "type": n.event_type,
            "state": n.state,
            "attempts": n.attempts,
            "next_attempt_at": rfc3339(n.next_attempt_at) if n.next_attempt_at else None,
            "last_error": n.last_error,
        }
        for n in detail.notifications
    ]
    if json_out:
        _dump(view)
        return
    o = detail.order
    head = Table(show_header=False, box=None)
    head.add_row("order_no", o.order_no)
    head.add_row("status", f"{o.status.value} {o.status.label}")
    if o.reason:
        head.add_row("reason", f"{o.reason.value} — {o.reason.text}")
    head.add_row("description", o.description or "")
    head.add_row("vendor", f"{o.vendor} (order id {o.vendor_order_id or '-'})")
    head.add_row(
        "counters",
        f"queries {o.queries}, abnormal {o.abnormal}, "
        f"takeovers {o.takeovers}, place requests {o.placements}",
    )
    head.add_row("next run", rfc3339(o.next_run_at) if o.next_run_at else "-")
    if o.logistics:
        head.add_row("logistics", json.dumps(o.logistics, ensure_ascii=False)[:200])
    out.print(head)
    t = Table(title="timeline")
    for col in ("at", "kind", "from → to", "outcome", "attempt", "http", "code", "ms"):
        t.add_column(col)
    for ev in detail.events:
        e = event_view(ev)
        t.add_row(
            e["at"],
            e["kind"],
            f"{e.get('from', '')} → {e.get('to', '')}",
            str(e.get("outcome", "")),
            str(e.get("attempt", "")),
            str(e.get("http_status", "")),
            str(e.get("vendor_code", "")),
            str(e.get("latency_ms", "")),
        )
    out.print(t)


def main() -> None:
    app()


# ---------------------------------------------------------------------------- operator actions

NoteOpt = Annotated[str | None, typer.Option(help="Why: recorded on the order's event.")]
ActorOpt = Annotated[str, typer.Option(help="Who: recorded on the order's event.")]


def _action(loaded: Loaded, json_out: bool, call: Callable[[Any], Awaitable[Any]]) -> None:
    result = _run(_with_service(loaded, lambda service: call(service.actions)))
    view = order_view(result.order)
    if result.retry_mode is not None:
        view["retry_mode"] = result.retry_mode
    if json_out:
        _dump(view)
        return
    o = result.order
    out.print(
        f"{o.order_no}: {o.status.value} {o.status.label}"
        + (f" ({o.reason.value})" if o.reason else "")
        + (f"; retry mode {result.retry_mode}" if result.retry_mode else "")
    )


@orders_app.command("retry")
def orders_retry(
    order_no: Annotated[str, typer.Argument()],
    config: ConfigOpt = None,
    note: NoteOpt = None,
    actor: ActorOpt = "cli",
    json_out: JsonOpt = False,
) -> None:
    """Reopen a FAILED order: placed again (same order_no) or polled again, by its reason."""
    _action(_load(config), json_out, lambda a: a.retry(order_no, actor=actor, note=note))


@orders_app.command("resolve")
def orders_resolve(
    order_no: Annotated[str, typer.Argument()],
    status: Annotated[str, typer.Option(help="SUCCEEDED or FAILED.")],
    note: Annotated[str, typer.Option(help="Why: required, recorded on the event.")],
    config: ConfigOpt = None,
    actor: ActorOpt = "cli",
    json_out: JsonOpt = False,
) -> None:
    """Close a non-final order by hand as SUCCEEDED or FAILED (RESOLVED_BY_OPERATOR)."""
    if status not in ("SUCCEEDED", "FAILED"):
        err.print(f"[red]--status {status!r}[/red]: expected SUCCEEDED or FAILED")
        raise Exit(2)
    _action(
        _load(config),
        json_out,
        lambda a: a.resolve(order_no, status=status, note=note, actor=actor),
    )


@orders_app.command("cancel")
def orders_cancel(
    order_no: Annotated[str, typer.Argument()],
    config: ConfigOpt = None,
    note: NoteOpt = None,
    actor: ActorOpt = "cli",
    json_out: JsonOpt = False,
) -> None:
    """Cancel a PENDING order before it is placed."""
    _action(_load(config), json_out, lambda a: a.cancel(order_no, actor=actor, note=note))


@orders_app.command("redeliver-failed")
def orders_redeliver_failed(
    config: ConfigOpt = None,
    status: Annotated[str | None, typer.Option(help="Only orders in this status.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only orders with this reason.")] = None,
    vendor: Annotated[str | None, typer.Option(help="Only this vendor's orders.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Count, change nothing.")] = False,
) -> None:
    """Queue every failed customer notification of the matching orders for delivery again."""
    loaded = _load(config)
    flt = OrderFilter(status=status, reason=reason, vendor=vendor)

    async def go(service: Any) -> Any:
        return await service.redeliver_failed(flt, dry_run=dry_run)

    matched, changed = _run(_with_service(loaded, go))
    _dump({"matched": matched, "changed": changed, "dry_run": dry_run})


# ---------------------------------------------------------------------------- vendors


@vendors_app.command("check")
def vendors_check(
    name: Annotated[str, typer.Argument(help="Vendor name as in [vendors.NAME].")],
    config: ConfigOpt = None,
    order_no: Annotated[
        str | None,
        typer.Option("--order-no", help="order_no to ask about (default: OW-CHECK-<random>)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one signed query for a made-up order and show what came back and how it mapped.

    Exit 0 if the vendor's answer was understood (for a made-up order, "unknown order" is
    the expected answer), 1 if it was not (abnormal: unsigned, unmapped, HTTP error...).
    """
    from .vendors.check import check_vendor

    loaded = _load(config)
    vendor = loaded.settings.vendors.get(name)
    if vendor is None:
        known = ", ".join(sorted(loaded.settings.vendors)) or "none"
        err.print(f"[red]vendors.{name}:[/red] not configured (configured: {known})")
        raise Exit(2)
    report = _run(check_vendor(name, vendor, order_no=order_no))
    if json_out:
        _dump(report)
    else:
        t = Table(title=f"vendors check {name}", show_header=False)
        t.add_column("what", style="bold")
        t.add_column("value", overflow="fold")
        for key, value in report.items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            t.add_row(key, Text(shown))  # Text: a vendor's body is not rich markup
        out.print(t)
    raise Exit(0 if report["understood"] else 1)
