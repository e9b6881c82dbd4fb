"""The store on a relational database, through SQLAlchemy Core.

Each call runs as one transaction on a dedicated database thread, so the event loop never
blocks on the database and a batch of a hundred results costs one hop and one commit —
except the worker's hot calls on a SQLite file (claim, write-back, next due time), which run
on the calling thread: a batch is a few milliseconds of CPU inside SQLite, and running it on
a second thread costs more than it saves, in handing the GIL back and forth (measured in
``bench/pipeline.py``: 30 % more CPU per vendor call). Such a transaction never waits on
the event loop's thread for another connection's lock: if the database is locked it goes to
the database thread, which waits there (see :meth:`SqlStore._run`).
SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` for writes, so a claim's read and its
lease update cannot interleave with another process's. Claims and fenced write-backs are
written once for every dialect: read the rows (``FOR UPDATE SKIP LOCKED`` where the
database has it), then update them in one ``executemany``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.engine import make_url

from .. import jsontext
from ..errors import Conflict, OrderNotFound, SchemaNotCurrent
from ..lifecycle import Event, Transition
from ..order import NewOrder, Order, Recipient, evolve
from ..statuses import Reason, Status
from .base import (
    CIRCUIT_BREAKER,
    Counts,
    InsertResult,
    OrderFilter,
    OutboxItem,
    OutboxResult,
    OutboxRow,
    Write,
)
from .hot import (
    WRITE_COLUMNS,
    HotPath,
    event_fields,
    json_ids,
    order_fields,
    outbox_fields,
)
from .schema import order_events, order_tombstones, orders, outbox, vendor_pauses

T = TypeVar("T")

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def engine_url(url: str) -> sa.URL:
    """``sqlite:///x.db`` → the driver orderwatch uses for that database."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None and parsed.get_backend_name() == "mariadb":
        driver = "mysql+pymysql"  # mariadb+DRIVER: the hot SQL speaks the mysql dialect
    return parsed.set(drivername=driver) if driver else parsed


