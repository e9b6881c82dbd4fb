"""The claim and write-back statements as driver SQL, for the hot path.

Every vendor call costs one claimed row, one row written back and one event inserted.
SQLAlchemy Core's per-statement and per-row processing cost more than the database work
itself at that rate, so these few statements are written out once per dialect and run on
the DBAPI cursor of the same connection and transaction (``executemany`` for batches). The
column lists come from :mod:`.schema`, so the two cannot drift apart; everything else in
the store stays on SQLAlchemy Core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .. import jsontext
from ..lifecycle import Event
from ..order import Order, Recipient
from ..statuses import Reason, Status
from .base import OutboxItem, Write
from .schema import ORDER_COLUMNS, order_events

_EVENT_COLUMNS = tuple(c.name for c in order_events.columns if c.name != "id")
#: What a write-back that gives the row back clears.
_LEASE_COLUMNS = ("locked_by", "locked_until", "lease_token")
#: What a transition's notification row carries (the rest has defaults).
OUTBOX_COLUMNS = (
    "order_id",
    "order_no",
    "event_type",
    "payload",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
)
#: PostgreSQL array types for the columns bound as arrays in the one-statement write-back.
_PG_TYPES = {
    "id": "bigint",
    "order_id": "bigint",
    "token": "text",
    "release": "boolean",
    "queries": "integer",
    "abnormal": "integer",
    "takeovers": "integer",
    "placements": "integer",
    "unknown_streak": "integer",
    "attempt": "integer",
    "http_status": "integer",
    "attempts": "integer",
    "latency_ms": "double precision",
    "next_run_at": "timestamp",
    "started_at": "timestamp",
    "placed_at": "timestamp",
    "updated_at": "timestamp",
    "at": "timestamp",
    "next_attempt_at": "timestamp",
    "created_at": "timestamp",
}


#: SQLite's hot multi-row writes (the claim's lease, a write-back's rows, events and
#: notifications) say ``OR FAIL``: a multi-row statement that may abort halfway (a NOT NULL
#: column, say) otherwise keeps a statement journal to undo itself alone, and past 64 KiB
#: that journal spills to a temporary file, two ``pwrite`` calls per page it changes. The
#: write-backs and claims spilled all the time: without it, a quarter fewer ``pwrite``
#: calls (strace of ``bench/store_ops.py``) and bytes written. FAIL stops at the failing
#: row without undoing the rows before it, which changes nothing here: every hot statement
#: runs inside a transaction that is rolled back as a whole on any error (``SqlStore._tx``;
#: test_store.py::test_a_write_back_refused_halfway_leaves_nothing_written).
SQLITE_OR_FAIL = "OR FAIL "

_SQLITE_HELD = (
    "SELECT json_group_array(json_array(id, lease_token)) FROM orders"
    " WHERE id IN (SELECT value FROM json_each(?))"
)


def json_ids(ids: Sequence[int]) -> str:
    """Ids bound as one JSON parameter, for ``id IN (SELECT value FROM json_each(?))``."""
    return jsontext.dumps(ids)


def _id_list(ids: Iterable[int]) -> str:
    """Our own ids inlined in SQL: as integers, so nothing else can get in."""
    return ",".join(str(int(i)) for i in ids)


def _unnest(prefix: str, columns: Sequence[str], *, ordinal: bool = False) -> str:
    """``unnest(:prefix_col::type[], ...) AS prefix(col, ...)``: one bound array per column."""
    arrays = ", ".join(f"CAST(:{prefix}_{c} AS {_PG_TYPES.get(c, 'text')}[])" for c in columns)
    names = ", ".join((*columns, "ord") if ordinal else columns)
    return f"unnest({arrays}){' WITH ORDINALITY' if ordinal else ''} AS {prefix}({names})"


#: The columns a transition writes back (fenced by the lease token).
WRITE_COLUMNS = (
    "status",
    "reason",
    "description",
    "vendor_order_id",
    "vendor_status",
    "logistics",
    "queries",
    "abnormal",
    "takeovers",
    "placements",
    "unknown_streak",
    "next_run_at",
    "started_at",
    "placed_at",
    "updated_at",
)
_STATUS = {s.value: s for s in Status}
_REASON = {r.value: r for r in Reason}


_SKIP = "/*skip*/"  # where a claim leaves out vendors with a backlog (HotPath.skipping)


class TimeTexts:
    """The text of datetimes written or read lately, by object. On SQLite every time is
    bound as text, and formatting one costs ~2 µs; a write-back binds the same objects
    several times (a transition's time is its ``updated_at``, its event's and its
    notification's; an order's start and placement times come back unchanged from its
    claim). Keyed by ``id()``, with the object kept alive beside its text so that the id
    cannot name another object meanwhile; two generations of ``size`` entries, so memory
    is bounded and an entry lives at least ``size`` entries long (a claim's times are
    written back within a fraction of a second). Safe to share between threads: each
    step is one dict operation, and a lost entry only means formatting again."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._young: dict[int, tuple[datetime, str]] = {}
        self._old: dict[int, tuple[datetime, str]] = {}

    def get(self, value: datetime) -> str | None:
        key = id(value)
        known = self._young.get(key) or self._old.get(key)
        if known is not None and known[0] is value:
            return known[1]
        return None

    def keep(self, value: datetime, text: str) -> None:
        young = self._young
        if len(young) >= self.size:
            self._old, self._young = young, {}
            young = self._young
        young[id(value)] = (value, text)


