"""Rows the target refuses (a constraint, a value too long or out of range), found without losing the rest.

Binary COPY stops at the first refused row, so a partition that met one is redone here: its batches are
loaded in groups, each group under one savepoint. A refused group is scanned in growing chunks under nested
savepoints; a chunk the target refuses names a row in its error (`COPY t, line N`), so the rows before it
load, that row is refused if it fails alone, and the scan goes on after it (where the error names no row, as after the text
path's INSERT, the chunk is searched by halves). Then the group is rolled back to its savepoint and its
accepted rows loaded again in one COPY.

Why the detour: every savepoint that writes and is released stays in the transaction as a committed
subtransaction, and once a transaction holds more than 64 of them (PostgreSQL's per-backend cache), every
snapshot taken on the server must look them up in pg_subtrans until it ends, which slows the whole server.
Rolled-back subtransactions leave the cache, so compacting (roll back, reload the accepted rows) keeps the
search under `MAX_OPEN_SUBTRANSACTIONS` and leaves one subtransaction per group once a group is done.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import pyarrow as pa

from engine import frames, pg
from engine.errors import TargetError
from engine.load import DOES_NOT_FIT, row_rejection, write_batches
from engine.model import LoadTarget
from engine.quarantine import RejectedRow
from engine.urls import redact

GROUP_ROWS = 65_536  # rows per savepoint: a default partition is one group
MAX_OPEN_SUBTRANSACTIONS = 48  # released probes kept before compacting; PostgreSQL caches 64
MAX_REJECTED_ROWS = 1000  # per partition: beyond this the data or the table is wrong, not a few rows
FIRST_CHUNK = 256  # rows of the first chunk of a refused group's scan; it doubles while chunks load
_COPY_LINE = re.compile(r"CONTEXT:\s+COPY .*?, line (\d+)")


def write_isolating(conn: pg.Connection, target: LoadTarget, batches: Iterator[pa.RecordBatch],
                    rejected: list[RejectedRow]) -> int:
    """Load the batches, handing back the rows the target refuses instead of failing. Needs an explicit
    transaction on an autocommit session (the driver cannot roll back to a savepoint otherwise)."""
    return sum(_Group(conn, target, group, rejected).load() for group in _groups(batches))


def _groups(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= GROUP_ROWS:
            yield frames.one_batch(pa.Table.from_batches(pending))
            pending, rows = [], 0
    if pending:
        yield frames.one_batch(pa.Table.from_batches(pending))


class _Group:
    def __init__(self, conn: pg.Connection, target: LoadTarget, rows: pa.RecordBatch,
                 rejected: list[RejectedRow]) -> None:
        self.conn, self.target, self.rows, self.rejected = conn, target, rows, rejected
        self.accepted: list[int] = []  # row positions loaded, in order
        self.open = 0  # released probes (committed subtransactions) since the group's savepoint

    def load(self) -> int:
        pg.execute(self.conn, "SAVEPOINT engine_group")
        try:
            loaded = self._write(self.rows)
        except Exception as exc:
            if row_rejection(exc) is None:
                raise
            pg.execute(self.conn, "ROLLBACK TO SAVEPOINT engine_group")
            self._scan()
            loaded = self._compact()
        pg.execute(self.conn, "RELEASE SAVEPOINT engine_group")
        return loaded

    def _write(self, rows: pa.RecordBatch) -> int:
        return write_batches(self.conn, self.target, pa.RecordBatchReader.from_batches(rows.schema, [rows]))

    def _compact(self) -> int:
        """Undo the probes and load the rows accepted so far in one COPY: one subtransaction, not many."""
        pg.execute(self.conn, "ROLLBACK TO SAVEPOINT engine_group")
        self.open = 0
        if not self.accepted:
            return 0
        return self._write(self.rows.take(pa.array(self.accepted, pa.int64())))

    def _probe(self, lo: int, hi: int) -> Exception | None:
        """Load rows [lo, hi) under a savepoint: kept when accepted, else rolled back and the error returned."""
        if self.open >= MAX_OPEN_SUBTRANSACTIONS:
            self._compact()
        pg.execute(self.conn, "SAVEPOINT engine_rows")
        try:
            self._write(self.rows.slice(lo, hi - lo))
        except Exception as exc:
            if row_rejection(exc) is None:
                raise
            pg.execute(self.conn, "ROLLBACK TO SAVEPOINT engine_rows")
            pg.execute(self.conn, "RELEASE SAVEPOINT engine_rows")  # else every refusal nests the next one deeper
            return exc
        pg.execute(self.conn, "RELEASE SAVEPOINT engine_rows")
        self.open += 1
        self.accepted.extend(range(lo, hi))
        return None

    def _scan(self) -> None:
        position, size, end = 0, FIRST_CHUNK, self.rows.num_rows
        while position < end:
            chunk = min(size, end - position)
            error = self._probe(position, position + chunk)
            if error is None:
                position, size = position + chunk, size * 2
                continue
            line = _failed_line(error)
            if line is None or not 1 <= line <= chunk:  # the error names no row of this chunk
                self._halves(position, position + chunk, error)
                position, size = position + chunk, FIRST_CHUNK
                continue
            named = position + line - 1  # a row is refused only when it fails alone: the line may be off
            if named > position and (prefix_error := self._probe(position, named)) is not None:
                self._halves(position, named, prefix_error)
            alone = self._probe(named, named + 1)
            if alone is not None:
                self._refuse(named, alone)
            position, size = named + 1, max(FIRST_CHUNK, 2 * line)

    def _halves(self, lo: int, hi: int, error: Exception) -> None:
        """Rows [lo, hi) were refused together: search them by halves until each refused row stands alone."""
        if hi - lo == 1:
            self._refuse(lo, error)
            return
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            failed = self._probe(a, b)
            if failed is not None:
                self._halves(a, b, failed)

    def _refuse(self, position: int, exc: Exception) -> None:
        condition = row_rejection(exc) or "refused"
        message = _database_message(exc)
        if DOES_NOT_FIT in message:  # exact_cast's refusal: its reason is the cast's input
            condition, message = "value_does_not_fit", message.split(DOES_NOT_FIT, 1)[1].strip().rstrip('"')
        column = named_column(str(exc), [n for n, _ in self.target.columns])
        self.rejected.append(RejectedRow(self.rows.slice(position, 1), condition, column, message))
        if len(self.rejected) > MAX_REJECTED_ROWS:
            first = self.rejected[0]
            raise TargetError(f"the target refused more than {MAX_REJECTED_ROWS:,} rows of this partition "
                              f"(e.g. {first.condition}: {first.message}); fix the target table's constraints or "
                              "the data, then rerun to resume") from None


def _failed_line(exc: BaseException) -> int | None:
    """The row (1-based) of a COPY's data that the target refused, as its error's context names it."""
    m = _COPY_LINE.search(str(exc))
    return int(m.group(1)) if m else None


def _database_message(exc: BaseException) -> str:
    """PostgreSQL's ERROR and DETAIL lines, without the driver's wrapping."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [re.sub(r"^.*?ERROR:\s*", "", line) for line in lines if "ERROR:" in line or line.startswith("DETAIL:")]
    return redact(" ".join(kept) or (lines[0] if lines else type(exc).__name__))


def named_column(message: str, columns: Sequence[str] = ()) -> str:
    """The column PostgreSQL's message names (`column "x"`, or COPY's context `…, line 3, column x: …`).

    PostgreSQL prints a name as it is (a quote inside stays one quote), so the table's own column names are
    looked for first, longest first; the pattern is the fallback."""
    message = message.split("ERROR:", 1)[-1]  # the driver puts the failed query first
    for name in sorted(columns, key=len, reverse=True):
        if f'column "{name}"' in message:
            return name
    m = re.search(r'column "((?:[^"]|"")+)"', message)
    if m:
        return m.group(1).replace('""', '"')
    m = re.search(r"COPY [^\n]*?, line \d+, column (.+?)(?::|\n|$)", message)
    return m.group(1) if m else "(row)"
