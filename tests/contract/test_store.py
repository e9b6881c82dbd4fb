"""The store contract: what every Store implementation must do, run against each of them.

SQLite runs here always; PostgreSQL and MySQL/MariaDB join the ``store`` parametrization
when their backends land. Each test uses a fresh database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from tests.support.databases import KINDS, drop_templates, fresh_database
from tests.support.orders import new_order

from orderwatch import lifecycle
from orderwatch.errors import Conflict
from orderwatch.lifecycle import Event, Transition
from orderwatch.order import Order
from orderwatch.statuses import Reason, Status
from orderwatch.store.base import OrderFilter, OutboxItem, OutboxResult, Write
from orderwatch.store.schema import metadata
from orderwatch.store.sql import IDLE_PING, SqlStore

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture(params=[*KINDS, "sqlite-rowwise"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """Every database; ``sqlite-rowwise`` is SQLite on the statement-per-row path that
    SQLite libraries older than 3.38 take (no one-step JSON batches)."""
    kind = "sqlite" if request.param == "sqlite-rowwise" else request.param
    with fresh_database(kind, tmp_path) as url:
        s = SqlStore(url)
        if request.param == "sqlite-rowwise":
            s._sqlite_batch = False
        try:
            await s.ensure_schema(auto_upgrade=True)
            yield s
        finally:
            await s.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_templates() -> Iterator[None]:
    yield
    drop_templates()


async def claim(
    store: SqlStore,
    *,
    now: datetime = NOW,
    worker: str = "w1",
    limit: int = 10,
    lease: float = 60,
    real_now: datetime | None = None,
) -> list[Order]:
    return await store.claim_due(
        now=now, real_now=real_now or now, limit=limit, worker_id=worker, lease=lease
    )


def finish(order: Order, at: datetime) -> Transition:
    after = replace(
        order,
        status=Status.FAILED,
        reason=Reason.VENDOR_FAILED,
        description="vendor says no",
        next_run_at=None,
        updated_at=at,
    )
    ev = Event(
        kind="failed",
        at=at,
        from_status=order.status,
        to_status=Status.FAILED,
        reason=Reason.VENDOR_FAILED,
    )
    return Transition(after, (ev,), "order.failed")


# ---------------------------------------------------------------- schema


async def test_migrations_create_exactly_the_declared_schema(store: SqlStore) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    assert await store.execute(diff) == []


async def test_upgrade_is_idempotent(store: SqlStore) -> None:
    await store.upgrade()
    await store.ensure_schema(auto_upgrade=False)


# ---------------------------------------------------------------- intake


async def test_insert_stores_pending_due_now_with_created_event(store: SqlStore) -> None:
    result = await store.insert_orders([new_order("A1"), new_order("A2")], now=NOW, actor="t")
    assert [o.order_no for o in result.created] == ["A1", "A2"]
    a1 = await store.get_order("A1")
    assert a1 is not None
    assert a1.status is Status.PENDING
    assert a1.next_run_at == NOW
    assert a1.recipient.name == "张三"
    events = await store.get_events(a1.id)
    assert [(e.kind, e.to_status, e.actor) for e in events] == [("created", Status.PENDING, "t")]


async def test_same_body_again_is_idempotent(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    again = await store.insert_orders([new_order("A1")], now=NOW + timedelta(minutes=1))
    assert again.created == []
    assert [o.order_no for o in again.existing] == ["A1"]
    a1 = await store.get_order("A1")
    assert a1 is not None
    assert len(await store.get_events(a1.id)) == 1


async def test_conflicting_body_writes_nothing_and_names_fields(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    with pytest.raises(Conflict) as info:
        await store.insert_orders([new_order("B1"), new_order("A1", quantity=2)], now=NOW)
    assert "quantity" in info.value.fields
    assert await store.get_order("B1") is None  # all or nothing


# ---------------------------------------------------------------- claims and leases


async def test_claim_takes_due_orders_earliest_first_and_leases_them(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW + timedelta(seconds=2))
    await store.insert_orders([new_order("A2")], now=NOW)
    await store.insert_orders([new_order("LATER")], now=NOW + timedelta(hours=1))
    got = await claim(store, now=NOW + timedelta(seconds=5))
    assert [o.order_no for o in got] == ["A2", "A1"]
    assert all(o.lease_token for o in got)
    assert len({o.lease_token for o in got}) == 2
    # leased rows are not claimed again while the lease holds
    assert await claim(store, now=NOW + timedelta(seconds=5), worker="w2") == []


async def test_claim_and_next_due_leave_out_the_vendors_asked(store: SqlStore) -> None:
    await store.insert_orders(
        [new_order("S1", vendor="slow"), new_order("S2", vendor="slow"), new_order("Q1")],
        now=NOW,
    )
    later = NOW + timedelta(minutes=1)
    assert await store.next_due_at(now=later, real_now=later, skip_vendors=["acme"]) == NOW
    assert await store.next_due_at(now=later, real_now=later, skip_vendors=["acme", "slow"]) is None
    got = await store.claim_due(
        now=later, real_now=later, limit=10, worker_id="w1", lease=60, skip_vendors=["slow"]
    )
    assert [o.order_no for o in got] == ["Q1"]
    got = await store.claim_due(now=later, real_now=later, limit=10, worker_id="w1", lease=60)
    assert sorted(o.order_no for o in got) == ["S1", "S2"]


async def test_claim_respects_limit(store: SqlStore) -> None:
    await store.insert_orders([new_order(f"A{i}") for i in range(5)], now=NOW)
    assert len(await claim(store, limit=3)) == 3
    assert len(await claim(store, limit=3)) == 2


async def test_expired_lease_is_taken_over_and_old_holder_is_fenced(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (first,) = await claim(store, lease=1)
    later = NOW + timedelta(seconds=5)
    (second,) = await claim(store, worker="w2", real_now=later, now=later)
    assert second.lease_token != first.lease_token
    assert second.takeovers == 1
    applied = await store.apply([Write(finish(first, later), first.lease_token)])
    assert applied == set()  # the late answer of the first worker is discarded
    current = await store.get_order("A1")
    assert current is not None
    assert current.status is Status.PENDING
    kinds = [e.kind for e in await store.get_events(current.id)]
    assert kinds == ["created", "takeover"]
    assert await store.apply([Write(finish(second, later), second.lease_token)]) == {second.id}


async def test_apply_writes_order_event_and_outbox_in_one_go(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (order,) = await claim(store)
    t = finish(order, NOW)
    applied = await store.apply(
        [Write(t, order.lease_token, OutboxItem("order.failed", '{"type":"order.failed"}'))]
    )
    assert applied == {order.id}
    stored = await store.get_order("A1")
    assert stored is not None
    assert (stored.status, stored.reason, stored.next_run_at) == (
        Status.FAILED,
        Reason.VENDOR_FAILED,
        None,
    )
    assert stored.lease_token is None  # released
    assert [e.kind for e in await store.get_events(order.id)] == ["created", "failed"]
    (note,) = await store.list_outbox(order.id)
    assert (note.event_type, note.state) == ("order.failed", "pending")


async def test_a_write_back_refused_halfway_leaves_nothing_written(store: SqlStore) -> None:
    # SQLite's multi-row writes say OR FAIL (no statement journal): a row refused halfway
    # leaves the rows before it changed until the transaction is rolled back as a whole.
    await store.insert_orders([new_order(f"H{i:02}") for i in range(40)], now=NOW)
    claimed = await claim(store, limit=40)
    later = NOW + timedelta(seconds=5)
    writes = [
        Write(finish(o, later), o.lease_token, OutboxItem("order.failed", "{}")) for o in claimed
    ]
    bad = writes[30].transition
    writes[30] = replace(
        writes[30], transition=replace(bad, order=replace(bad.order, queries=None))
    )
    with pytest.raises(Exception, match=r"(?i)null"):  # queries is NOT NULL
        await store.apply(writes)
    for o in claimed:
        stored = await store.get_order(o.order_no)
        assert stored is not None
        assert (stored.status, stored.lease_token, stored.updated_at) == (
            Status.PENDING,
            o.lease_token,
            o.updated_at,
        )
        assert [e.kind for e in await store.get_events(o.id)] == ["created"]
        assert await store.list_outbox(o.id) == []
    # the lease is still held: the same results, made valid, land
    writes[30] = replace(writes[30], transition=bad)
    assert await store.apply(writes) == {o.id for o in claimed}


async def test_a_write_back_of_any_size_lands_every_row_once(store: SqlStore) -> None:
    # 46 results, one of them a late answer whose lease was taken over (it must not land):
    # SQLite writes the other 45 in statements of 32, 8, 4 and 1 rows, each compiled once.
    await store.insert_orders([new_order(f"A{i:02}") for i in range(46)], now=NOW)
    claimed = await claim(store, limit=46, lease=1)
    later = NOW + timedelta(seconds=5)
    (retaken,) = await claim(store, worker="w2", limit=1, now=later, real_now=later)
    writes = [
        Write(
            finish(o, later), o.lease_token, OutboxItem("order.failed", f'{{"n":"{o.order_no}"}}')
        )
        for o in claimed
    ]
    applied = await store.apply(writes)
    assert applied == {o.id for o in claimed} - {retaken.id}
    for o in claimed:
        stored = await store.get_order(o.order_no)
        assert stored is not None
        kinds = [e.kind for e in await store.get_events(o.id)]
        notes = await store.list_outbox(o.id)
        if o.id == retaken.id:
            assert (stored.status, kinds, notes) == (Status.PENDING, ["created", "takeover"], [])
        else:
            assert (stored.status, stored.reason) == (Status.FAILED, Reason.VENDOR_FAILED)
            assert kinds == ["created", "failed"]
            assert [n.payload for n in notes] == [f'{{"n":"{o.order_no}"}}']


async def test_sent_mark_keeps_the_lease(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (order,) = await claim(store)
    sent = lifecycle.mark_sent(order, NOW, actor="w1")
    assert await store.apply([Write(sent, order.lease_token, release=False)]) == {order.id}
    stored = await store.get_order("A1")
    assert stored is not None
    assert stored.status is Status.SENT
    assert stored.placements == 1
    assert stored.lease_token == order.lease_token
    # the same worker's write-back after the call still holds
    t = finish(sent.order, NOW)
    assert await store.apply([Write(t, order.lease_token)]) == {order.id}


async def test_renew_and_release(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (order,) = await claim(store, lease=1)
    assert order.lease_token is not None
    assert (
        await store.renew_leases({order.id: order.lease_token}, until=NOW + timedelta(minutes=5))
        == 1
    )
    later = NOW + timedelta(seconds=30)
    assert await claim(store, worker="w2", now=later, real_now=later) == []  # renewed
    await store.release({order.id: order.lease_token})
    (again,) = await claim(store, worker="w2", now=later, real_now=later)
    assert again.takeovers == 0  # a released order is not a takeover


async def test_next_due_at_ignores_leased_rows(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    await store.insert_orders([new_order("A2")], now=NOW + timedelta(minutes=3))
    assert await store.next_due_at(now=NOW, real_now=NOW) == NOW
    await claim(store, limit=1)
    assert await store.next_due_at(now=NOW, real_now=NOW) == NOW + timedelta(minutes=3)


# ---------------------------------------------------------------- reading


async def test_list_filters_and_cursor_pages_are_stable(store: SqlStore) -> None:
    await store.insert_orders([new_order(f"A{i:02d}") for i in range(7)], now=NOW)
    await store.insert_orders([new_order("B1", vendor="beta", customer_id="C9")], now=NOW)
    first = await store.list_orders(OrderFilter(vendor="acme"), limit=3)
    assert [o.order_no for o in first] == ["A06", "A05", "A04"]
    await store.insert_orders([new_order("A99")], now=NOW)  # arrives between pages
    second = await store.list_orders(OrderFilter(vendor="acme"), limit=3, before_id=first[-1].id)
    assert [o.order_no for o in second] == ["A03", "A02", "A01"]
    assert [o.order_no for o in await store.list_orders(OrderFilter(customer_id="C9"))] == ["B1"]
    assert await store.list_orders(OrderFilter(status="FAILED")) == []


async def test_counts_by_status_reason_vendor_and_due(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1"), new_order("A2")], now=NOW)
    (order, _) = await claim(store)
    await store.apply([Write(finish(order, NOW), order.lease_token)])
    counts = await store.counts(now=NOW)
    assert counts.by_status == {"PENDING": 1, "FAILED": 1}
    assert counts.by_reason == {"VENDOR_FAILED": 1}
    assert counts.by_vendor == {"acme": {"PENDING": 1, "FAILED": 1}}
    assert counts.due == 1


# ---------------------------------------------------------------- outbox


async def test_outbox_claim_and_fenced_finish(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (order,) = await claim(store)
    await store.apply(
        [Write(finish(order, NOW), order.lease_token, OutboxItem("order.failed", "{}"))]
    )
    (row,) = await store.claim_outbox(now=NOW, real_now=NOW, limit=10, lease=1)
    assert await store.claim_outbox(now=NOW, real_now=NOW, limit=10, lease=1) == []
    later = NOW + timedelta(seconds=5)
    (again,) = await store.claim_outbox(now=later, real_now=later, limit=10, lease=60)
    assert row.lease_token is not None
    stale = OutboxResult(row.id, row.lease_token, "delivered", 1, None, None, later)
    assert await store.finish_outbox([stale]) == set()
    assert again.lease_token is not None
    ok = OutboxResult(again.id, again.lease_token, "delivered", 1, None, None, later)
    assert await store.finish_outbox([ok]) == {again.id}
    (done,) = await store.list_outbox(order.id)
    assert (done.state, done.attempts, done.delivered_at) == ("delivered", 1, later)


async def test_skipped_notifications_are_not_delivered(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    (order,) = await claim(store)
    await store.apply(
        [
            Write(
                finish(order, NOW),
                order.lease_token,
                OutboxItem("order.failed", "{}", state="skipped"),
            )
        ]
    )
    assert await store.claim_outbox(now=NOW, real_now=NOW, limit=10, lease=60) == []
    (row,) = await store.list_outbox(order.id)
    assert row.state == "skipped"


# ---------------------------------------------------------------- housekeeping


async def test_prune_keeps_a_tombstone_so_the_order_no_stays_taken(store: SqlStore) -> None:
    await store.insert_orders([new_order("OLD"), new_order("OPEN")], now=NOW)
    old, _ = await claim(store)
    assert old.order_no == "OLD"
    await store.apply([Write(finish(old, NOW), old.lease_token, OutboxItem("order.failed", "{}"))])
    later = NOW + timedelta(days=40)
    assert await store.prune(finished_before=later - timedelta(days=30), now=later) == 1
    assert await store.get_order("OLD") is None
    assert await store.get_order("OPEN") is not None  # never prunes an open order
    assert await store.prune(finished_before=later, now=later) == 0
    with pytest.raises(Conflict, match="pruned"):
        await store.insert_orders([new_order("OLD")], now=later)


async def test_pause_hides_a_vendors_orders_from_claims(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1"), new_order("B1", vendor="beta")], now=NOW)
    assert await store.pause_vendor("acme", now=NOW, actor="op", note="vendor asked") is True
    assert await store.pause_vendor("acme", now=NOW, actor="op", note=None) is False
    assert [o.order_no for o in await claim(store)] == ["B1"]
    assert await store.next_due_at(now=NOW, real_now=NOW) is None
    assert await store.resume_vendor("acme") is True
    assert [o.order_no for o in await claim(store)] == ["A1"]


async def test_open_circuit_hides_a_vendor_until_it_closes_by_itself(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1"), new_order("B1", vendor="beta")], now=NOW)
    until = NOW + timedelta(minutes=5)
    assert await store.open_circuit("acme", now=NOW, until=until, note="3 timeouts") is True
    assert await store.open_circuits(now=NOW) == {"acme": until}
    assert await store.paused_vendors() == {}  # an operator's pause is another thing
    assert [o.order_no for o in await claim(store)] == ["B1"]
    assert await store.next_due_at(now=NOW, real_now=NOW) is None
    # once its time is over, the vendor's orders are claimed again, row or no row
    later = NOW + timedelta(minutes=6)
    assert await store.open_circuits(now=later) == {}
    assert [o.order_no for o in await claim(store, now=later, real_now=NOW)] == ["A1"]
    assert await store.close_circuit("acme") is True
    assert await store.close_circuit("acme") is False


async def test_circuit_breaker_never_overrides_an_operators_pause(store: SqlStore) -> None:
    await store.insert_orders([new_order("A1")], now=NOW)
    assert await store.pause_vendor("acme", now=NOW, actor="op", note=None) is True
    until = NOW + timedelta(minutes=5)
    assert await store.open_circuit("acme", now=NOW, until=until, note="x") is False
    assert await store.close_circuit("acme") is False  # the operator's pause stays
    assert list(await store.paused_vendors()) == ["acme"]
    assert await claim(store, now=NOW + timedelta(hours=1)) == []
    # and an operator pausing a vendor whose breaker is open makes it a lasting pause
    await store.resume_vendor("acme")
    await store.open_circuit("acme", now=NOW, until=until, note="x")
    assert await store.pause_vendor("acme", now=NOW, actor="op", note=None) is True
    assert await store.open_circuits(now=NOW) == {}
    assert await claim(store, now=NOW + timedelta(hours=1)) == []


async def test_a_connection_dropped_while_idle_is_replaced_before_use(store: SqlStore) -> None:
    """No ping before every transaction (it would double the hot path's round trips), but a
    pooled connection that sat idle is checked first, so a server restart or an idle
    timeout that dropped it costs the next caller nothing."""
    if store.dialect == "sqlite":
        pytest.skip("SQLite has no server connection to drop")
    await store.insert_orders([new_order("A1")], now=NOW)
    admin = sa.create_engine(store.engine.url, poolclass=sa.NullPool)
    with admin.connect() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            ids = conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            ).scalars()
            for i in list(ids):
                conn.exec_driver_sql(f"KILL CONNECTION {int(i)}")
    admin.dispose()
    await asyncio.sleep(IDLE_PING + 0.2)
    assert [o.order_no for o in await claim(store)] == ["A1"]


async def test_concurrent_upgrades_do_not_collide(store: SqlStore) -> None:
    others = [SqlStore(store.url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.upgrade() for s in others))
        await store.ensure_schema(auto_upgrade=False)
    finally:
        for s in others:
            await s.close()


async def test_listen_wakes_on_new_orders_on_postgresql(store: SqlStore) -> None:
    if store.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; other databases sleep until due")
    woken = asyncio.Event()
    listener = asyncio.create_task(store.listen(woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 5)  # the first wake after LISTEN
        woken.clear()
        await store.insert_orders([new_order("N1")], now=NOW)
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


# ---------------------------------------------------------------- SQLite: hot calls inline


async def test_sqlite_hot_calls_wait_for_a_lock_off_the_event_loop(tmp_path: Path) -> None:
    """On a SQLite file the worker's claim and write-back run on the event loop's thread.
    While another process holds the write lock they must not block the loop: the call
    waits on the database thread, the loop keeps serving, and the claim completes once
    the lock is released."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    store = SqlStore(url)
    try:
        await store.ensure_schema(auto_upgrade=True)
        await store.insert_orders([new_order("L1"), new_order("L2")], now=NOW)
        assert store._inline  # the fast path is on for a file
        handed_over = count_handovers(store)

        # uncontended: the claim, the write-back and the next due time stay on this thread
        (first,) = await claim(store, limit=1)
        assert await store.apply([Write(finish(first, NOW), first.lease_token)]) == {first.id}
        assert await store.next_due_at(now=NOW, real_now=NOW) == NOW
        assert handed_over == []

        other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing: the lock is taken
        try:
            claiming = asyncio.create_task(claim(store, limit=5))
            started = time.monotonic()
            for _ in range(30):  # 0.3 s in which the loop must keep turning
                await asyncio.sleep(0.01)
            stalled = time.monotonic() - started - 0.3
            assert not claiming.done()  # still waiting for the lock, not failed
        finally:
            other.execute("ROLLBACK")
            other.close()
        (second,) = await asyncio.wait_for(claiming, 10)
        assert second.order_no == "L2"
        assert stalled < 1.0, f"the event loop stalled {stalled:.1f} s on a locked database"
        assert len(handed_over) == 1  # the locked claim went to the database thread
    finally:
        await store.close()


async def test_sqlite_inline_transactions_are_all_or_nothing(tmp_path: Path) -> None:
    """The hot calls' transactions on the loop's thread are begun and ended on the
    driver's connection: a call that fails half-way leaves nothing written and the next
    one starts clean; a statement run through SQLAlchemy joins the same transaction; what
    commits is seen by another connection; a durable one is fsynced (synchronous=FULL)
    and the writes after it are not."""
    path = tmp_path / "inline.db"
    store = SqlStore(f"sqlite:///{path}")
    try:
        await store.ensure_schema(auto_upgrade=True)
        await store.insert_orders([new_order("I1")], now=NOW)
        handed_over = count_handovers(store)

        def set_sku(sku: str, *, fail: bool = False, through_sqlalchemy: bool = False) -> Any:
            def work(conn: sa.Connection) -> str:
                if through_sqlalchemy:
                    conn.execute(sa.text("UPDATE orders SET sku = :sku"), {"sku": sku})
                else:
                    cur = conn.connection.cursor()
                    cur.execute("UPDATE orders SET sku = ?", (sku,))
                    cur.close()
                if fail:
                    raise RuntimeError("half-way")
                row = conn.connection.cursor().execute("PRAGMA synchronous").fetchone()
                return {1: "NORMAL", 2: "FULL"}[row[0]]

            return work

        def stored_sku() -> str:
            other = sqlite3.connect(path)
            try:
                return str(other.execute("SELECT sku FROM orders").fetchone()[0])
            finally:
                other.close()

        with pytest.raises(RuntimeError, match="half-way"):
            await store._run(set_sku("HALF", fail=True), hot=True)
        assert stored_sku() == "SKU-1001"
        assert await store._run(set_sku("RAW"), hot=True) == "NORMAL"
        assert stored_sku() == "RAW"
        with pytest.raises(RuntimeError, match="half-way"):
            await store._run(set_sku("HALF", fail=True, through_sqlalchemy=True), hot=True)
        assert stored_sku() == "RAW"
        assert await store._run(set_sku("CORE", through_sqlalchemy=True), hot=True) == "NORMAL"
        assert stored_sku() == "CORE"
        assert await store._run(set_sku("FSYNCED"), hot=True, durable=True) == "FULL"
        assert await store._run(set_sku("AFTER"), hot=True) == "NORMAL"
        assert stored_sku() == "AFTER"
        assert handed_over == []  # all of it on the loop's thread

        def broken(conn: sa.Connection) -> None:
            conn.invalidate()  # as SQLAlchemy does when the driver reports a dead connection
            raise RuntimeError("connection lost")

        with pytest.raises(RuntimeError, match="connection lost"):
            await store._run(broken, hot=True)
        assert await store._run(set_sku("AGAIN"), hot=True) == "NORMAL"  # on a new one
        assert stored_sku() == "AGAIN"

        def fails_at_commit(conn: sa.Connection) -> None:
            """A statement through SQLAlchemy whose foreign key is checked at COMMIT."""
            conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            conn.execute(
                sa.text("INSERT INTO order_events (order_id, at, kind) VALUES (999, :at, 'x')"),
                {"at": "2026-11-26 08:00:00.000000"},
            )

        with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"):
            await store._run(fails_at_commit, hot=True)
        # both transactions ended: the next call, through SQLAlchemy too, starts clean
        assert await store._run(set_sku("NEXT", through_sqlalchemy=True), hot=True) == "NORMAL"
        assert stored_sku() == "NEXT"
        # a driver transaction left open (a failure that could not roll back) is ended
        # before the next one begins, not met with "cannot start a transaction"
        assert store._hot_conn is not None
        store._hot_conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        assert await store._run(set_sku("CLEAN"), hot=True) == "NORMAL"
        assert stored_sku() == "CLEAN"
    finally:
        await store.close()


def count_handovers(store: SqlStore) -> list[object]:
    """Every call the store hands to its database thread, from now on."""
    handed_over: list[object] = []
    submit = store._executor.submit

    def counting(fn: Callable[..., object], /, *args: object, **kwargs: object) -> object:
        handed_over.append(fn)
        return submit(fn, *args, **kwargs)

    store._executor.submit = counting  # type: ignore[method-assign,assignment]
    return handed_over


def test_sqlite_busy_is_recognised_from_the_driver_and_from_sqlalchemy(tmp_path: Path) -> None:
    """The hot work runs driver SQL on the raw cursor, so a locked database may surface as
    sqlite3's own error or wrapped by SQLAlchemy; both (and SQLITE_BUSY's extended codes)
    send the call to the database thread, and no other error does."""
    from orderwatch.store.sql import _sqlite_busy

    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError) as raw:
            waiter.execute("BEGIN IMMEDIATE")
        waiter.close()
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with pytest.raises(sa.exc.OperationalError) as wrapped, engine.connect() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        engine.dispose()
    finally:
        holder.close()
    assert _sqlite_busy(raw.value)
    assert _sqlite_busy(wrapped.value)
    recovery = sqlite3.OperationalError("database is locked")
    recovery.sqlite_errorcode = 5 | (1 << 8)  # type: ignore[attr-defined]  # BUSY_RECOVERY
    assert _sqlite_busy(recovery)
    with pytest.raises(sqlite3.OperationalError) as other:
        sqlite3.connect(":memory:").execute("SELECT * FROM missing")
    assert not _sqlite_busy(other.value)