class HotPath:
    """Driver SQL for one dialect: ``sqlite``, ``postgresql`` or ``mysql``."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.text_times = dialect == "sqlite"  # SQLite keeps times as ISO text
        self._texts = TimeTexts()
        lock = {
            "postgresql": " FOR UPDATE OF orders SKIP LOCKED",
            "mysql": " FOR UPDATE SKIP LOCKED",
        }.get(dialect, "")
        cols = ", ".join(ORDER_COLUMNS)
        # an operator's pause lasts until resumed; a circuit breaker's until its end
        not_paused = (
            "vendor NOT IN (SELECT vendor FROM vendor_pauses WHERE until IS NULL OR until > :now)"
        )
        self.claim_select = self._sql(
            f"SELECT {cols} FROM orders WHERE next_run_at IS NOT NULL AND next_run_at <= :now"
            " AND (locked_until IS NULL OR locked_until < :real_now)"
            f" AND {not_paused}{_SKIP} ORDER BY next_run_at LIMIT :limit{lock}"
        )
        # One statement leases the whole batch: each row's token is the claim's random
        # prefix followed by the row's id (distinct per row; the prefix has a fixed length,
        # so no two claims can spell the same token), and a lease that was never released
        # counts a takeover (SET sees the old locked_until).
        token = {
            "mysql": "CONCAT(:token, id)",
            "postgresql": "CAST(:token AS VARCHAR) || CAST(id AS VARCHAR)",
        }.get(dialect, ":token || id")
        # (takeovers first: MySQL evaluates SET left to right with the new values)
        self._claim_update = self._sql(
            "UPDATE orders SET takeovers = takeovers"
            " + CASE WHEN locked_until IS NULL THEN 0 ELSE 1 END,"
            " locked_by = :locked_by, locked_until = :locked_until,"
            f" lease_token = {token} WHERE id IN (<ids>)"
        )
        # SQLite (3.38+): the ids as one JSON parameter, so that the text never changes and
        # the driver's statement cache keeps it compiled (see sql._cacheable_chunks).
        self.sqlite_claim_update = self._claim_update.replace(
            "UPDATE orders", f"UPDATE {SQLITE_OR_FAIL}orders"
        ).replace("<ids>", "SELECT value FROM json_each(:ids)")
        sets = ", ".join(f"{c} = :{c}" for c in WRITE_COLUMNS)
        self.write_keep = self._sql(
            f"UPDATE orders SET {sets} WHERE id = :b_id AND lease_token = :b_token"
        )
        self.write_release = self._sql(
            f"UPDATE orders SET {sets}, locked_by = NULL, locked_until = NULL,"
            " lease_token = NULL WHERE id = :b_id AND lease_token = :b_token"
        )
        self.insert_event = self._sql(
            f"INSERT INTO order_events ({', '.join(_EVENT_COLUMNS)})"
            f" VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)})"
        )
        self.held_lock = " FOR UPDATE" if dialect in ("postgresql", "mysql") else ""
        self.next_due = self._sql(
            "SELECT next_run_at FROM orders WHERE next_run_at IS NOT NULL"
            " AND (locked_until IS NULL OR locked_until < :real_now)"
            f" AND {not_paused}{_SKIP} ORDER BY next_run_at LIMIT 1"
        )

        if dialect == "postgresql":
            self._pg_statements(cols, not_paused)
        if dialect == "sqlite":
            # The whole batch as one JSON value: one sqlite3 step instead of one per row.
            # Every step releases and retakes the GIL, and with the event loop busy in the
            # other thread each retake is a wait and a context switch.
            cells = ", ".join(ORDER_COLUMNS)
            self.sqlite_claim = (
                f"SELECT json_group_array(json_array({cells})) FROM (" + self.claim_select + ")"
            )

    def _pg_statements(self, cols: str, not_paused: str) -> None:
        """PostgreSQL: a claim and a write-back are one statement each, run in autocommit
        (one round trip, atomic: data-modifying CTEs), so a batch of 100 vendor calls costs
        the database two round trips, not a dozen."""
        picked = (
            "SELECT id, locked_until AS was_locked FROM orders"
            " WHERE next_run_at IS NOT NULL AND next_run_at <= :now"
            " AND (locked_until IS NULL OR locked_until < :real_now)"
            f" AND {not_paused}{_SKIP} ORDER BY next_run_at LIMIT :limit FOR UPDATE SKIP LOCKED"
        )
        returned = ", ".join(f"o.{c}" for c in cols.split(", "))
        self.pg_claim = self._sql(
            f"WITH picked AS ({picked}),"
            " claimed AS (UPDATE orders o SET"
            " takeovers = o.takeovers + CASE WHEN p.was_locked IS NULL THEN 0 ELSE 1 END,"
            " locked_by = :locked_by, locked_until = :locked_until,"
            " lease_token = CAST(:token AS VARCHAR) || CAST(o.id AS VARCHAR)"
            f" FROM picked p WHERE o.id = p.id RETURNING {returned}, p.was_locked),"
            " taken AS (INSERT INTO order_events"
            " (order_id, at, kind, from_status, to_status, actor, detail)"
            " SELECT id, :at, 'takeover', status, status, :locked_by, :takeover_detail"
            " FROM claimed WHERE was_locked IS NOT NULL)"
            f" SELECT {cols} FROM claimed ORDER BY next_run_at"
        )
        w = ", ".join(f"{c} = v.{c}" for c in WRITE_COLUMNS)
        v_cols = ("id", "token", "release", *WRITE_COLUMNS)
        release = ", ".join(
            f"{c} = CASE WHEN v.release THEN NULL ELSE o.{c} END" for c in _LEASE_COLUMNS
        )
        e_cols = ", ".join(_EVENT_COLUMNS)
        n_cols = ", ".join(OUTBOX_COLUMNS)
        self.pg_apply = self._sql(
            f"WITH v AS (SELECT * FROM {_unnest('v', v_cols)}),"
            f" w AS (UPDATE orders o SET {w}, {release} FROM v"
            " WHERE o.id = v.id AND o.lease_token = v.token RETURNING o.id),"
            f" e AS (INSERT INTO order_events ({e_cols})"
            f" SELECT {e_cols} FROM {_unnest('e', _EVENT_COLUMNS, ordinal=True)}"
            " WHERE order_id IN (SELECT id FROM w) ORDER BY ord),"
            f" n AS (INSERT INTO outbox ({n_cols})"
            f" SELECT {n_cols} FROM {_unnest('n', OUTBOX_COLUMNS, ordinal=True)}"
            " WHERE order_id IN (SELECT id FROM w) ORDER BY ord)"
            " SELECT id FROM w"
        )

    def pg_apply_params(self, writes: Sequence[Write]) -> dict[str, list[Any]]:
        """The arrays :attr:`pg_apply` binds: one element per order, event, notification."""
        t = self.time_in
        v: dict[str, list[Any]] = {c: [] for c in ("id", "token", "release", *WRITE_COLUMNS)}
        e: dict[str, list[Any]] = {c: [] for c in _EVENT_COLUMNS}
        n: dict[str, list[Any]] = {c: [] for c in OUTBOX_COLUMNS}
        for w in writes:
            order = w.transition.order
            v["id"].append(order.id)
            v["token"].append(w.token)
            v["release"].append(w.release)
            for c, value in zip(WRITE_COLUMNS, written_values(order, t), strict=True):
                v[c].append(value)
            for ev in w.transition.events:
                for c, value in event_fields(order.id, ev, t).items():
                    e[c].append(value)
            if w.outbox is not None:
                for c, value in outbox_fields(order, w.outbox, t).items():
                    n[c].append(value)
        params: dict[str, list[Any]] = {}
        for prefix, arrays in (("v", v), ("e", e), ("n", n)):
            for c, values in arrays.items():
                params[f"{prefix}_{c}"] = values
        return params

    def sqlite_held(self, ids: Sequence[int]) -> tuple[str, tuple[str]]:
        """:meth:`held` as one JSON value ``[[id, token], ...]`` (one step), the ids bound
        as one JSON parameter (one text for any number of ids: compiled once)."""
        return _SQLITE_HELD, (json_ids(ids),)

    def sqlite_write(self, writes: Sequence[Write]) -> tuple[str, list[Any]]:
        """SQLite: every row of a write-back in one ``UPDATE … FROM (VALUES …)``; the rows
        were checked by :meth:`sqlite_held` in the same (immediate) transaction."""
        n = len(WRITE_COLUMNS)
        sets = ", ".join(f"{c} = v.column{i + 3}" for i, c in enumerate(WRITE_COLUMNS))
        release = ", ".join(
            f"{c} = CASE WHEN v.column2 THEN NULL ELSE {c} END" for c in _LEASE_COLUMNS
        )
        row = "(" + ", ".join("?" * (n + 2)) + ")"
        values = ", ".join([row] * len(writes))
        sql = (
            f"UPDATE {SQLITE_OR_FAIL}orders SET {sets}, {release} FROM (VALUES {values}) AS v"
            " WHERE orders.id = v.column1"
        )
        return sql, self._write_rows(writes)

    def insert_events(self, rows: Sequence[dict[str, Any]]) -> tuple[str, list[Any]]:
        """SQLite: many ``order_events`` rows in one multi-row INSERT (one step)."""
        return _insert_rows("order_events", _EVENT_COLUMNS, rows)

    def insert_outbox(self, rows: Sequence[dict[str, Any]]) -> tuple[str, list[Any]]:
        """SQLite: many ``outbox`` rows in one multi-row INSERT (one step)."""
        return _insert_rows("outbox", OUTBOX_COLUMNS, rows)

    def mysql_write(self, writes: Sequence[Write]) -> tuple[str, tuple[Any, ...]]:
        """MySQL/MariaDB: every row of a write-back in one UPDATE (a join with the rows
        as a derived table), instead of one statement per row; the rows were checked and
        locked by :meth:`held` in the same transaction, so the join needs no token."""
        cols = ("id", "release_", *WRITE_COLUMNS)
        first = "SELECT " + ", ".join(f"%s AS {c}" for c in cols)
        other = "SELECT " + ", ".join("%s" for _ in cols)
        rows = " UNION ALL ".join([first, *([other] * (len(writes) - 1))])
        sets = ", ".join(f"o.{c} = v.{c}" for c in WRITE_COLUMNS)
        release = ", ".join(f"o.{c} = IF(v.release_, NULL, o.{c})" for c in _LEASE_COLUMNS)
        sql = f"UPDATE orders o JOIN ({rows}) v ON o.id = v.id SET {sets}, {release}"
        return sql, tuple(self._write_rows(writes))

    def _write_rows(self, writes: Sequence[Write]) -> list[Any]:
        """``id, release, *WRITE_COLUMNS`` of each write, flat, for the one-statement
        write-backs (the rows were checked by :meth:`held` in the same transaction)."""
        params: list[Any] = []
        for w in writes:
            params.extend(self.write_row(w.transition.order, w.release))
        return params

    def write_row(self, order: Order, release: bool) -> tuple[Any, ...]:
        """``id, release, *WRITE_COLUMNS`` of one write, as a tuple (2.1 against 4.9 µs
        through :func:`order_fields`' dict, once per vendor call)."""
        return (order.id, 1 if release else 0, *written_values(order, self.time_in))

    def _sql(self, text: str) -> str:
        if self.dialect == "sqlite":
            return text  # sqlite3 takes :name with a dict
        return re.sub(r":(\w+)", r"%(\1)s", text)  # psycopg, pymysql: pyformat

    def skipping(self, sql: str, vendors: Sequence[str]) -> tuple[str, dict[str, str]]:
        """A claim or next-due statement that leaves ``vendors`` out, and the parameters
        that name them (none: the statement's usual text, so statement caches still hit)."""
        if not vendors:
            return sql.replace(_SKIP, ""), {}
        names = {f"skip{i}": v for i, v in enumerate(vendors)}
        clause = self._sql(" AND vendor NOT IN (" + ", ".join(f":{n}" for n in names) + ")")
        return sql.replace(_SKIP, clause), names

    def claim_update(self, ids: Iterable[int]) -> str:
        """Lease the claimed rows (ids are ours, inlined as integers)."""
        return self._claim_update.replace("<ids>", _id_list(ids))

    def held(self, ids: Iterable[int]) -> str:
        """Which lease token each order holds now (ids are ours, inlined as integers)."""
        return f"SELECT id, lease_token FROM orders WHERE id IN ({_id_list(ids)}){self.held_lock}"

    # ---------------------------------------------------------------- values

    def time_in(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if self.text_times:
            text = self._texts.get(value)
            if text is not None:
                return text
            if value.tzinfo is UTC:  # the usual case: slice the "+00:00" off, no copies
                text = value.isoformat(" ", "microseconds")[:26]
                self._texts.keep(value, text)
                return text
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return value.astimezone(UTC).replace(tzinfo=None)

    def time_out(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            if len(value) <= 26:  # naive UTC text, as time_in writes it: parse it aware
                return datetime.fromisoformat(value + "+00:00")
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]

    def _time_out_kept(self, value: Any) -> datetime | None:
        """:meth:`time_out` for a time that a write-back writes again unchanged (when the
        order started, when it was placed): its text is kept for :meth:`time_in`."""
        parsed = self.time_out(value)
        if parsed is not None and type(value) is str and len(value) == 26:
            self._texts.keep(parsed, value)
        return parsed

    def order(self, row: Sequence[Any], *, lease: str | None = None) -> Order:
        """The Order in a row of :data:`ORDER_COLUMNS`; ``lease``: the token of the claim
        that is taking the row (and a takeover counted if another lease was on it)."""
        t = self.time_out
        kept = self._time_out_kept if self.text_times else t
        # one unpacking, in ORDER_COLUMNS' order (test_hot_rows: a row read back)
        (
            id_,
            order_no,
            vendor,
            customer_id,
            sku,
            quantity,
            points,
            recipient,
            payment_status,
            _request_hash,
            status,
            reason,
            description,
            vendor_order_id,
            vendor_status,
            logistics,
            queries,
            abnormal,
            takeovers,
            placements,
            unknown_streak,
            next_run_at,
            started_at,
            placed_at,
            created_at,
            updated_at,
            _locked_by,
            locked_until,
            lease_token,
        ) = row
        if lease is not None and locked_until is not None:
            takeovers += 1  # a lease that was never released: its holder died or hung
        rec = jsontext.loads(recipient)
        return Order(
            id=id_,
            order_no=order_no,
            vendor=vendor,
            sku=sku,
            quantity=quantity,
            points=points,
            recipient=Recipient(rec["name"], rec["phone"], rec["address"]),
            payment_status=payment_status,
            customer_id=customer_id,
            status=_STATUS[status],
            reason=_REASON[reason] if reason else None,
            description=description,
            vendor_order_id=vendor_order_id,
            vendor_status=vendor_status,
            # a vendor's logistics may hold an integer beyond 64 bits: json keeps it exact
            logistics=jsontext.loads_exact(logistics) if logistics is not None else None,
            queries=queries,
            abnormal=abnormal,
            takeovers=takeovers,
            placements=placements,
            unknown_streak=unknown_streak,
            next_run_at=t(next_run_at),
            started_at=kept(started_at),  # type: ignore[arg-type]
            placed_at=kept(placed_at),
            created_at=t(created_at),  # type: ignore[arg-type]
            updated_at=t(updated_at),  # type: ignore[arg-type]
            lease_token=lease_token if lease is None else lease,
            locked_until=t(locked_until),
        )

    def write_params(self, order: Order, token: str | None) -> dict[str, Any]:
        return order_fields(order, token, self.time_in)

    def event_params(self, order_id: int, ev: Event) -> dict[str, Any]:
        return event_fields(order_id, ev, self.time_in)


def _same(value: datetime | None) -> Any:
    return value


def written_values(order: Order, time: Callable[[datetime | None], Any] = _same) -> tuple[Any, ...]:
    """What a transition writes, in :data:`WRITE_COLUMNS`' order; ``time`` turns datetimes
    into what the statement binds (driver SQL or SQLAlchemy)."""
    return (
        order.status.value,
        order.reason.value if order.reason else None,
        order.description,
        order.vendor_order_id,
        order.vendor_status,
        jsontext.dumps_or_none(order.logistics),
        order.queries,
        order.abnormal,
        order.takeovers,
        order.placements,
        order.unknown_streak,
        time(order.next_run_at),
        time(order.started_at),
        time(order.placed_at),
        time(order.updated_at),
    )


def order_fields(
    order: Order, token: str | None, time: Callable[[datetime | None], Any] = _same
) -> dict[str, Any]:
    """The columns a transition writes, keyed for the ``b_id``/``b_token`` guarded update
    (:func:`written_values` by column name)."""
    return {
        "b_id": order.id,
        "b_token": token,
        **dict(zip(WRITE_COLUMNS, written_values(order, time), strict=True)),
    }


def _insert_rows(
    table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> tuple[str, list[Any]]:
    one = "(" + ", ".join("?" * len(columns)) + ")"
    # rows made by event_fields / outbox_fields are keyed in column order, and one call's
    # rows all come from the same one, so the first row tells for all
    if tuple(rows[0]) == tuple(columns):
        params = [v for r in rows for v in r.values()]  # a third of the lookups' cost
    else:
        params = [r[c] for r in rows for c in columns]
    values = ", ".join([one] * len(rows))
    sql = f"INSERT {SQLITE_OR_FAIL}INTO {table} ({', '.join(columns)}) VALUES {values}"
    return sql, params


def outbox_fields(
    order: Order, item: OutboxItem, time: Callable[[datetime | None], Any] = _same
) -> dict[str, Any]:
    """The ``outbox`` row a transition's notification needs (keys: :data:`OUTBOX_COLUMNS`)."""
    return {
        "order_id": order.id,
        "order_no": order.order_no,
        "event_type": item.event_type,
        "payload": item.payload,
        "state": item.state,
        "attempts": 0,
        "next_attempt_at": time(order.updated_at) if item.state == "pending" else None,
        "created_at": time(order.updated_at),
    }


def event_fields(
    order_id: int, ev: Event, time: Callable[[datetime | None], Any] = _same
) -> dict[str, Any]:
    """One ``order_events`` row."""
    return {
        "order_id": order_id,
        "at": time(ev.at),
        "kind": ev.kind,
        "from_status": ev.from_status.value if ev.from_status else None,
        "to_status": ev.to_status.value if ev.to_status else None,
        "reason": ev.reason.value if ev.reason else None,
        "outcome": ev.outcome,
        "attempt": ev.attempt,
        "http_status": ev.http_status,
        "vendor_code": ev.vendor_code,
        "latency_ms": ev.latency_ms,
        "detail": jsontext.dumps_or_none(ev.detail),
        "actor": ev.actor,
    }