def request_hash(order: NewOrder) -> str:
    body = json.dumps(order.body(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


_TAKEOVER = {"note": "the previous lease expired before its write-back"}
_TAKEOVER_DETAIL = json.dumps(_TAKEOVER, separators=(",", ":"))


def new_token() -> str:
    return os.urandom(8).hex()


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def row_to_order(row: Mapping[Any, Any]) -> Order:
    rec = json.loads(row["recipient"])
    return Order(
        id=row["id"],
        order_no=row["order_no"],
        vendor=row["vendor"],
        sku=row["sku"],
        quantity=row["quantity"],
        points=row["points"],
        recipient=Recipient(rec["name"], rec["phone"], rec["address"]),
        payment_status=row["payment_status"],
        customer_id=row["customer_id"],
        status=Status(row["status"]),
        reason=Reason(row["reason"]) if row["reason"] else None,
        description=row["description"],
        vendor_order_id=row["vendor_order_id"],
        vendor_status=row["vendor_status"],
        logistics=_loads(row["logistics"]),
        queries=row["queries"],
        abnormal=row["abnormal"],
        takeovers=row["takeovers"],
        placements=row["placements"],
        unknown_streak=row["unknown_streak"],
        next_run_at=row["next_run_at"],
        started_at=row["started_at"],
        placed_at=row["placed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lease_token=row["lease_token"],
        locked_until=row["locked_until"],
    )


def _order_params(order: Order, token: str | None, release: bool) -> dict[str, Any]:
    params = order_fields(order, token)
    if release:
        params.update(locked_by=None, locked_until=None, lease_token=None)
    return params


def event_params(order_id: int, ev: Event) -> dict[str, Any]:
    return event_fields(order_id, ev)


def _row_to_event(row: Mapping[Any, Any]) -> Event:
    return Event(
        kind=row["kind"],
        at=row["at"],
        from_status=Status(row["from_status"]) if row["from_status"] else None,
        to_status=Status(row["to_status"]) if row["to_status"] else None,
        reason=Reason(row["reason"]) if row["reason"] else None,
        outcome=row["outcome"],
        attempt=row["attempt"],
        http_status=row["http_status"],
        vendor_code=row["vendor_code"],
        latency_ms=row["latency_ms"],
        detail=_loads(row["detail"]),
        actor=row["actor"],
    )


def _row_to_outbox(row: Mapping[Any, Any]) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        order_id=row["order_id"],
        order_no=row["order_no"],
        event_type=row["event_type"],
        payload=row["payload"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        lease_token=row["lease_token"],
    )


NOTIFY_CHANNEL = "orderwatch_due"

_ACTION_UPDATE = (
    orders.update()
    .where(orders.c.id == sa.bindparam("b_id"))
    .values(
        {
            name: sa.bindparam(name)
            # what a transition writes, plus what only an operator's action changes
            for name in (
                *WRITE_COLUMNS,
                "payment_status",
                "locked_by",
                "locked_until",
                "lease_token",
            )
        }
    )
)


class SqlStore:
    """:class:`~orderwatch.store.base.Store` on SQLite, PostgreSQL or MySQL/MariaDB."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        target = engine_url(url)
        self.dialect = target.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            database = target.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif self.dialect == "mysql":
            # every transaction ends in COMMIT or ROLLBACK already; the pool's own reset
            # would add a ROLLBACK round trip to each (see _setup_server)
            kwargs["pool_reset_on_return"] = None
        self.engine: Engine = sa.create_engine(target, **kwargs)
        if self.dialect == "sqlite":
            _setup_sqlite(self.engine)
        else:
            _setup_server(self.engine)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orderwatch-db")
        # Hot calls on the caller's thread: SQLite files only (an in-memory database is one
        # connection per thread, and a server's round trips must not block the loop).
        self._inline = self.dialect == "sqlite" and isinstance(self.engine.pool, sa.pool.QueuePool)
        # the last inline durable transactions: whether each took longer than SLOW_DURABLE
        self._durable_slow: deque[bool] = deque(maxlen=DURABLE_WINDOW)
        self._durable_on_thread = 0
        self._skip_locked = self.dialect in ("postgresql", "mysql")
        self._hot = HotPath(self.dialect)
        # One-step batches need UPDATE … FROM (SQLite 3.33) and JSON built in (3.38);
        # older SQLite libraries take the statement-per-row path.
        self._sqlite_batch = self.dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 38)
        # The inline hot transactions' own connection (see _tx_inline), opened on first use;
        # the lock keeps a second thread's loop, if one shares the store, off it.
        self._hot_conn: Connection | None = None
        self._hot_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    async def _run(
        self,
        fn: Callable[[Connection], T],
        *,
        write: bool = True,
        durable: bool = False,
        autocommit: bool = False,
        hot: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction on the database thread.

        ``durable`` transactions are on disk when they commit, even across a power loss
        (SQLite: ``synchronous=FULL``): intake, the SENT mark before a place-order, operator
        actions. Other writes (claims, poll results) survive a process crash; a power loss
        may undo the last of them, which only means a query is sent again.

        ``hot`` calls (the worker's claim and write-back) on a SQLite file run here, on the
        caller's thread, without waiting for locks: if another connection holds the write
        lock, ``BEGIN IMMEDIATE`` fails at once, nothing has been done, and the call goes to
        the database thread to wait its turn there. ``fn`` has no effect outside the
        transaction, so running it again is safe.
        """
        mode = "durable" if durable else "write" if write else "read"
        if autocommit:  # one statement, its own transaction ("auto-durable", "auto-write")
            mode = f"auto-{mode}"
        if hot and self._inline and (not durable or self._fsync_inline()):
            started = time.perf_counter()
            try:
                result = self._tx(fn, mode, wait=False)
            except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
                # (the work runs driver SQL on the raw cursor: its errors are sqlite3's own)
                if not _sqlite_busy(exc):
                    raise
            else:
                if durable:
                    took = time.perf_counter() - started
                    self._durable_slow.append(took > SLOW_DURABLE)
                return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._tx, fn, mode)

    def _fsync_inline(self) -> bool:
        """Whether a hot durable transaction (a group of SENT marks) runs on the loop's
        thread: yes while slow ones (over :data:`SLOW_DURABLE`) are rare, fewer than
        :data:`DURABLE_SLOW_COUNT` of the last :data:`DURABLE_WINDOW`; on a disk whose
        fsyncs are often slow the loop would stall on them, so they go to the database
        thread, and one in :data:`DURABLE_PROBE` runs inline to notice when the disk is
        fast again."""
        if sum(self._durable_slow) < DURABLE_SLOW_COUNT:
            return True
        self._durable_on_thread += 1
        return self._durable_on_thread % DURABLE_PROBE == 0

    @property
    def durable_commits_off_loop(self) -> int:
        """How many durable hot transactions went to the database thread because recent
        ones were slow (the inline probes left out): 0 on a local disk. Benchmarks show it,
        since each one costs a thread hop and contention for the GIL."""
        decided_slow = self._durable_on_thread
        return decided_slow - decided_slow // DURABLE_PROBE

    def _tx(self, fn: Callable[[Connection], T], mode: str, *, wait: bool = True) -> T:
        inline = not wait and not mode.startswith("auto-")
        if inline and self._hot_lock.acquire(blocking=False):
            try:
                return self._tx_inline(fn, mode)
            finally:
                self._hot_lock.release()
        conn = self.engine.connect()
        try:
            if mode.startswith("auto-"):  # one statement that is a transaction by itself
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                return fn(conn)
            conn = conn.execution_options(orderwatch_mode=mode, orderwatch_wait=wait)
            with conn.begin():
                return fn(conn)
        finally:
            conn.close()

    def _tx_inline(self, fn: Callable[[Connection], T], mode: str) -> T:
        """A hot transaction on the loop's thread, on a connection kept for it, begun and
        ended on the driver's connection: what ``_tx`` does through SQLAlchemy's pool,
        events and transaction objects cost ~85 µs a transaction, ten times the BEGIN and
        COMMIT themselves. The hot calls use the driver's cursor (``conn.connection``); a
        statement run through SQLAlchemy joins the transaction begun here (the begin event
        leaves this connection alone). It never waits for a lock (busy timeout 0): a locked
        database raises at BEGIN, and ``_run`` hands the call to the database thread."""
        conn = self._hot_conn
        if conn is None:
            conn = self.engine.connect().execution_options(orderwatch_inline=True)
            try:
                cast(sqlite3.Connection, conn.connection.driver_connection).execute(
                    "PRAGMA busy_timeout=0"
                )
            except BaseException:
                conn.close()
                raise
            conn.connection.info["busy_timeout"] = 0
            self._hot_conn = conn
        raw = cast(sqlite3.Connection, conn.connection.driver_connection)
        if raw.in_transaction:  # left open by a failure that could not roll it back
            raw.rollback()
        try:
            if mode == "read":
                raw.execute("BEGIN")
            else:
                info = conn.connection.info
                wanted = "FULL" if mode == "durable" else "NORMAL"
                if info["synchronous"] != wanted:  # only outside a transaction, so here
                    raw.execute(f"PRAGMA synchronous={wanted}")
                    info["synchronous"] = wanted
                raw.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            if conn.get_transaction() is not None:  # SQLAlchemy ran a statement: end it too
                conn.commit()
            else:
                raw.commit()
        except BaseException:
            if conn.invalidated:  # SQLAlchemy found the connection unusable: open another
                self._hot_conn = None
                conn.close()
                raise
            # a failed commit leaves SQLAlchemy's transaction attached (inactive) until
            # rolled back, and the driver's may still be open: end both
            if conn.get_transaction() is not None:
                conn.rollback()
            if raw.in_transaction:
                raw.rollback()
            raise
        return result

    async def close(self) -> None:
        if self._hot_conn is not None:
            self._hot_conn.close()
            self._hot_conn = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.engine.dispose)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ schema

    async def upgrade(self) -> None:
        from .migrate import upgrade

        await asyncio.get_running_loop().run_in_executor(self._executor, upgrade, self.engine)

    async def ensure_schema(self, *, auto_upgrade: bool) -> None:
        """Upgrade if allowed (the embedded default), else fail unless the schema is current."""
        from .migrate import is_current

        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(self._executor, is_current, self.engine)
        if current:
            return
        if auto_upgrade:
            await self.upgrade()
            return
        raise SchemaNotCurrent(
            f"the database at {make_url(self.url).render_as_string(hide_password=True)} "
            "is not at the current schema; run `orderwatch db upgrade`"
        )

    # ------------------------------------------------------------------ intake

    async def insert_orders(
        self, new: Sequence[NewOrder], *, now: datetime, actor: str | None = None
    ) -> InsertResult:
        hashes = [request_hash(o) for o in new]

        def work(conn: Connection) -> InsertResult:
            existing: dict[str, Mapping[Any, Any]] = {}
            numbers = [o.order_no for o in new]
            for some in _chunks(numbers, 500):
                for found in conn.execute(select(orders).where(orders.c.order_no.in_(some))):
                    existing[found.order_no] = found._mapping
            pruned: dict[str, str] = {}
            for some in _chunks([n for n in numbers if n not in existing], 500):
                for t in conn.execute(
                    select(order_tombstones.c.order_no, order_tombstones.c.status).where(
                        order_tombstones.c.order_no.in_(some)
                    )
                ):
                    pruned[t.order_no] = t.status
            if pruned:
                text = ", ".join(f"{no} ({status})" for no, status in sorted(pruned.items()))
                raise Conflict(
                    f"order_no already used by orders that ended and were pruned: {text}",
                    fields=["order_no"],
                )
            conflicts = []
            same: list[Order] = []
            fresh: list[tuple[NewOrder, str]] = []
            for order, h in zip(new, hashes, strict=True):
                row = existing.get(order.order_no)
                if row is None:
                    fresh.append((order, h))
                elif row["request_hash"] == h:
                    same.append(row_to_order(row))
                else:
                    conflicts.append((order.order_no, _differing_fields(order, row)))
            if conflicts:
                fields = sorted({f for _, fs in conflicts for f in fs})
                text = "; ".join(f"{no}: {', '.join(fs) or 'body'} differ" for no, fs in conflicts)
                raise Conflict(
                    f"order_no already taken with a different body ({text})", fields=fields
                )
            if not fresh:
                return InsertResult([], same)
            params = [
                {
                    "order_no": o.order_no,
                    "vendor": o.vendor,
                    "customer_id": o.customer_id,
                    "sku": o.sku,
                    "quantity": o.quantity,
                    "points": o.points,
                    "recipient": jsontext.dumps(
                        {
                            "name": o.recipient.name,
                            "phone": o.recipient.phone,
                            "address": o.recipient.address,
                        }
                    ),
                    "payment_status": o.payment_status,
                    "request_hash": h,
                    "status": Status.PENDING.value,
                    "next_run_at": now,
                    "started_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for o, h in fresh
            ]
            ids: dict[str, int] = {}
            for rows in _chunks(params, 500):
                result = conn.execute(
                    orders.insert().returning(
                        orders.c.id, orders.c.order_no, sort_by_parameter_order=True
                    ),
                    rows,
                )
                ids.update({r.order_no: r.id for r in result})
            events = [
                event_params(
                    ids[o.order_no],
                    Event(
                        kind="created",
                        at=now,
                        to_status=Status.PENDING,
                        actor=actor,
                        detail={"payment_status": o.payment_status},
                    ),
                )
                for o, _ in fresh
            ]
            for event_rows in _chunks(events, 500):
                conn.execute(order_events.insert(), event_rows)
            created: list[Order] = []
            id_list = list(ids.values())
            for id_chunk in _chunks(id_list, 500):
                created.extend(
                    row_to_order(r._mapping)
                    for r in conn.execute(select(orders).where(orders.c.id.in_(id_chunk)))
                )
            created.sort(key=lambda o: o.id)
            self._notify_due(conn)
            return InsertResult(created, same)

        return await self._run(work, durable=True)

    # ------------------------------------------------------------------ the hot path

    async def claim_due(
        self,
        *,
        now: datetime,
        real_now: datetime,
        limit: int,
        worker_id: str,
        lease: float,
        skip_vendors: Sequence[str] = (),
    ) -> list[Order]:
        hot = self._hot
        params: dict[str, Any] = {
            "now": hot.time_in(now),
            "real_now": hot.time_in(real_now),
            "limit": limit,
        }
        until = hot.time_in(real_now + timedelta(seconds=lease))

        if self.dialect == "postgresql":
            pg_claim, skipped = hot.skipping(hot.pg_claim, skip_vendors)
            pg_params = {
                **params,
                **skipped,
                "locked_by": worker_id,
                "locked_until": until,
                "token": os.urandom(6).hex(),
                "at": hot.time_in(now),
                "takeover_detail": _TAKEOVER_DETAIL,
            }

            def one_statement(conn: Connection) -> list[Order]:
                cur = conn.connection.cursor()
                try:
                    cur.execute(pg_claim, pg_params)
                    return [hot.order(row) for row in cur.fetchall()]
                finally:
                    cur.close()

            return await self._run(one_statement, autocommit=True)

        claim_sql, skipped = hot.skipping(
            hot.sqlite_claim if self._sqlite_batch else hot.claim_select, skip_vendors
        )
        params.update(skipped)

        def work(conn: Connection) -> list[Order]:
            cur = conn.connection.cursor()
            try:
                rows: Sequence[Sequence[Any]]
                cur.execute(claim_sql, params)
                rows = jsontext.loads(_one(cur)) if self._sqlite_batch else cur.fetchall()
                if not rows:
                    return []
                prefix = os.urandom(6).hex()
                claimed: list[Order] = []
                takeover_events = []
                for row in rows:
                    order = hot.order(row, lease=f"{prefix}{row[0]}")
                    claimed.append(order)
                    if order.locked_until is not None:  # took over a lease never released
                        takeover_events.append(
                            hot.event_params(
                                order.id,
                                Event(
                                    kind="takeover",
                                    at=now,
                                    from_status=order.status,
                                    to_status=order.status,
                                    actor=worker_id,
                                    detail=_TAKEOVER,
                                ),
                            )
                        )
                leased = {"locked_by": worker_id, "locked_until": until, "token": prefix}
                if self._sqlite_batch:
                    leased["ids"] = json_ids([o.id for o in claimed])
                    cur.execute(hot.sqlite_claim_update, leased)
                else:
                    cur.execute(hot.claim_update(o.id for o in claimed), leased)
                if takeover_events:
                    cur.executemany(hot.insert_event, takeover_events)
                return claimed
            finally:
                cur.close()

        return await self._run(work, hot=True)

    async def apply(self, writes: Sequence[Write]) -> set[int]:
        if not writes:
            return set()
        hot = self._hot
        if self.dialect == "postgresql":
            if all(w.token is None for w in writes):
                return set()

            def one_statement(conn: Connection) -> set[int]:
                fenced = [w for w in writes if w.token is not None]
                cur = conn.connection.cursor()
                try:
                    cur.execute(hot.pg_apply, hot.pg_apply_params(fenced))
                    return {row[0] for row in cur.fetchall()}
                finally:
                    cur.close()

            return await self._run(
                one_statement, autocommit=True, durable=any(not w.release for w in writes)
            )

        sqlite = self._sqlite_batch

        def work(conn: Connection) -> set[int]:
            cur = conn.connection.cursor()
            try:
                held: dict[int, str | None] = {}
                ids = [w.transition.order.id for w in writes]
                for some in _chunks(ids, 500):
                    if sqlite:
                        cur.execute(*hot.sqlite_held(some))
                        held.update((i, t) for i, t in jsontext.loads(_one(cur)))
                    else:
                        cur.execute(hot.held(some))
                        held.update(cur.fetchall())
                winners = [
                    w
                    for w in writes
                    if w.token is not None and held.get(w.transition.order.id) == w.token
                ]
                if not winners:
                    return set()
                if self.dialect == "mysql":
                    cur.execute(*hot.mysql_write(winners))  # one statement, not one per row
                elif sqlite:
                    for some_writes in _cacheable_chunks(winners):
                        cur.execute(*hot.sqlite_write(some_writes))
                else:
                    released = [
                        hot.write_params(w.transition.order, w.token) for w in winners if w.release
                    ]
                    kept = [
                        hot.write_params(w.transition.order, w.token)
                        for w in winners
                        if not w.release
                    ]
                    if released:
                        cur.executemany(hot.write_release, released)
                    if kept:
                        cur.executemany(hot.write_keep, kept)
                events = [
                    hot.event_params(w.transition.order.id, ev)
                    for w in winners
                    for ev in w.transition.events
                ]
                if events and sqlite:
                    for some_events in _cacheable_chunks(events):
                        cur.execute(*hot.insert_events(some_events))
                elif events:
                    cur.executemany(hot.insert_event, events)
                self._insert_notes(conn, cur, winners)
            finally:
                cur.close()
            return {w.transition.order.id for w in winners}

        # The SENT mark (a write that keeps its lease) must be on disk before the request.
        return await self._run(work, durable=any(not w.release for w in writes), hot=True)

    def _insert_notes(self, conn: Connection, cur: Any, winners: Sequence[Write]) -> None:
        """The notification rows of a write-back (a third of the results carry one)."""
        if self._sqlite_batch:  # one multi-row INSERT, on the write-back's cursor
            notes = [
                outbox_fields(w.transition.order, w.outbox, self._hot.time_in)
                for w in winners
                if w.outbox is not None
            ]
            for some in _cacheable_chunks(notes):
                cur.execute(*self._hot.insert_outbox(some))
            return
        notes = [
            outbox_fields(w.transition.order, w.outbox) for w in winners if w.outbox is not None
        ]
        if notes:  # MySQL, or SQLite < 3.38: SQLAlchemy Core's executemany
            conn.execute(outbox.insert(), notes)

    async def renew_leases(self, tokens: Mapping[int, str], *, until: datetime) -> int:
        if not tokens:
            return 0
        stmt = (
            orders.update()
            .where(
                orders.c.id == sa.bindparam("b_id"), orders.c.lease_token == sa.bindparam("b_token")
            )
            .values(locked_until=until)
        )

        def work(conn: Connection) -> int:
            result = conn.execute(stmt, [{"b_id": i, "b_token": t} for i, t in tokens.items()])
            return int(result.rowcount)

        return await self._run(work)

    async def release(self, tokens: Mapping[int, str]) -> None:
        if not tokens:
            return
        stmt = (
            orders.update()
            .where(
                orders.c.id == sa.bindparam("b_id"), orders.c.lease_token == sa.bindparam("b_token")
            )
            .values(locked_by=None, locked_until=None, lease_token=None)
        )

        def work(conn: Connection) -> None:
            conn.execute(stmt, [{"b_id": i, "b_token": t} for i, t in tokens.items()])

        await self._run(work)

    async def next_due_at(
        self, *, now: datetime, real_now: datetime, skip_vendors: Sequence[str] = ()
    ) -> datetime | None:
        hot = self._hot
        sql, skipped = hot.skipping(hot.next_due, skip_vendors)
        params = {"now": hot.time_in(now), "real_now": hot.time_in(real_now), **skipped}

        def work(conn: Connection) -> datetime | None:
            cur = conn.connection.cursor()
            try:
                cur.execute(sql, params)
                row = cur.fetchone()
            finally:
                cur.close()
            return hot.time_out(row[0]) if row else None

        return await self._run(work, write=False, hot=True)

    # ------------------------------------------------------------------ reading

    async def get_order(self, order_no: str) -> Order | None:
        def work(conn: Connection) -> Order | None:
            row = conn.execute(select(orders).where(orders.c.order_no == order_no)).first()
            return row_to_order(row._mapping) if row else None

        return await self._run(work, write=False)

    async def get_events(self, order_id: int) -> list[Event]:
        def work(conn: Connection) -> list[Event]:
            rows = conn.execute(
                select(order_events)
                .where(order_events.c.order_id == order_id)
                .order_by(order_events.c.id)
            )
            return [_row_to_event(r._mapping) for r in rows]

        return await self._run(work, write=False)

    async def list_orders(
        self, flt: OrderFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[Order]:
        def work(conn: Connection) -> list[Order]:
            q = select(orders)
            for cond in _filter_conditions(flt):
                q = q.where(cond)
            if before_id is not None:
                q = q.where(orders.c.id < before_id)
            q = q.order_by(orders.c.id.desc()).limit(limit)
            return [row_to_order(r._mapping) for r in conn.execute(q)]

        return await self._run(work, write=False)

    async def counts(self, *, now: datetime) -> Counts:
        def work(conn: Connection) -> Counts:
            out = Counts()
            rows = conn.execute(
                select(orders.c.vendor, orders.c.status, orders.c.reason, func.count()).group_by(
                    orders.c.vendor, orders.c.status, orders.c.reason
                )
            )
            for vendor, status, reason, n in rows:
                out.by_status[status] = out.by_status.get(status, 0) + n
                if reason:
                    out.by_reason[reason] = out.by_reason.get(reason, 0) + n
                per = out.by_vendor.setdefault(vendor, {})
                per[status] = per.get(status, 0) + n
            out.due = int(
                conn.execute(
                    select(func.count())
                    .select_from(orders)
                    .where(orders.c.next_run_at.is_not(None), orders.c.next_run_at <= now)
                ).scalar_one()
            )
            return out

        return await self._run(work, write=False)

    # ------------------------------------------------------------------ waking workers

    def _notify_due(self, conn: Connection) -> None:
        """PostgreSQL: tell listening workers, at commit, that work may be due now."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever new or reopened orders are committed (PostgreSQL).

        Runs until cancelled, reconnecting with backoff. Other databases have no such
        signal; workers there sleep until the next due time, bounded, instead.
        """
        if self.dialect != "postgresql":
            await asyncio.Event().wait()
            return
        import psycopg

        url = engine_url(self.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.5
                    wake()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        wake()
            except psycopg.Error:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ housekeeping

    async def prune(self, *, finished_before: datetime, now: datetime, limit: int = 10_000) -> int:
        """Delete final orders last changed before ``finished_before``, with their events
        and notifications, keeping a tombstone so their order_no is never taken again."""

        def work(conn: Connection) -> int:
            rows = conn.execute(
                select(
                    orders.c.id,
                    orders.c.order_no,
                    orders.c.status,
                    orders.c.reason,
                    orders.c.updated_at,
                )
                .where(
                    orders.c.status.in_([Status.SUCCEEDED.value, Status.FAILED.value]),
                    orders.c.updated_at < finished_before,
                )
                .order_by(orders.c.id)
                .limit(limit)
            ).all()
            if not rows:
                return 0
            conn.execute(
                order_tombstones.insert(),
                [
                    {
                        "order_no": r.order_no,
                        "status": r.status,
                        "reason": r.reason,
                        "finished_at": r.updated_at,
                        "pruned_at": now,
                    }
                    for r in rows
                ],
            )
            ids = [r.id for r in rows]
            for some in _chunks(ids, 500):
                conn.execute(order_events.delete().where(order_events.c.order_id.in_(some)))
                conn.execute(outbox.delete().where(outbox.c.order_id.in_(some)))
                conn.execute(orders.delete().where(orders.c.id.in_(some)))
            return len(rows)

        return await self._run(work, durable=True)

    # ------------------------------------------------------------------ operator actions

    async def change_order(
        self,
        order_no: str,
        decide: Callable[[Order, datetime], tuple[Transition, T]],
        *,
        real_now: datetime,
        outbox_item: Callable[[Transition], OutboxItem | None],
        actor: str | None = None,
    ) -> tuple[Order, T]:
        """Read, decide and write one order in one transaction, under a fresh lease token.

        ``decide(order, real_now)`` is pure and may raise to refuse; the new token fences
        out any worker that holds the order now, so its late answer is discarded.
        """

        def work(conn: Connection) -> tuple[Order, T]:
            q = select(orders).where(orders.c.order_no == order_no)
            if self._skip_locked:
                q = q.with_for_update()
            row = conn.execute(q).first()
            if row is None:
                raise OrderNotFound(order_no)
            transition, extra = decide(row_to_order(row._mapping), real_now)
            after = transition.order
            token = new_token()
            params = _order_params(after, None, True)
            params.update(payment_status=after.payment_status, lease_token=token)
            conn.execute(_ACTION_UPDATE, [params])
            if transition.events:
                conn.execute(
                    order_events.insert(), [event_params(after.id, ev) for ev in transition.events]
                )
            item = outbox_item(transition)
            if item is not None:
                conn.execute(outbox.insert(), [outbox_fields(after, item)])
            if after.next_run_at is not None:
                self._notify_due(conn)
            return _with_lease(after, token, after.takeovers), extra

        return await self._run(work, durable=True)

    async def pause_vendor(
        self, vendor: str, *, now: datetime, actor: str | None, note: str | None
    ) -> bool:
        """Pause a vendor; False if it was paused already."""

        def work(conn: Connection) -> bool:
            row = conn.execute(
                select(vendor_pauses.c.until).where(vendor_pauses.c.vendor == vendor)
            ).first()
            if row is not None and row.until is None:
                return False
            if row is not None:  # an open circuit breaker becomes the operator's pause
                conn.execute(vendor_pauses.delete().where(vendor_pauses.c.vendor == vendor))
            conn.execute(
                vendor_pauses.insert().values(vendor=vendor, paused_at=now, actor=actor, note=note)
            )
            return True

        return await self._run(work)

    async def resume_vendor(self, vendor: str) -> bool:
        def work(conn: Connection) -> bool:
            result = conn.execute(vendor_pauses.delete().where(vendor_pauses.c.vendor == vendor))
            return bool(result.rowcount)

        return await self._run(work)

    async def paused_vendors(self) -> dict[str, datetime]:
        def work(conn: Connection) -> dict[str, datetime]:
            rows = conn.execute(
                select(vendor_pauses.c.vendor, vendor_pauses.c.paused_at).where(
                    vendor_pauses.c.until.is_(None)
                )
            )
            return {r.vendor: r.paused_at for r in rows}

        return await self._run(work, write=False)

    async def open_circuit(self, vendor: str, *, now: datetime, until: datetime, note: str) -> bool:
        """Open (or extend) a vendor's circuit breaker; an operator's pause is left alone."""

        def work(conn: Connection) -> bool:
            row = conn.execute(
                select(vendor_pauses.c.until).where(vendor_pauses.c.vendor == vendor)
            ).first()
            if row is None:
                conn.execute(
                    vendor_pauses.insert().values(
                        vendor=vendor, paused_at=now, actor=CIRCUIT_BREAKER, note=note, until=until
                    )
                )
                return True
            if row.until is None:
                return False  # paused by an operator: that pause rules
            conn.execute(
                vendor_pauses.update()
                .where(vendor_pauses.c.vendor == vendor, vendor_pauses.c.until.is_not(None))
                .values(paused_at=now, note=note, until=until)
            )
            return True

        return await self._run(work)

    async def close_circuit(self, vendor: str) -> bool:
        """Close a vendor's circuit breaker (calls went through again)."""

        def work(conn: Connection) -> bool:
            result = conn.execute(
                vendor_pauses.delete().where(
                    vendor_pauses.c.vendor == vendor, vendor_pauses.c.until.is_not(None)
                )
            )
            return bool(result.rowcount)

        return await self._run(work)

    async def open_circuits(self, *, now: datetime) -> dict[str, datetime]:
        """Vendors whose circuit breaker is open at ``now``, with when it closes."""

        def work(conn: Connection) -> dict[str, datetime]:
            rows = conn.execute(
                select(vendor_pauses.c.vendor, vendor_pauses.c.until).where(
                    vendor_pauses.c.until > now
                )
            )
            return {r.vendor: r.until for r in rows}

        return await self._run(work, write=False)

    # ------------------------------------------------------------------ outbox

    async def redeliver(self, order_no: str, outbox_id: int, *, now: datetime) -> OutboxRow:
        """Queue one notification of an order for delivery again, whatever its state."""

        def work(conn: Connection) -> OutboxRow:
            row = conn.execute(
                select(outbox).where(outbox.c.id == outbox_id, outbox.c.order_no == order_no)
            ).first()
            if row is None:
                raise OrderNotFound(f"{order_no} notification {outbox_id}")
            conn.execute(
                outbox.update()
                .where(outbox.c.id == outbox_id)
                .values(
                    state="pending",
                    next_attempt_at=now,
                    locked_until=None,
                    lease_token=None,
                    delivered_at=None,
                )
            )
            fresh = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).one()
            return _row_to_outbox(fresh._mapping)

        return await self._run(work)

    async def claim_outbox(
        self, *, now: datetime, real_now: datetime, limit: int, lease: float
    ) -> list[OutboxRow]:
        until = real_now + timedelta(seconds=lease)

        def work(conn: Connection) -> list[OutboxRow]:
            q = (
                select(outbox)
                .where(
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at <= now,
                    sa.or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < real_now),
                )
                .order_by(outbox.c.id)
                .limit(limit)
            )
            if self._skip_locked:
                q = q.with_for_update(skip_locked=True)
            return _lease_outbox(conn, q, until)

        return await self._run(work)

    async def finish_outbox(self, results: Sequence[OutboxResult]) -> set[int]:
        if not results:
            return set()
        stmt = (
            outbox.update()
            .where(
                outbox.c.id == sa.bindparam("b_id"), outbox.c.lease_token == sa.bindparam("b_token")
            )
            .values(
                state=sa.bindparam("state"),
                attempts=sa.bindparam("attempts"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                last_error=sa.bindparam("last_error"),
                delivered_at=sa.bindparam("delivered_at"),
                locked_until=None,
                lease_token=None,
            )
        )

        def work(conn: Connection) -> set[int]:
            held = {
                r.id: r.lease_token
                for r in conn.execute(
                    select(outbox.c.id, outbox.c.lease_token).where(
                        outbox.c.id.in_([r.id for r in results])
                    )
                )
            }
            winners = [r for r in results if held.get(r.id) == r.token]
            if winners:
                conn.execute(
                    stmt,
                    [
                        {
                            "b_id": r.id,
                            "b_token": r.token,
                            "state": r.state,
                            "attempts": r.attempts,
                            "next_attempt_at": r.next_attempt_at,
                            "last_error": r.last_error,
                            "delivered_at": r.delivered_at,
                        }
                        for r in winners
                    ],
                )
            return {r.id for r in winners}

        return await self._run(work)

    async def list_outbox(self, order_id: int) -> list[OutboxRow]:
        def work(conn: Connection) -> list[OutboxRow]:
            rows = conn.execute(
                select(outbox).where(outbox.c.order_id == order_id).order_by(outbox.c.id)
            )
            return [_row_to_outbox(r._mapping) for r in rows]

        return await self._run(work, write=False)

    # ------------------------------------------------------------------ for tests and tools

    async def execute(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in one transaction on the database thread."""
        return await self._run(fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run the read-only ``fn(connection)`` on the database thread (store/reports.py)."""
        return await self._run(fn, write=False)

    # ------------------------------------------------------------------ outbox delivery order

    async def claim_outbox_ordered(
        self, *, now: datetime, real_now: datetime, limit: int, lease: float
    ) -> list[OutboxRow]:
        """Like :meth:`claim_outbox`, but only the oldest pending notification of each order.

        A later notification of an order waits while an earlier one is pending (due, backing
        off or leased), so the customer's platform never sees ``order.succeeded`` before the
        ``order.shipped`` it follows. Earliest due first.
        """
        until = real_now + timedelta(seconds=lease)
        older = outbox.alias("older")
        earlier_pending = (
            select(older.c.id)
            .where(
                older.c.order_id == outbox.c.order_id,
                older.c.state == "pending",
                older.c.id < outbox.c.id,
            )
            .exists()
        )

        def work(conn: Connection) -> list[OutboxRow]:
            q = (
                select(outbox)
                .where(
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at <= now,
                    sa.or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < real_now),
                    ~earlier_pending,
                )
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(limit)
            )
            if self._skip_locked:
                q = q.with_for_update(skip_locked=True)
            return _lease_outbox(conn, q, until)

        return await self._run(work)

    async def redeliver_failed(
        self, flt: OrderFilter, *, now: datetime, dry_run: bool = False
    ) -> tuple[int, int]:
        """Queue again every ``failed`` notification of the orders ``flt`` matches.

        Same effect per row as :meth:`redeliver`; returns ``(matched, changed)``.
        """

        def work(conn: Connection) -> tuple[int, int]:
            q = (
                select(outbox.c.id)
                .select_from(outbox.join(orders, orders.c.id == outbox.c.order_id))
                .where(outbox.c.state == "failed", *_filter_conditions(flt))
            )
            ids = [r.id for r in conn.execute(q)]
            if dry_run or not ids:
                return len(ids), 0
            changed = 0
            for chunk in _chunks(ids, 500):
                changed += conn.execute(
                    outbox.update()
                    .where(outbox.c.id.in_(chunk), outbox.c.state == "failed")
                    .values(
                        state="pending",
                        next_attempt_at=now,
                        locked_until=None,
                        lease_token=None,
                        delivered_at=None,
                    )
                ).rowcount
            return len(ids), changed

        return await self._run(work)


def _with_lease(order: Order, token: str, takeovers: int) -> Order:
    return evolve(order, lease_token=token, takeovers=takeovers)


def _lease_outbox(conn: Connection, query: sa.Select[Any], until: datetime) -> list[OutboxRow]:
    """Lease the outbox rows ``query`` selects: a fresh token each, held until ``until``."""
    rows = [_row_to_outbox(r._mapping) for r in conn.execute(query)]
    if not rows:
        return []
    claimed = [_outbox_with_token(r, new_token()) for r in rows]
    conn.execute(
        outbox.update()
        .where(outbox.c.id == sa.bindparam("b_id"))
        .values(locked_until=until, lease_token=sa.bindparam("lease_token")),
        [{"b_id": r.id, "lease_token": r.lease_token} for r in claimed],
    )
    return claimed


def _outbox_with_token(row: OutboxRow, token: str) -> OutboxRow:
    from dataclasses import replace

    return replace(row, lease_token=token)


def _filter_conditions(flt: OrderFilter) -> Iterable[sa.ColumnElement[bool]]:
    if flt.status:
        yield orders.c.status == flt.status
    if flt.reason:
        yield orders.c.reason == flt.reason
    if flt.vendor:
        yield orders.c.vendor == flt.vendor
    if flt.customer_id:
        yield orders.c.customer_id == flt.customer_id
    if flt.created_after:
        yield orders.c.created_at >= flt.created_after
    if flt.created_before:
        yield orders.c.created_at < flt.created_before


def _differing_fields(order: NewOrder, row: Mapping[Any, Any]) -> list[str]:
    stored = {
        "vendor": row["vendor"],
        "sku": row["sku"],
        "quantity": row["quantity"],
        "points": row["points"],
        "customer_id": row["customer_id"],
        "payment_status": row["payment_status"],
    }
    rec = json.loads(row["recipient"])
    body = order.body()
    diff = [k for k, v in stored.items() if body[k] != v]
    diff += [
        f"recipient.{k}" for k in ("name", "phone", "address") if body["recipient"][k] != rec[k]
    ]
    return diff


def _one(cur: Any) -> Any:
    """The single value of a one-row, one-column answer (an aggregate always has one row)."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _cacheable_chunks(items: Sequence[T], most: int = 256) -> Iterable[Sequence[T]]:
    """``items`` in chunks whose sizes are powers of two, largest first (25 → 16, 8, 1).

    A multi-row statement's text depends on its row count, and SQLite compiles a text it
    has not cached in about the time it takes to run it: with sizes from a set of nine,
    the driver's statement cache keeps every write-back statement compiled.
    """
    i, n = 0, len(items)
    while i < n:
        size = min(most, 1 << ((n - i).bit_length() - 1))
        yield items[i : i + size]
        i += size


IDLE_PING = 1.0  # seconds a pooled connection may sit unused before it is checked


def _setup_server(engine: Engine) -> None:
    """Check a pooled connection only when it sat idle (a dropped connection is found
    before use), not before every transaction: the worker's claims and write-backs follow
    each other within milliseconds, and a ping each would double their round trips. A
    connection dropped in the middle of work fails that transaction, which the worker
    retries with backoff."""
    ping = engine.dialect.do_ping

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        if dbapi_conn is None:
            return
        if engine.dialect.name == "mysql" and getattr(dbapi_conn, "server_status", 0) & 1:
            dbapi_conn.rollback()  # SERVER_STATUS_IN_TRANS: left open (pool reset is off)
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING:
            return
        try:
            alive = ping(dbapi_conn)
            if engine.dialect.name == "postgresql":
                dbapi_conn.rollback()  # the SELECT 1 opened a transaction: end it here
        except Exception as exc:
            raise sa.exc.DisconnectionError(str(exc)) from exc
        if alive is False:
            raise sa.exc.DisconnectionError("connection is gone")


_BUSY_TIMEOUT_MS = 30_000  # how long a transaction on the database thread waits for a lock
#: A durable transaction slower than this (seconds) is an fsync too slow to wait for on the
#: event loop's thread: see :meth:`SqlStore._fsync_inline`. On a local disk a group of a
#: dozen SENT marks takes 1.2–2 ms (p99 3.9 ms, bench/pipeline.py, 476 groups), fsync
#: included; sending groups to the database thread costs more than that wait (a thread hop
#: each, and the two threads contend for the GIL: at a 3 ms mark 441 of 1,760 groups of a
#: 20,000-order run went there, and orderwatch's own CPU per call came to 2.07 × the bare
#: client's, against 1.29–1.58 × in the other runs). A network disk's fsync of 10 ms or
#: more is worth the hop.
SLOW_DURABLE = 0.010
#: Durable transactions leave the loop when this many of the last DURABLE_WINDOW inline ones
#: were slow: slow ones are then the disk's habit, not an accident. One slow commit (a WAL
#: checkpoint, a busy neighbour on a shared machine) used to be enough, through a moving
#: average, to move the next fifty groups to the database thread.
DURABLE_SLOW_COUNT = 3
DURABLE_WINDOW = 8
DURABLE_PROBE = 50


def _sqlite_busy(exc: Exception) -> bool:
    """The database is locked by another connection (SQLITE_BUSY, or one of its extended
    codes such as SQLITE_BUSY_RECOVERY): try again later."""
    error = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY


def _setup_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, explicit transactions (IMMEDIATE for writes), and an fsync on
    commit only for durable transactions (see :meth:`SqlStore._run`)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cur.close()
        record.info["synchronous"] = "NORMAL"
        record.info["busy_timeout"] = _BUSY_TIMEOUT_MS

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("orderwatch_inline"):
            return  # SqlStore._tx_inline has begun the transaction on the driver
        mode = options.get("orderwatch_mode", "write")
        info = conn.connection.info
        busy_timeout = _BUSY_TIMEOUT_MS if options.get("orderwatch_wait", True) else 0
        if info.get("busy_timeout") != busy_timeout:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={busy_timeout}")
            info["busy_timeout"] = busy_timeout
        if mode == "read":
            conn.exec_driver_sql("BEGIN")
            return
        wanted = "FULL" if mode == "durable" else "NORMAL"
        if info.get("synchronous") != wanted:  # only outside a transaction, so here
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            info["synchronous"] = wanted
        conn.exec_driver_sql("BEGIN IMMEDIATE")