async def test_sqlite_in_memory_store_keeps_every_call_on_one_thread(tmp_path: Path) -> None:
    """An in-memory SQLite database is one connection per thread, so its hot calls must
    not take the inline path (they would see an empty database of their own)."""
    store = SqlStore("sqlite:///:memory:")
    try:
        assert not store._inline
        await store.ensure_schema(auto_upgrade=True)
        await store.insert_orders([new_order("M1")], now=NOW)
        (order,) = await claim(store)
        assert order.order_no == "M1"
    finally:
        await store.close()


async def test_sqlite_durable_commits_leave_the_loop_when_the_disk_is_slow(
    tmp_path: Path,
) -> None:
    """A group of SENT marks is fsynced before its requests leave. On a fast disk that
    commit runs on the loop's thread; when such commits take longer than SLOW_DURABLE (a
    network disk), they move to the database thread so the loop does not stall on each
    fsync, and an inline probe now and then brings them back once the disk is fast. A
    slow commit now and then among fast ones (a WAL checkpoint) does not move them."""
    import threading

    from orderwatch.store import sql

    store = SqlStore(f"sqlite:///{tmp_path / 'slow.db'}")
    try:
        await store.ensure_schema(auto_upgrade=True)

        def where(delay: float) -> Callable[[sa.Connection], str]:
            def fn(conn: sa.Connection) -> str:
                conn.exec_driver_sql("SELECT 1")
                time.sleep(delay)  # what a slow fsync costs the thread that commits
                return threading.current_thread().name

            return fn

        async def durable(delay: float = 0.0) -> str:
            return await store._run(where(delay), durable=True, hot=True)

        loop_thread = threading.current_thread().name
        db_thread = "orderwatch-db_0"
        slow = 1.5 * sql.SLOW_DURABLE
        assert await durable() == loop_thread  # fast disk: inline
        # a slow commit now and then (a WAL checkpoint) leaves them on the loop
        for _ in range(5):
            assert await durable(slow) == loop_thread
            for _ in range(sql.DURABLE_WINDOW):
                await durable()
        assert [await durable() for _ in range(sql.DURABLE_PROBE)] == [
            loop_thread
        ] * sql.DURABLE_PROBE
        # the disk turns slow: after a few slow commits in a row they leave the loop
        inline = 0
        while await durable(slow) == loop_thread:
            inline += 1
        assert 1 <= inline <= sql.DURABLE_SLOW_COUNT  # (fewer if a fast one was slow too)
        names = [await durable() for _ in range(sql.DURABLE_PROBE)]
        # off the loop's thread, but for the one probe that looks at the disk again
        assert names.count(db_thread) == sql.DURABLE_PROBE - 1, names
        # (and the slow commit that ended the run above): probes are not counted
        assert store.durable_commits_off_loop == 1 + names.count(db_thread)
        # the probes find the disk fast again; soon every durable commit is back inline
        for _ in range(10 * sql.DURABLE_PROBE):
            await durable()
        assert await durable() == loop_thread
        # a disk that stalls on one fsync in three is slow too: however long the stalls,
        # they would hold up the loop, so the commits leave it within a few windows
        names = []
        for i in range(3 * sql.DURABLE_WINDOW):
            names.append(await durable(slow if i % 3 == 0 else 0.0))
        assert db_thread in names, names
        # writes without an fsync stay inline throughout
        assert await store._run(where(0.0), hot=True) == loop_thread
    finally:
        await store.close()


