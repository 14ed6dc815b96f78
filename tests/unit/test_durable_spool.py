"""The durable spool keeps every accepted point on disk, numbered without gaps, until delivered.

Real SQLite files in tmp_path throughout; the crash test SIGKILLs a real writer process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.durable_spool import DurableSpool, SpoolError, SpoolLimits, SpoolToken

Opener = Callable[..., DurableSpool[int]]


def numbered(points: int, first_seq: int) -> list[str]:
    """The item is a point count; each line carries its own sequence number."""
    return [f"m,k=v n={first_seq + i}i {first_seq + i}" for i in range(points)]


def seqs(lines: list[str]) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in lines]


class FakeClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[Opener]:
    """Opens spools on tmp_path/spool.db (by default) and closes whatever is still open at the end."""
    opened: list[DurableSpool[int]] = []

    def opener(path: Path | None = None, **kwargs: object) -> DurableSpool[int]:
        spool = DurableSpool(path or tmp_path / "spool.db", numbered, **kwargs)  # type: ignore[arg-type]
        opened.append(spool)
        return spool

    yield opener
    for spool in opened:
        spool.close()


def drain(spool: DurableSpool[int], max_points: int = 1_000_000) -> list[str]:
    """Deliver everything pending, in peek order."""
    out: list[str] = []
    while len(spool):
        lines, token = spool.peek(max_points)
        out += lines
        spool.commit(token)
    return out


# -- numbering and persistence ---------------------------------------------------------------
def test_sequence_numbers_are_contiguous_across_puts_and_reopen(open_spool: Opener) -> None:
    spool = open_spool()
    spool.put(3)
    spool.put(0)  # encodes to nothing: stores nothing and uses no numbers
    spool.put(2, weight=99)  # the weight is ignored: the point count is the line count
    assert (len(spool), spool.weight, spool.stats().next_seq) == (2, 5, 6)
    spool.close()

    spool = open_spool()
    assert (len(spool), spool.weight, spool.stats().next_seq) == (2, 5, 6)
    spool.put(4)
    # 6-9 are live and go first; 1-5 were pending at open, so they are the backlog.
    assert seqs(drain(spool)) == [6, 7, 8, 9, 1, 2, 3, 4, 5]
    spool.close()

    spool = open_spool()
    spool.put(1)
    assert seqs(drain(spool)) == [10]


def test_lifetime_counters_survive_reopen(open_spool: Opener) -> None:
    clock = FakeClock()
    spool = open_spool(limits=SpoolLimits(max_bytes=60), clock=clock)
    spool.put(2)  # "m,k=v n=1i 1\nm,k=v n=2i 2": 25 bytes
    spool.put(2)
    spool.put(2)  # 75 bytes, over 60: the first record goes
    lines, token = spool.peek(2)
    spool.commit(token)
    before = spool.stats()
    assert (before.accepted_points, before.dropped_points, before.delivered_points) == (6, 2, 2)
    assert seqs(lines) == [3, 4]
    spool.close()

    spool = open_spool(clock=clock)
    after = spool.stats()
    assert (after.accepted_points, after.dropped_points, after.delivered_points, after.replayed_points) == (
        6,
        2,
        2,
        0,
    )
    assert (after.pending_points, after.pending_records, after.next_seq) == (2, 1, 7)
    assert after.pending_bytes == before.pending_bytes
    spool.commit(spool.peek(10)[1])  # pending at open was backlog: replayed
    spool.close()
    assert open_spool().stats().replayed_points == 2


# -- peek and commit -------------------------------------------------------------------------
def test_peek_is_fifo_in_whole_records_and_repeats_until_committed(open_spool: Opener) -> None:
    spool = open_spool()
    for points in (2, 3, 1):
        spool.put(points)
    lines, token = spool.peek(4)
    assert seqs(lines) == [1, 2]  # the 3-point record would overshoot 4
    again, same = spool.peek(4)
    assert (again, same) == (lines, token)
    spool.commit(token)
    lines, token = spool.peek(1)
    assert seqs(lines) == [3, 4, 5]  # a record bigger than max_points comes alone, whole
    spool.commit(token)
    lines, token = spool.peek(100)
    assert seqs(lines) == [6]
    spool.commit(token)
    assert (len(spool), spool.weight) == (0, 0)
    lines, token = spool.peek(100)
    assert lines == []
    spool.commit(token)  # the empty token is harmless
    assert spool.stats().delivered_points == 6


def test_a_stale_token_commits_nothing_it_did_not_name(open_spool: Opener) -> None:
    spool = open_spool()
    spool.put(2)
    spool.put(2)
    _, token = spool.peek(2)
    spool.commit(token)
    spool.close()

    spool = open_spool()
    spool.put(3)
    spool.commit(token)  # from the previous process, already committed
    spool.commit(SpoolToken(first_seq0=1, last_seq0=2, backlog=True))
    stats = spool.stats()
    assert (stats.pending_points, stats.delivered_points) == (5, 2)
    assert seqs(drain(spool)) == [5, 6, 7, 3, 4]  # live first, then the backlog


def test_mark_backlog_then_live_and_backlog_alternate(open_spool: Opener) -> None:
    spool = open_spool()
    spool.put(1)  # 1
    spool.put(1)  # 2
    spool.mark_backlog()  # delivery failed: both are backlog now
    spool.put(1)  # 3, live
    spool.put(1)  # 4, live
    order = []
    while len(spool):
        lines, token = spool.peek(1)
        order += seqs(lines)
        assert token.backlog == (seqs(lines)[0] <= 2)
        spool.commit(token)
    assert order == [3, 1, 4, 2]
    stats = spool.stats()
    assert (stats.delivered_points, stats.replayed_points) == (4, 2)


def test_records_pending_at_open_are_backlog_and_alternate_with_new_ones(open_spool: Opener) -> None:
    spool = open_spool()
    for _ in range(3):
        spool.put(2)  # 1-2, 3-4, 5-6
    spool.close()

    spool = open_spool()
    spool.put(1)  # 7
    spool.put(1)  # 8
    order = []
    while len(spool):
        lines, token = spool.peek(1)
        order.append(seqs(lines))
        spool.commit(token)
    assert order == [[7], [1, 2], [8], [3, 4], [5, 6]]
    assert spool.stats().replayed_points == 6


def test_one_stream_alone_is_served_in_full(open_spool: Opener) -> None:
    spool = open_spool()
    for _ in range(3):
        spool.put(1)
    spool.mark_backlog()
    lines, token = spool.peek(10)
    assert (seqs(lines), token.backlog) == ([1, 2, 3], True)


# -- caps --------------------------------------------------------------------------------------
def test_size_cap_drops_the_oldest_and_keeps_the_newest_even_alone(open_spool: Opener) -> None:
    clock = FakeClock(5_000.0)
    spool = open_spool(limits=SpoolLimits(max_bytes=70, max_age_s=0), clock=clock)
    assert spool.stats().last_drop_wall == float("-inf")
    for _ in range(5):
        spool.put(1)  # "m,k=v n=1i 1": 12 bytes each
    assert (spool.stats().dropped_points, spool.stats().pending_bytes) == (0, 60)
    clock.t = 5_001.0
    spool.put(1)  # the sixth would make 72
    stats = spool.stats()
    assert (stats.dropped_points, stats.last_drop_wall, stats.pending_bytes) == (1, 5_001.0, 60)

    clock.t = 5_002.0
    spool.put(10)  # 143 bytes: everything older goes, the new record stays although over the cap
    stats = spool.stats()
    assert (stats.pending_records, stats.pending_points, stats.dropped_points) == (1, 10, 6)
    assert stats.pending_bytes == 143
    assert stats.last_drop_wall == 5_002.0
    spool.put(1)  # and next time it is the oldest
    assert seqs(drain(spool)) == [17]
    assert spool.stats().dropped_points == 16


def test_age_cap_drops_what_was_accepted_too_long_ago(open_spool: Opener) -> None:
    clock = FakeClock(0.0)
    spool = open_spool(limits=SpoolLimits(max_age_s=10.0), clock=clock)
    spool.put(1)  # accepted at 0
    clock.t = 5.0
    spool.put(2)  # accepted at 5
    clock.t = 10.0
    spool.put(1)  # the first is exactly 10 s old: kept
    assert spool.stats().dropped_points == 0
    clock.t = 12.0
    assert spool.stats().oldest_age_s == 12.0
    spool.put(1)
    stats = spool.stats()
    assert (stats.dropped_points, stats.last_drop_wall, stats.oldest_age_s) == (1, 12.0, 7.0)
    spool.close()

    clock.t = 30.0  # while the gateway was down everything aged out but the last
    spool = open_spool(limits=SpoolLimits(max_age_s=20.0), clock=clock)
    assert seqs(drain(spool)) == [4, 5]
    assert spool.stats().dropped_points == 3


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SpoolLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_age_s"):
        SpoolLimits(max_age_s=-1.0)


# -- refusal and bad files ---------------------------------------------------------------------
def test_a_write_the_disk_refuses_is_counted_not_raised_and_uses_no_numbers(
    open_spool: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    spool = open_spool()
    spool.put(2)
    db = spool._db  # the test hook: a full disk, simulated by SQLite's own page limit
    assert db is not None
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")
    with caplog.at_level(logging.DEBUG, logger="gateway.durable_spool"):
        spool.put(2_000)
        spool.put(2_000)
    stats = spool.stats()
    assert (stats.refused_points, stats.next_seq, stats.accepted_points, stats.pending_points) == (
        4_000,
        3,
        2,
        2,
    )
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.WARNING, logging.DEBUG]
    assert "full" in refusals[0].getMessage()

    db.execute("PRAGMA max_page_count=1073741823")  # space again
    spool.put(3)
    spool.close()
    spool = open_spool()
    assert seqs(drain(spool)) == [1, 2, 3, 4, 5]
    assert spool.stats().accepted_points == 5


def test_a_line_with_a_newline_is_delivered_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool: DurableSpool[str] = DurableSpool(tmp_path / "s.db", lambda text, seq: [text, "ok 1"])
    try:
        spool.put("bad\nline 1")
        with caplog.at_level(logging.WARNING, logger="gateway.durable_spool"):
            lines, _ = spool.peek(10)
        assert lines == ["bad", "line 1", "ok 1"]  # nothing withheld: InfluxDB judges the lines
        assert "records 1..1 hold 3 lines but were numbered for 2" in caplog.text
    finally:
        spool.close()


def test_a_garbage_file_is_an_error_naming_it_and_left_alone(tmp_path: Path, open_spool: Opener) -> None:
    path = tmp_path / "spool.db"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    with pytest.raises(SpoolError, match="not a usable spool") as err:
        open_spool(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == garbage
    path.unlink()
    open_spool(path).put(1)  # the failed open released the lock


def test_a_foreign_database_is_an_error(tmp_path: Path, open_spool: Opener) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE readings (t REAL, v REAL)")
    db.close()
    with pytest.raises(SpoolError, match="not a linegate spool") as err:
        open_spool(path)
    assert str(path) in str(err.value)


def test_a_spool_with_a_meta_table_behind_its_records_is_an_error(tmp_path: Path, open_spool: Opener) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    spool.put(5)
    spool.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 3 WHERE key = 'next_seq'")
    db.close()
    with pytest.raises(SpoolError, match="next_seq 3 is behind"):
        open_spool(path)


def test_a_second_spool_on_the_same_file_is_refused(tmp_path: Path, open_spool: Opener) -> None:
    first = open_spool()
    with pytest.raises(SpoolError, match=f"in use by another process \\(pid {os.getpid()}"):
        open_spool()
    first.close()
    open_spool().put(1)


def test_directory_is_created_and_closed_spool_refuses_use(tmp_path: Path, open_spool: Opener) -> None:
    spool = open_spool(tmp_path / "a" / "b" / "spool.db")
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        spool.put(1)


# -- crash safety ------------------------------------------------------------------------------
CHILD = """
import sys
from pathlib import Path
from gateway.durable_spool import DurableSpool

