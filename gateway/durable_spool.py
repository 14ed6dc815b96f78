"""The durable spool in front of the InfluxDB output: a point counts as accepted once it is on disk.

One SQLite file (WAL, synchronous=FULL) holds one row per accepted item: the item's line-protocol
lines joined by newlines, the sequence number of its first point (`seq0`), its point count, its
size and its wall-clock acceptance time. Points are numbered 1, 2, 3, ... without gaps over
everything ever accepted, and the numbering survives restarts (a `meta` table holds it with the
lifetime counters, written in the same transaction as the records they describe), so a consumer
can prove "nothing lost, nothing twice" from the numbers alone. SIGKILL or a power cut loses
nothing `put` has returned from (a power cut may undo the last commits: those records are then
delivered again, which InfluxDB absorbs).

Caps by logical size and by age drop whole oldest records, counted. A `put` that cannot be stored
(disk full, I/O error) is counted as refused and logged, never raised: the tick goes on.

Delivery is peek / commit, as with `gateway.output_queue.OutputQueue`. Pending records form two
streams: the BACKLOG (everything pending when the consumer last failed, or when the spool was
opened) and LIVE (everything newer). While both hold records, successive deliveries alternate
between them, so a long replay after an outage neither starves live data nor is starved by it.

SQLite's own WAL checkpoint would copy megabytes and sync the file inside a `put` every few
ticks (tens of ms on the event loop); a worker thread with its own connection does it instead.
A lock file (`<path>.lock`, flock) keeps a second process out for the spool's lifetime: the
in-memory counts and sequence numbers are only right if nobody else writes the file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_FORMAT = "linegate-spool-1"
# Only an outside reader (someone inspecting the file) can make SQLite wait; not for long.
_BUSY_TIMEOUT_MS = 1_000
# Bigger pages: fewer WAL frames per ~1 MB record, so checkpoints are quicker and finish
# between two puts (the WAL then restarts from its beginning instead of growing).
_PAGE_SIZE = 16_384
# Fold the WAL back into the file once roughly this much was written to it.
_CHECKPOINT_AFTER_BYTES = 4 << 20
# A write transaction also rewrites a few B-tree and meta pages besides the record itself.
_PAGES_PER_TRANSACTION = 3
# The WAL is reused after each checkpoint; this caps what it keeps on disk beyond that.
_JOURNAL_SIZE_LIMIT = 64 << 20
# Distinct error messages logged at WARNING; repeats go to DEBUG so a full disk can't flood.
_MAX_LOGGED_MESSAGES = 100
# While the caps keep dropping (a long outage), say so at WARNING at most this often.
_DROP_WARNING_INTERVAL_S = 60.0

_RECORDS_COLUMNS = [
    ("seq0", "INTEGER", 1),
    ("n", "INTEGER", 0),
    ("bytes", "INTEGER", 0),
    ("accepted", "REAL", 0),
    ("body", "TEXT", 0),
]
_META_COLUMNS = [("key", "TEXT", 1), ("value", "", 0)]
_SCHEMA = (
    "CREATE TABLE records (seq0 INTEGER PRIMARY KEY, n INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " accepted REAL NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
)
_COUNTERS = ("next_seq", "accepted_points", "delivered_points", "replayed_points", "dropped_points")


class SpoolError(ValueError):
    """The spool file cannot be used: not a database, not a spool, inconsistent, or locked."""


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """Caps on what the spool keeps; beyond them the oldest whole records are dropped."""

    max_bytes: int = 1 << 30  # logical bytes of stored text (sum of record bodies)
    max_age_s: float = 7 * 86400.0  # wall-clock age at which a record is dropped; 0 = no age cap

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        if not (self.max_age_s >= 0.0 and math.isfinite(self.max_age_s)):
            raise ValueError(f"max_age_s must be a finite number >= 0, got {self.max_age_s}")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot for metrics. Lifetime counters persist across restarts; the rest is this process."""

    pending_points: int
    pending_records: int
    pending_bytes: int
    oldest_age_s: float  # wall age of the oldest pending record, 0.0 when empty
    accepted_points: int
    delivered_points: int
    replayed_points: int  # delivered points that were backlog when delivered
    dropped_points: int  # dropped by the caps
    refused_points: int  # this process: put() could not store them, so they were never accepted
    last_drop_wall: float  # clock time of the last cap drop, -inf if none (this process)
    next_seq: int  # sequence number the next accepted point will get