async def test_order_nos_differing_in_case_are_two_orders(store: SqlStore) -> None:
    """order_no is case-sensitive (A-Za-z0-9_-) on every database: MariaDB's default
    collation made r1 a duplicate of R1 (the API answered 500) and a lookup of one
    found the other (showing another customer's order)."""
    await store.insert_orders([new_order("R20261126000001")], now=NOW)
    result = await store.insert_orders([new_order("r20261126000001")], now=NOW)
    assert [o.order_no for o in result.created] == ["r20261126000001"]
    found = await store.get_order("r20261126000001")
    assert found is not None
    assert found.order_no == "r20261126000001"


async def test_vendor_names_and_customer_ids_differing_in_case_are_apart(
    store: SqlStore,
) -> None:
    """MariaDB's default collation ignores case: a filter (and so a bulk action) for
    customer c1 also took C1's orders, and pausing acme held back ACME's too."""
    await store.insert_orders(
        [
            new_order("A1", customer_id="c1"),
            new_order("A2", customer_id="C1"),
            new_order("B1", vendor="ACME", customer_id="C1"),
        ],
        now=NOW,
    )
    by_customer = await store.list_orders(OrderFilter(customer_id="c1"))
    assert [o.order_no for o in by_customer] == ["A1"]
    by_vendor = await store.list_orders(OrderFilter(vendor="ACME"))
    assert [o.order_no for o in by_vendor] == ["B1"]
    assert await store.pause_vendor("acme", now=NOW, actor="op", note=None) is True
    assert await store.pause_vendor("ACME", now=NOW, actor="op", note=None) is True  # another
    assert await store.resume_vendor("ACME") is True
    assert sorted(await store.paused_vendors()) == ["acme"]
    assert [o.order_no for o in await claim(store)] == ["B1"]
    assert (await store.counts(now=NOW)).by_vendor == {
        "acme": {"PENDING": 2},
        "ACME": {"PENDING": 1},
    }