def encode(points, first):
    return [f"crash,k=v n={first + i}i,pad=\\"{'x' * 60}\\" {first + i}" for i in range(points)]

spool = DurableSpool(Path(sys.argv[1]), encode)
while True:
    seq0 = spool.stats().next_seq
    spool.put(2_000)
    print(seq0, flush=True)
"""


def test_sigkill_loses_nothing_put_had_returned_from(tmp_path: Path, open_spool: Opener) -> None:
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    path = tmp_path / "spool.db"
    acknowledged: list[int] = []
    for _ in range(3):  # each round the writer reopens what the last one left
        child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        try:
            for _ in range(8):
                line = child.stdout.readline()
                assert line, f"writer exited early with {child.poll()}"
                acknowledged.append(int(line))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL

    spool = open_spool(path)
    stats = spool.stats()
    lines = drain(spool)
    numbers = seqs(lines)
    # Everything accepted is there, once, in order; the numbers continue where they stopped.
    assert numbers == list(range(1, stats.next_seq))
    assert stats.accepted_points == stats.next_seq - 1 == stats.pending_points
    assert set(acknowledged) <= set(numbers[::2_000])
    assert max(acknowledged) + 2_000 <= stats.next_seq
    pad = "x" * 60
    assert all(line == f'crash,k=v n={n}i,pad="{pad}" {n}' for line, n in zip(lines, numbers, strict=True))
    spool.put(1)
    assert seqs(spool.peek(10)[0]) == [stats.next_seq]


# -- waiting -----------------------------------------------------------------------------------
async def test_wait_and_wait_for_weight_are_woken_by_put(open_spool: Opener) -> None:
    spool = open_spool()
    waiter = asyncio.create_task(spool.wait())
    weight_waiter = asyncio.create_task(spool.wait_for_weight(5, timeout=60.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    spool.put(3)
    await asyncio.wait_for(waiter, 1.0)
    await asyncio.sleep(0)
    assert not weight_waiter.done()
    spool.put(2)
    await asyncio.wait_for(weight_waiter, 1.0)
    await spool.wait()  # already pending: returns at once
    await spool.wait_for_weight(100, timeout=0.01)  # running out of time is not an error


async def test_wait_returns_at_once_for_records_pending_at_open(open_spool: Opener) -> None:
    spool = open_spool()
    spool.put(2)
    spool.close()
    spool = open_spool()
    await asyncio.wait_for(spool.wait(), 1.0)
    await asyncio.wait_for(spool.wait_for_weight(2, timeout=60.0), 1.0)


# -- model-based: any sequence of operations agrees with a plain-list model ----------------------
@dataclass
class ModelRecord:
    seq0: int
    n: int
    size: int
    accepted: float


@dataclass
class SpoolModel:
    """What the spool promises, written as plainly as possible."""

    max_bytes: int
    max_age_s: float
    records: list[ModelRecord] = field(default_factory=list)
    next_seq: int = 1
    mark: int = 0
    served_live_last: bool = False
    accepted: int = 0
    delivered: int = 0
    replayed: int = 0
    dropped: int = 0

    def put(self, points: int, now: float) -> None:
        if points == 0:
            return
        size = len("\n".join(numbered(points, self.next_seq)))
        while self.records and (
            sum(r.size for r in self.records) + size > self.max_bytes
            or (self.max_age_s > 0 and self.records[0].accepted < now - self.max_age_s)
        ):
            self.dropped += self.records.pop(0).n
        self.records.append(ModelRecord(self.next_seq, points, size, now))
        self.next_seq += points
        self.accepted += points

    def peek(self, max_points: int) -> tuple[list[int], bool]:
        backlog = [r for r in self.records if r.seq0 <= self.mark]
        live = [r for r in self.records if r.seq0 > self.mark]
        use_backlog = bool(backlog) and (not live or self.served_live_last)
        taken: list[ModelRecord] = []
        for r in backlog if use_backlog else live:
            if taken and sum(t.n for t in taken) + r.n > max_points:
                break
            taken.append(r)
        return [r.seq0 for r in taken], use_backlog

    def commit(self, seq0s: list[int], backlog: bool) -> None:
        removed = [r for r in self.records if r.seq0 in seq0s]
        for r in removed:
            self.records.remove(r)
            self.delivered += r.n
            self.replayed += r.n if r.seq0 <= self.mark else 0
        if removed:  # a commit whose records are all gone changes nothing
            self.served_live_last = not backlog

    def mark_backlog(self) -> None:
        self.mark = self.next_seq - 1
        self.served_live_last = False

    def reopen(self, now: float) -> None:
        self.mark_backlog()
        while self.records and self.max_age_s > 0 and self.records[0].accepted < now - self.max_age_s:
            self.dropped += self.records.pop(0).n


class SpoolAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "spool.db"
        self.clock = FakeClock(0.0)
        self.limits = SpoolLimits(max_bytes=400, max_age_s=30.0)
        self.model = SpoolModel(self.limits.max_bytes, self.limits.max_age_s)
        self.spool = DurableSpool(self.path, numbered, self.limits, self.clock)
        self.peeked: tuple[list[str], SpoolToken, list[int], bool] | None = None

    @rule(points=st.integers(0, 12))
    def put(self, points: int) -> None:
        self.spool.put(points)
        self.model.put(points, self.clock.t)

    @rule(max_points=st.integers(1, 15))
    def peek(self, max_points: int) -> None:
        lines, token = self.spool.peek(max_points)
        seq0s, backlog = self.model.peek(max_points)
        want = [s for r in self.model.records if r.seq0 in seq0s for s in range(r.seq0, r.seq0 + r.n)]
        assert seqs(lines) == want
        if seq0s:
            assert token.backlog == backlog
        self.peeked = (lines, token, seq0s, backlog)

    @rule()
    def commit(self) -> None:
        if self.peeked is None:
            return
        _, token, seq0s, backlog = self.peeked
        self.spool.commit(token)
        self.model.commit(seq0s, backlog)
        self.peeked = None if not seq0s else self.peeked  # committing twice must be harmless too

    @rule()
    def mark_backlog(self) -> None:
        self.spool.mark_backlog()
        self.model.mark_backlog()

    @rule(seconds=st.sampled_from([1.0, 10.0, 25.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.t += seconds

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = DurableSpool(self.path, numbered, self.limits, self.clock)
        self.model.reopen(self.clock.t)

    @invariant()
    def counts_agree(self) -> None:
        stats = self.spool.stats()
        m = self.model
        assert (stats.pending_records, stats.pending_points, stats.pending_bytes) == (
            len(m.records),
            sum(r.n for r in m.records),
            sum(r.size for r in m.records),
        )
        assert (stats.next_seq, stats.accepted_points, stats.delivered_points) == (
            m.next_seq,
            m.accepted,
            m.delivered,
        )
        assert (stats.replayed_points, stats.dropped_points) == (m.replayed, m.dropped)
        # Nothing lost, nothing twice: every number is pending, delivered or dropped.
        assert stats.accepted_points == stats.pending_points + stats.delivered_points + stats.dropped_points

    def teardown(self) -> None:
        self.spool.close()
        self.dir.cleanup()


SpoolAgainstModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_spool_agrees_with_the_model = SpoolAgainstModel.TestCase