@dataclass(frozen=True, slots=True)
class SpoolToken:
    """Names the records one `peek` returned: the seq0 range [first_seq0, last_seq0] of one stream.

    Sequence numbers are never reused, so a stale token can only ever name the records it was
    issued for (or none, once they are gone)."""

    first_seq0: int
    last_seq0: int
    backlog: bool


_NOTHING = SpoolToken(first_seq0=1, last_seq0=0, backlog=False)


@dataclass(frozen=True, slots=True)
class _Drop:
    """What a cap enforcement deleted, applied to the in-memory counts once its transaction commits."""

    records: int = 0
    points: int = 0
    size: int = 0
    backlog_records: int = 0


_NO_DROP = _Drop()


class _Checkpointer:
    """Folds the WAL back into the database file from a worker thread, off the event loop.

    Its connection only ever runs PASSIVE checkpoints, which never wait for or block the
    writer: a put during a checkpoint just appends behind it."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        # Used only by the worker thread until `close` has joined it.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._unfolded_bytes = 0
        self._wake = threading.Event()
        self._stopping = False
        self._warned = False
        self._thread = threading.Thread(target=self._run, name=f"spool-checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def wrote(self, nbytes: int) -> None:
        """A write transaction committed, adding about `nbytes` to the WAL."""
        self._unfolded_bytes += nbytes
        if self._unfolded_bytes >= _CHECKPOINT_AFTER_BYTES:
            self._unfolded_bytes = 0
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                # Harmless for the data (the WAL just grows until a checkpoint succeeds).
                log.log(
                    logging.DEBUG if self._warned else logging.WARNING,
                    "spool %s: WAL checkpoint failed: %s",
                    self.path,
                    exc,
                )
                self._warned = True

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._db.close()


class DurableSpool(Generic[T]):
    """SQLite-backed FIFO of line-protocol records (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        encode: Callable[[T, int], list[str]],
        limits: SpoolLimits = SpoolLimits(),
        clock: Callable[[], float] = time.time,
        *,
        _synchronous: Literal["FULL", "NORMAL"] = "FULL",  # NORMAL only to measure what FULL costs
    ) -> None:
        self.path = Path(path)
        self._encode = encode
        self.limits = limits
        self._clock = clock
        self._synchronous = _synchronous
        self._ready = asyncio.Event()
        self._logged_messages: set[str] = set()
        self._refused_points = 0
        self._last_drop_wall = -math.inf
        self._next_drop_warning = -math.inf  # time.monotonic()
        # Whether the last commit served LIVE: the next peek then prefers BACKLOG.
        self._served_live_last = False
        # Filled in by _load from the file.
        self._counters: dict[str, int] = {}
        self._pending_records = self._pending_points = self._pending_bytes = 0
        # Acceptance time of the oldest pending record; None: not known, looked up when asked
        # (so `stats()`, called every tick, reads the file only after the head changed).
        self._oldest_accepted: float | None = None
        self._backlog_mark = 0  # records with seq0 <= this are the BACKLOG stream
        self._backlog_records = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"spool {self.path}: cannot create its directory: {exc}") from exc
        self._lock_fd = self._take_lock()
        try:
            self._db: sqlite3.Connection | None = self._open(_synchronous)
            try:
                self._checkpointer = _Checkpointer(self.path, _synchronous)
            except sqlite3.Error as exc:
                self._db.close()
                raise SpoolError(f"spool {self.path}: cannot open a second connection: {exc}") from exc
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ----------------------------------------------------------------------------
    def _take_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise SpoolError(f"spool {self.path}: cannot open its lock file {lock_path}: {exc}") from exc
        try:
            # flock locks belong to the open file, so this also refuses a second spool in this
            # process; the kernel drops the lock when the holder dies, SIGKILL included.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise SpoolError(
                f"spool {self.path}: in use by another process (pid {holder} holds {lock_path}: {exc});"
                " two gateways cannot share a spool"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open(self, synchronous: str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: cannot open: {exc}") from exc
        try:
            self._prepare(db, synchronous)
        except sqlite3.Error as exc:
            db.close()
            raise SpoolError(f"spool {self.path}: not a usable spool file: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection, synchronous: str) -> None:
        db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # takes effect only on a new file
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"spool {self.path}: SQLite refused WAL mode (journal_mode is {mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA wal_autocheckpoint=0")  # the _Checkpointer's job
        db.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
                )
            }
            if not tables:
                for statement in _SCHEMA:
                    db.execute(statement)
                meta: dict[str, object] = {"format": _FORMAT, **dict.fromkeys(_COUNTERS, 0)}
                meta["next_seq"] = 1
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            self._load(db, tables)
            # Everything pending at open is being replayed after a restart.
            self._backlog_mark = self._counters["next_seq"] - 1
            self._backlog_records = self._pending_records
            now = self._clock()
            drop = self._drop_for_caps(db, now, incoming_bytes=0)
            if drop.records:
                self._store_counters(db, dropped_points=self._counters["dropped_points"] + drop.points)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._apply_drop(drop, now)

    def _load(self, db: sqlite3.Connection, tables: set[str]) -> None:
        if tables and tables != {"records", "meta"}:
            raise SpoolError(f"spool {self.path}: not a linegate spool (it holds tables {sorted(tables)})")
        for table, want in (("records", _RECORDS_COLUMNS), ("meta", _META_COLUMNS)):
            got = [
                (name, kind.upper(), pk)
                for _, name, kind, _, _, pk in db.execute(f"PRAGMA table_info({table})")
            ]
            if got != want:
                raise SpoolError(f"spool {self.path}: table {table} has columns {got}, expected {want}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT:
            raise SpoolError(
                f"spool {self.path}: meta format is {meta.get('format')!r}, expected {_FORMAT!r}"
            )
        counters: dict[str, int] = {}
        for key in _COUNTERS:
            value = meta.get(key)
            if not isinstance(value, int) or value < 0:
                raise SpoolError(f"spool {self.path}: meta {key} is {value!r}, expected an integer >= 0")
            counters[key] = value
        records, points, size = db.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(bytes), 0) FROM records"
        ).fetchone()
        last = db.execute("SELECT seq0 + n FROM records ORDER BY seq0 DESC LIMIT 1").fetchone()
        if counters["next_seq"] < max(1, last[0] if last else 1):
            raise SpoolError(
                f"spool {self.path}: meta next_seq {counters['next_seq']} is behind the stored records"
                f" (they end before {last[0] if last else 1})"
            )
        self._counters = counters
        self._pending_records = int(records)
        self._pending_points = int(points)
        self._pending_bytes = int(size)

    # -- accepting --------------------------------------------------------------------------
    def put(self, item: T, weight: int = 0) -> None:
        """Store `item`'s lines as one record, durably, then apply the caps. `weight` is ignored
        (the point count is the number of lines). Never raises for storage errors: the points are
        then counted as refused and their sequence numbers are given to the next put."""
        del weight
        db = self._connection()
        first = self._counters["next_seq"]
        lines = self._encode(item, first)
        if not lines:
            return
        n = len(lines)
        # Lines must not contain newlines (line protocol has none); `peek` reports a record that
        # splits into more lines than it was numbered for. Checking here would cost ~1 ms a put.
        body = "\n".join(lines)
        # isascii() is O(1) on CPython; line protocol is almost always ASCII.
        size = len(body) if body.isascii() else len(body.encode("utf-8"))
        now = self._clock()
        try:
            db.execute("BEGIN IMMEDIATE")
            drop = self._drop_for_caps(db, now, incoming_bytes=size)
            db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (first, n, size, now, body))
            self._store_counters(
                db,
                next_seq=first + n,
                accepted_points=self._counters["accepted_points"] + n,
                dropped_points=self._counters["dropped_points"] + drop.points,
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            self._refuse(n, f"{type(exc).__name__}: {exc}")
            return
        self._counters["next_seq"] = first + n
        self._counters["accepted_points"] += n
        if not self._pending_records:
            self._oldest_accepted = now
        self._pending_records += 1
        self._pending_points += n
        self._pending_bytes += size
        self._apply_drop(drop, now)
        self._checkpointer.wrote(size + _PAGES_PER_TRANSACTION * _PAGE_SIZE)
        self._ready.set()

    def _drop_for_caps(self, db: sqlite3.Connection, now: float, incoming_bytes: int) -> _Drop:
        """Delete the oldest records while over the size cap (counting `incoming_bytes`, which
        are not stored yet, so the incoming record is never the one dropped) or past the age
        cap, inside the caller's transaction."""
        over = self._pending_bytes + incoming_bytes - self.limits.max_bytes
        cutoff = now - self.limits.max_age_s if self.limits.max_age_s > 0 else -math.inf
        if over <= 0:
            head = db.execute("SELECT accepted FROM records ORDER BY seq0 LIMIT 1").fetchone()
            # By seq order: a record stamped older after a wall-clock step back waits its turn.
            if head is None or head[0] >= cutoff:
                return _NO_DROP
        records = points = size = backlog = 0
        last_seq0 = 0
        cursor = db.execute("SELECT seq0, n, bytes, accepted FROM records ORDER BY seq0")
        try:
            for seq0, n, nbytes, accepted in cursor:
                if over - size <= 0 and accepted >= cutoff:
                    break
                records += 1
                points += n
                size += nbytes
                backlog += seq0 <= self._backlog_mark
                last_seq0 = seq0
        finally:
            cursor.close()
        if not records:
            return _NO_DROP
        db.execute("DELETE FROM records WHERE seq0 <= ?", (last_seq0,))
        return _Drop(records, points, size, backlog)

    def _apply_drop(self, drop: _Drop, now: float) -> None:
        """Bring the in-memory counts in line with a committed cap drop."""
        if not drop.records:
            return
        self._oldest_accepted = None
        self._pending_records -= drop.records
        self._pending_points -= drop.points
        self._pending_bytes -= drop.size
        self._backlog_records -= drop.backlog_records
        self._counters["dropped_points"] += drop.points
        self._last_drop_wall = now
        level = logging.DEBUG
        if time.monotonic() >= self._next_drop_warning:
            self._next_drop_warning = time.monotonic() + _DROP_WARNING_INTERVAL_S
            level = logging.WARNING
        log.log(
            level,
            "spool %s: caps dropped the %d oldest records (%d points); %d points dropped in all",
            self.path,
            drop.records,
            drop.points,
            self._counters["dropped_points"],
        )

    def _refuse(self, points: int, message: str) -> None:
        self._refused_points += points
        self._log_once(message, f"refused {points} points, not accepted: {message}")

    # -- delivering -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._pending_records

    @property
    def weight(self) -> int:
        return self._pending_points

    async def wait(self) -> None:
        """Return once at least one record is pending."""
        while not self._pending_records:
            self._ready.clear()
            await self._ready.wait()

    # ASYNC109: running out of time is the normal end of this wait, not an error (as in OutputQueue).
    async def wait_for_weight(self, weight: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once at least `weight` points are pending, or after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while self._pending_points < weight:
                    # Clearing is safe with other waiters: `set` has already woken them.
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            pass

    def peek(self, max_points: int) -> tuple[list[str], SpoolToken]:
        """The lines of the oldest whole records of one stream, up to `max_points` in all (at
        least one record, so a bigger record comes alone), and the token to `commit` them with.
        Records peeked but not committed are offered again by the next peeks."""
        db = self._connection()
        live = self._pending_records - self._backlog_records
        if live and self._backlog_records:
            backlog = self._served_live_last
        elif self._backlog_records or live:
            backlog = not live
        else:
            return [], _NOTHING
        where = "seq0 <= ?" if backlog else "seq0 > ?"
        first = last = 0
        total = 0
        # Sizes first: the bodies (overflow pages) are read only for the records taken.
        cursor = db.execute(f"SELECT seq0, n FROM records WHERE {where} ORDER BY seq0", (self._backlog_mark,))
        try:
            for seq0, n in cursor:
                if first and total + n > max_points:
                    break
                first = first or seq0
                last = seq0
                total += n
        finally:
            cursor.close()
        lines: list[str] = []
        for (body,) in db.execute(
            "SELECT body FROM records WHERE seq0 BETWEEN ? AND ? ORDER BY seq0", (first, last)
        ):
            lines += body.split("\n")
        if len(lines) != total:
            self._log_once(
                "newline in a line",
                f"records {first}..{last} hold {len(lines)} lines but were numbered for {total}:"
                " the encoder let a newline into a line",
            )
        return lines, SpoolToken(first_seq0=first, last_seq0=last, backlog=backlog)

    def commit(self, token: SpoolToken) -> None:
        """Delete the records `token` names: they were delivered. Records the caps dropped in
        the meantime, or a commit already made, are simply not there any more. A storage error
        is logged and leaves the records pending (they are delivered again).

        Not synced to disk by itself (the next put's sync carries it): a commit lost to a power
        cut only means delivering those records again, which InfluxDB absorbs (same series and
        timestamp: the point is overwritten), and it saves the event loop one fsync per batch."""
        if token.first_seq0 > token.last_seq0:
            return
        db = self._connection()
        span = (token.first_seq0, token.last_seq0)
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            records, points, size, backlog, replayed = db.execute(
                "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(bytes), 0),"
                " coalesce(sum(seq0 <= :mark), 0), coalesce(sum(n * (seq0 <= :mark)), 0)"
                " FROM records WHERE seq0 BETWEEN :first AND :last",
                {"mark": self._backlog_mark, "first": span[0], "last": span[1]},
            ).fetchone()
            if not records:
                db.execute("ROLLBACK")
                return
            db.execute("DELETE FROM records WHERE seq0 BETWEEN ? AND ?", span)
            self._store_counters(
                db,
                delivered_points=self._counters["delivered_points"] + points,
                replayed_points=self._counters["replayed_points"] + replayed,
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            message = f"{type(exc).__name__}: {exc}"
            self._log_once(message, f"commit failed, the records stay pending: {message}")
            return
        finally:
            db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._oldest_accepted = None
        self._pending_records -= records
        self._pending_points -= points
        self._pending_bytes -= size
        self._backlog_records -= backlog
        self._counters["delivered_points"] += points
        self._counters["replayed_points"] += replayed
        self._served_live_last = not token.backlog
        self._checkpointer.wrote(_PAGES_PER_TRANSACTION * _PAGE_SIZE)

    def mark_backlog(self) -> None:
        """The consumer's delivery failed: everything pending now is backlog, to be replayed
        alternately with what arrives from here on."""
        self._backlog_mark = self._counters["next_seq"] - 1
        self._backlog_records = self._pending_records
        self._served_live_last = False

    # -- reporting and closing ----------------------------------------------------------------
    def stats(self) -> SpoolStats:
        oldest_age = 0.0
        if self._pending_records:
            if self._oldest_accepted is None:
                head = (
                    self._connection()
                    .execute("SELECT accepted FROM records ORDER BY seq0 LIMIT 1")
                    .fetchone()
                )
                self._oldest_accepted = float(head[0]) if head is not None else None
            if self._oldest_accepted is not None:
                oldest_age = max(0.0, self._clock() - self._oldest_accepted)
        c = self._counters
        return SpoolStats(
            pending_points=self._pending_points,
            pending_records=self._pending_records,
            pending_bytes=self._pending_bytes,
            oldest_age_s=oldest_age,
            accepted_points=c["accepted_points"],
            delivered_points=c["delivered_points"],
            replayed_points=c["replayed_points"],
            dropped_points=c["dropped_points"],
            refused_points=self._refused_points,
            last_drop_wall=self._last_drop_wall,
            next_seq=c["next_seq"],
        )

    def close(self) -> None:
        """Close the file (the WAL is folded into it) and release the lock. Idempotent."""
        if self._db is None:
            return
        self._checkpointer.close()
        # The last connection to close checkpoints the WAL and removes it.
        self._db.close()
        self._db = None
        os.close(self._lock_fd)

    # -- helpers ------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"spool {self.path} is closed")
        return self._db

    def _store_counters(self, db: sqlite3.Connection, **values: int) -> None:
        db.executemany("UPDATE meta SET value = ? WHERE key = ?", [(v, k) for k, v in values.items()])

    def _rollback(self, db: sqlite3.Connection) -> None:
        # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL).
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                message = f"{type(exc).__name__}: {exc}"
                self._log_once(message, f"rollback failed: {message}")

    def _log_once(self, key: str, text: str) -> None:
        """WARNING the first time `key` comes up, DEBUG after that."""
        level = logging.DEBUG
        if key not in self._logged_messages and len(self._logged_messages) < _MAX_LOGGED_MESSAGES:
            self._logged_messages.add(key)
            level = logging.WARNING
        log.log(level, "spool %s: %s", self.path, text)


__all__ = ["DurableSpool", "SpoolError", "SpoolLimits", "SpoolStats", "SpoolToken"]
