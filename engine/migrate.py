"""A run of a whole-database job: every table with its keys, indexes, sequences, foreign keys and views.

Order, so nothing fails late: orphan rows found in the source first; then the schema and bare tables (NOT NULL
only); then each table's rows (its own partitioned, checkpointed, verified single-table run, largest tables
first), and as soon as a table's rows are in, its keys, indexes, checks and ANALYZE (in the background, while
the next table loads); then identity and sequence restarts, foreign keys (NOT VALID, then VALIDATE), views and
triggers. Every step commits together with its row in `engine.steps`, so a killed run resumes at the step it
was on, never repeating one or meeting an "already exists". `mode = "replace"` builds the schema beside the
old one and swaps it in with one transaction.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from typing import Any

from engine import checkpoint, ddl, failpoints, pg
from engine.config import JobConfig, parse_config
from engine.dbplan import Orphans, orphan_check, problems, read_database, relation, upsert_key
from engine.dbschema import DatabaseSchema, ForeignKey, Table
from engine.errors import ConfigError, EngineError, OrphanRows, SnapshotLost, SourceError, TransientError, with_advice
from engine.healing import Patience, at_start, wait_for_servers, with_retries
from engine.metrics import Observer
from engine.pipeline import peak_rss_mb, run_job
from engine.report import RunReport
from engine.source import Snapshot, shared_snapshot, unreachable
from engine.sql import PG_MAX_IDENT_BYTES, quote_ident
from engine.urls import redact

Progress = Callable[[str], None]
NEW_SUFFIX = "__engine_new"


# Bytes of heap from which a table's indexes are built side by side, each a step (tests lower it to reach
# those steps with small tables).
INDEXES_SIDE_BY_SIDE_FROM = int(os.environ.get("ENGINE_INDEXES_SIDE_BY_SIDE_FROM", 32 << 20))


def fingerprint(config: JobConfig) -> str:
    parts = {"source": str(config.source_url), "tables": config.source.tables, "target": str(config.target_url),
             "schema": config.target.schema_, "mode": config.target.mode, "naming": config.target.naming,
             "exclude_data": config.source.exclude_data, "orphans": config.target.orphans,
             "tables_settings": {n: t.model_dump(mode="json") for n, t in sorted(config.tables.items())}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class DatabaseRun:
    def __init__(self, config: JobConfig, fresh: bool, say: Progress) -> None:
        self.config, self.fresh, self.say = config, fresh, say
        self.schema = config.target.schema_ or "public"
        # beside the old schema, under a name PostgreSQL does not truncate back into the old one's
        room = PG_MAX_IDENT_BYTES - len(NEW_SUFFIX)
        beside = self.schema.encode()[:room].decode(errors="ignore") + NEW_SUFFIX
        self.build = beside if config.target.mode == "replace" else self.schema
        self.owner = uuid.uuid4().hex
        self.patience = Patience(config.pipeline.retries, config.pipeline.reconnect_for, (config.target_url,))
        self.run_id = ""
        self.done: dict[str, tuple[str, str | None]] = {}
        self.report = RunReport(config.job.name, "", mode=config.target.mode, source=str(config.source_url),
                                target=f"{config.target_url} schema {self.schema}")
        self.tables: dict[str, dict[str, Any]] = {}
        self.lock: pg.Connection  # the session holding the job's advisory lock, once `locked`
        self.locked = False
        self.lock_use = threading.Lock()
        self.upserted_names: frozenset[str] = frozenset()
        self.snapshot: Snapshot | None = None  # a PostgreSQL source's, shared by every table
        self.snapshot_use = threading.Lock()  # tables starting side by side check and retake it once
        self.totals_use = threading.Lock()  # the report's totals, added by tables finishing side by side
        self.slots: threading.Semaphore | None = None  # partitions in flight over every table (side by side)

    # -------------------------------------------------------------------------------------------- steps

    def heard(self, message: str) -> None:
        """A retry or a wait: said as it happens, and kept for the report."""
        if len(self.report.recoveries) < 100:
            self.report.recoveries.append(redact(message))
        self.say(message)

    def step(self, name: str, statements: list[str], kind: str, detail: str | None = None) -> None:
        """Run a step's statements and record it, in one transaction; a step already recorded is skipped. A server
        restart or a lost connection is waited for and the step done again (it either committed or left nothing)."""
        if name in self.done:
            return
        with_retries(lambda: self._do_step(name, statements, kind, detail), f"step {name!r}", self.patience,
                     self.heard)
        self.done[name] = ("done", detail)
        with_retries(self._hold_lock, "holding the job's lock", self.patience, self.heard)

    def _hold_lock(self) -> None:
        with self.lock_use:  # steps finish on several threads; the driver's sessions are not for two at once
            fresh = checkpoint.hold_lock(self.lock, self.config.target_url, self.config.job.name)
            if fresh is not None:
                self.lock = fresh
                self.heard(checkpoint.LOCK_RETAKEN)

    def _do_step(self, name: str, statements: list[str], kind: str, detail: str | None) -> None:
        started = time.perf_counter()
        # A transaction opened by hand on an autocommit session: the driver can roll back to a savepoint only so.
        with pg.connection(self.config.target_url, autocommit=True) as conn:
            pg.execute(conn, "BEGIN")
            if checkpoint.step_done(conn, self.run_id, name):  # committed before its connection was lost
                pg.execute(conn, "ROLLBACK")
                return
            pg.execute(conn, ddl.set_path(self.build))
            if kind in _MEMORY:
                pg.execute(conn, _MEMORY[kind])
            for statement in statements:
                if isinstance(statement, ddl.Optional):
                    self._optional(conn, statement)
                else:
                    pg.execute(conn, statement)
            failpoints.hit(f"db.{kind}")
            seconds = time.perf_counter() - started
            checkpoint.record_step(conn, self.run_id, name, detail=detail, seconds=round(seconds, 3))
            pg.execute(conn, "COMMIT")

    def record(self, name: str, outcome: str = "done", detail: str | None = None) -> None:
        """Record a step whose work was done elsewhere (a table's rows, by its own run)."""

        def write() -> None:
            with pg.connection(self.config.target_url) as conn:
                checkpoint.record_step(conn, self.run_id, name, outcome, detail)
                conn.commit()

        with_retries(write, f"recording step {name!r}", self.patience, self.heard)
        self.done[name] = (outcome, detail)

    def _optional(self, conn: pg.Connection, statement: ddl.Optional) -> None:
        pg.execute(conn, "SAVEPOINT engine_optional")
        try:
            pg.execute(conn, str(statement))  # the driver takes an exact str
        except Exception as exc:
            if not pg.is_driver_error(exc):
                raise
            pg.execute(conn, "ROLLBACK TO SAVEPOINT engine_optional")
            reason = str(pg.translate(exc, statement.what)).split("ERROR:", 1)[-1].strip().splitlines()[0]
            self.report.database.setdefault("failed", {})[statement.what] = reason
        pg.execute(conn, "RELEASE SAVEPOINT engine_optional")

    def try_step(self, name: str, statements: Callable[[], list[str]], kind: str) -> str | None:
        """A step that may fail without failing the run (a view, a trigger): its error is recorded instead."""
        if name in self.done:
            return self.done[name][1] if self.done[name][0] == "failed" else None
        try:
            self.step(name, statements(), kind)
            return None
        except EngineError as exc:
            message = str(exc).splitlines()[0]
        except Exception as exc:
            if not pg.is_driver_error(exc) and not isinstance(exc, ddl.SqlError):
                raise
            message = str(pg.translate(exc, name) if pg.is_driver_error(exc) else exc).splitlines()[0]
        self.record(name, "failed", message)
        return message

    # -------------------------------------------------------------------------------------------- the run

    def open_run(self, conn: pg.Connection) -> tuple[DatabaseSchema, bool]:
        job = self.config.job.name
        previous = checkpoint.latest_run(conn, job)
        unfinished = previous is not None and previous.status in ("running", "failed")
        if previous is not None and unfinished and not self.fresh:
            if previous.fingerprint != fingerprint(self.config):
                raise ConfigError(str(self.config.path), [
                    f"the job's source, patterns, target, schema, mode or naming changed since its unfinished run "
                    f"{previous.run_id} started; rerun with --fresh to start over"])
            checkpoint.take_over(conn, previous.run_id, self.owner)
            self.run_id = previous.run_id
            self.done = checkpoint.done_steps(conn, self.run_id)
            self.say(f"resuming run {self.run_id}: {len(self.done)} step(s) already done")
            return DatabaseSchema.model_validate(previous.plan["database"]), True
        if previous is not None and unfinished:
            self._refuse_leftovers(conn, previous.run_id)
            checkpoint.set_status(conn, previous.run_id, "abandoned")
        self.say("reading the source's schema…")
        failpoints.hit("db.opening")
        db = read_database(self.config)
        found = problems(self.config, db)
        if found:
            raise ConfigError(str(self.config.path), found)
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        plan = json.dumps({"database": json.loads(db.to_json()), "partitions": []})
        checkpoint.start_run(conn, self.run_id, job, fingerprint(self.config), plan, self.owner)
        conn.commit()
        return db, False

    def _refuse_leftovers(self, conn: pg.Connection, run_id: str) -> None:
        """Append and upsert build in the schema itself: tables an unfinished run made would be taken for the
        user's (their keys never built, their rows loaded twice). Refuse instead of guessing."""
        if self.build != self.schema:
            return  # replace: the schema beside is dropped and built again
        made = json.loads(checkpoint.done_steps(conn, run_id).get("pre-data", ("", None))[1] or "{}").get("tables", [])
        if made:
            raise ConfigError(str(self.config.path), [
                f"the unfinished run {run_id} made table(s) {', '.join(made)} in schema {self.schema} and did not "
                "finish: rerun without --fresh to resume it, or drop them first (mode append/upsert keeps what it "
                "finds)"])

    def run(self) -> RunReport:
        started = time.perf_counter()
        report = self.report
        try:
            self._source_answers()
            both = Patience(self.patience.retries, self.patience.reconnect_for,
                            (self.config.source_url, self.config.target_url))  # it reads the source's schema
            db, resumed = with_retries(self._open, "opening the run", both, self.heard)
            report.run_id, report.resumed = self.run_id, resumed
            self.migrate(db)
            report.status = "succeeded"
            return report
        except BaseException as exc:
            advised = with_advice(pg.translate(exc, "the whole-database run") if pg.is_driver_error(exc) else exc)
            report.status = "failed"
            report.error = redact(str(advised))
            if self.run_id:
                self._record_failure()
            setattr(advised, "report", report)  # noqa: B010 - the CLI prints the report of a failed run
            if advised is exc:
                raise
            raise advised from None
        finally:
            report.wall_seconds = round(time.perf_counter() - started, 3)
            report.peak_rss_mb = round(peak_rss_mb(), 1)
            self._summarise()
            if self.locked:
                with suppress(Exception):
                    self.lock.close()

    def _source_answers(self) -> None:
        """A source down from the start is looked for `START_GRACE` seconds, not all of `reconnect_for`."""
        try:
            wait_for_servers(at_start(Patience(0, self.patience.reconnect_for, (self.config.source_url,))), "", None)
        except TransientError:
            raise SourceError(f"cannot connect to the source {self.config.source_url}: "
                              f"{unreachable(self.config.source_url)}") from None

    def _open(self) -> tuple[DatabaseSchema, bool]:
        """The engine's tables, the job's lock and the run, opened or resumed: retried whole after an outage (a run
        an attempt opened before its answer was lost is resumed by the next)."""
        with pg.connection(self.config.target_url) as conn:
            checkpoint.ensure_schema(conn)
            self._take_lock()
            return self.open_run(conn)

    def _take_lock(self) -> None:
        if self.locked:  # by an earlier attempt: still held, or taken again if its session ended
            self._hold_lock()
            return
        conn = pg.connect(self.config.target_url, autocommit=True)
        try:
            checkpoint.try_lock_job(conn, self.config.job.name)
        except BaseException:
            with suppress(Exception):
                conn.close()
            raise
        self.lock, self.locked = conn, True

    def migrate(self, db: DatabaseSchema) -> None:
        names = ddl.Names(db, self.config.target.naming)
        self.report.database["not_carried"] = [{"what": n.what, "reason": n.reason, "suggestion": n.suggestion}
                                               for n in db.not_carried]
        self.upserted(db)
        # one snapshot of a PostgreSQL source for the orphan check and every table (each table's share lock keeps
        # TRUNCATE and DDL off it meanwhile); retaken if lost, as a table's run does (source.snapshot)
        locked = ", ".join(_relation(t) for t in db.tables if t.copy_data)
        with shared_snapshot(self.config.source_url, locked or None) as self.snapshot:
            orphans = self.check_orphans(db)
            self.pre_data(db, names)
            pg.forget_databases()  # the tables' runs see the types pre-data made (they keep the cache: see Run)
            with ThreadPoolExecutor(1, thread_name_prefix="post-data") as builder:
                pending = self.load_tables(db, names, orphans, builder)
                for future in pending:
                    future.result()
        self.restart_sequences(db, names)
        made = self._created()
        keys = [fk for fk in db.foreign_keys if fk.table in made]  # append, upsert: what was there stays as it is
        not_valid = {_key(o.key) for o in orphans} if self.config.target.orphans == "not_valid" else set()
        self.foreign_keys(keys, names, not_valid, {t.name: t.bytes for t in db.tables})
        self.report.database["not_valid"] = sorted(not_valid)
        failed = self.report.database.setdefault("failed", {})
        for view in ddl.views_in_order(db.views):
            error = self.try_step(f"view {view.name}", partial(_statement, ddl.create_view, view, names), "view")
            if error:
                failed[view.name] = error
        for routine in [r for r in db.routines if r.kind == "trigger" and r.table in made]:
            error = self.try_step(f"trigger {routine.table}.{routine.name}", partial(_statement, names.routine, routine.ddl),
                                  "trigger")
            if error:
                failed[f"trigger {routine.name}"] = error
        self.report.database["failed"] = failed
        self.finish()

    def restart_sequences(self, db: DatabaseSchema, names: ddl.Names) -> None:
        """Identities and sequences continue from the source's state as it is now, after the copy (sequences are
        not transactional: a value read now is past every row copied, even from a live source). Tables that were
        there before (append, upsert) continue past their own rows too."""
        if "sequences" in self.done:
            return
        now = self._read_again(db)
        made, sequences = self._created(), self._created("sequences")
        tables = [_ahead(t, now) for t in db.tables]
        restarts = ddl.identity_restarts([t for t in tables if t.name in made], names)
        restarts += ddl.identity_restarts([t for t in tables if t.name not in made], names, past_rows=True)
        later = {q.name: q.next_value for q in now.sequences}
        restarts += ddl.sequence_restarts([q.model_copy(update={"next_value": max(q.next_value, later.get(q.name, 0))})
                                           for q in db.sequences if q.name in sequences])
        self.step("sequences", restarts, "sequences")

    def _read_again(self, db: DatabaseSchema) -> DatabaseSchema:
        try:
            return read_database(self.config)
        except EngineError as exc:  # the values read when planning (before the copy) are the fallback
            self.heard(f"reading the source's sequences again failed ({exc}); using those read when planning")
            return db

    def foreign_keys(self, keys: list[ForeignKey], names: ddl.Names, not_valid: set[str],
                     sizes: dict[str, int]) -> None:
        """Every key added NOT VALID in one step (quick), then each validated in a step of its own. Validations of
        one table wait for each other (each locks its table against the others), those of different tables do
        not: a table's keys go one after another, `workers` tables at a time, the largest first."""
        self.step("foreign keys", [ddl.add_foreign_key(fk, names) for fk in keys], "fk")
        by_table: dict[str, list[ForeignKey]] = {}
        for fk in keys:
            if _key(fk) not in not_valid:
                by_table.setdefault(fk.table, []).append(fk)

        def validate(table_keys: list[ForeignKey]) -> None:
            for fk in table_keys:
                self.step(f"validate {fk.table}.{fk.name}", [ddl.validate_foreign_key(fk, names)], "validate")

        with ThreadPoolExecutor(self.config.pipeline.workers, thread_name_prefix="validate") as pool:
            for future in [pool.submit(validate, by_table[t]) for t in sorted(by_table, key=lambda t: -sizes.get(t, 0))]:
                future.result()

    def check_orphans(self, db: DatabaseSchema) -> list[Orphans]:
        """Before any row moves. Recorded, so a resume keeps the verdict the load was made under."""
        if "orphans" in self.done:
            counts = json.loads(self.done["orphans"][1] or "{}")
            return [Orphans(fk, int(counts[_key(fk)])) for fk in db.foreign_keys if _key(fk) in counts]
        self.say(f"checking {len(db.foreign_keys)} foreign key(s) for orphan rows in the source…")
        orphans, error = orphan_check(self.config, db)
        self.report.database["orphans"] = [o.describe() for o in orphans]
        if error:
            raise OrphanRows(error)
        self.record("orphans", detail=json.dumps({_key(o.key): o.rows for o in orphans}))
        return orphans

    def pre_data(self, db: DatabaseSchema, names: ddl.Names) -> None:
        """The schema (beside the old one under replace), its types and functions, and the bare tables."""
        if "pre-data" in self.done:
            return
        existing = self._existing()
        tables = [t for t in db.tables if names.table(t.name) not in existing]
        db = db.model_copy(update={  # append and upsert: what a run before made stays as it is
            "enums": [e for e in db.enums if e.name not in existing],
            "domains": [d for d in db.domains if d.name not in existing],
            "sequences": [q for q in db.sequences if q.name not in existing]})
        start = [f"DROP SCHEMA IF EXISTS {quote_ident(self.build)} CASCADE"] if self.build != self.schema else []
        start += [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.build)}"]
        start += [r.ddl for r in db.routines if r.kind == "extension" and self._extension_available(r.name)]
        start += [ddl.set_path(self.build)]
        self.say(f"creating schema {self.build}: {len(tables)} table(s), {len(db.enums)} enum(s), "
                 f"{len(db.domains)} domain(s), {len(db.sequences)} sequence(s)")
        # the tables it made are recorded with it: append leaves the others (and their indexes) as they are
        statements = start + ddl.pre_data(db, names, tables, self.schema, self.upserted(db))
        made = {"tables": [t.name for t in tables], "sequences": [q.name for q in db.sequences]}
        self.step("pre-data", statements, "pre-data", json.dumps(made))

    def upserted(self, db: DatabaseSchema) -> dict[str, list[str]]:
        """Tables loaded by upsert, and their keys: made with the tables (the upsert needs them to load)."""
        if self.build != self.schema:
            return {}
        keys = {t.name: upsert_key(self.config, t) for t in db.tables}
        primary = {t.name: t.primary_key.columns for t in db.tables if t.primary_key}
        self.upserted_names = frozenset(n for n, k in keys.items() if k and k == primary.get(n))  # its PK made
        return {n: k for n, k in keys.items() if k}

    def _existing(self) -> set[str]:
        """Names of the tables, sequences and types already in the schema (none, when it is built beside)."""
        if self.build != self.schema:
            return set()
        with pg.connection(self.config.target_url) as conn:
            rows = pg.fetch_all(conn, """
                SELECT relname FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
                  AND relkind IN ('r', 'p', 'S')
                UNION SELECT typname FROM pg_type WHERE typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
                  AND typtype IN ('e', 'd')""", (self.build,))
        return {str(r[0]) for r in rows}

    def _extension_available(self, name: str) -> bool:
        with pg.connection(self.config.target_url) as conn:
            found = pg.fetch_all(conn, "SELECT 1 FROM pg_available_extensions WHERE name = $1", (name,))
        if not found:
            self.report.notes.append(f"extension {name} is not available in the target: not created")
        return bool(found)

    def _created(self, kind: str = "tables") -> set[str]:
        """What the pre-data step made (append and upsert leave what was there before as it is)."""
        return set(json.loads(self.done["pre-data"][1] or "{}").get(kind, []))

    # -------------------------------------------------------------------------------------------- data

    def load_tables(self, db: DatabaseSchema, names: ddl.Names, orphans: list[Orphans],
                    builder: ThreadPoolExecutor) -> list[Future[None]]:
        """Each table's rows, largest first, its post-data started in the background as soon as they are in.
        From PostgreSQL under replace (no key checks rows until the end) tables run side by side, their partitions
        sharing one budget of `pipeline.workers`: one table's planning and verifying overlap another's rows."""
        created = self._created()
        pending: list[Future[None]] = []
        order = sorted(db.tables, key=lambda t: (-t.bytes, -t.rows, t.name))
        if self.build == self.schema:  # append, upsert: keys already in the schema check rows as they arrive
            order = ddl.parents_first(order, db.foreign_keys)

        def load(table: Table) -> None:
            self.load_table(db, names, table, orphans)
            if table.name in created and table.partition_key is None:
                pending.append(builder.submit(self.post_data, table, names))

        pipeline = self.config.pipeline
        # From MySQL/MariaDB, tables side by side were slower (`make perf WHOLEDB=1`: 13.2 against 10.6 s): their
        # reads contend in ConnectorX; from PostgreSQL they overlap one table's planning with another's rows.
        side_by_side = (self.build != self.schema and pipeline.executor == "threads" and pipeline.workers > 1
                        and self.config.source_url.dialect == "postgresql")
        with_rows = [t for t in order if t.copy_data]
        if side_by_side:
            self.slots = threading.Semaphore(pipeline.workers)
            _all_of(with_rows, load, pipeline.workers)
        else:
            for table in with_rows:
                load(table)
        for table in order:  # tables without rows; a partitioned parent once every partition is in
            if table.name in created and (table.partition_key is not None or not table.copy_data):
                pending.append(builder.submit(self.post_data, table, names))
        return pending

    def post_data(self, table: Table, names: ddl.Names) -> None:
        """A table's indexes, then its keys, checks and ANALYZE. A large table's indexes are steps of their own,
        `pipeline.workers` built at once; a small table's are built in its one step (a step costs round trips)."""
        step = f"indexes {table.name}"
        if step in self.done:  # its index steps are done too (or, recorded before they were steps, never were)
            return
        key_made = table.name in self.upserted_names
        builds = {_index_step(table.name, index): statement
                  for index, statement in ddl.index_builds(table, names, key_made).items()}
        begun = any(name in self.done for name in builds)  # an earlier invocation took the side-by-side way
        if not begun and (table.bytes < INDEXES_SIDE_BY_SIDE_FROM or len(builds) < 2):
            self.step(step, [*builds.values(), *ddl.table_post_data(table, names, key_made)], "indexes")
            return
        with ThreadPoolExecutor(self.config.pipeline.workers, thread_name_prefix="index") as pool:
            for future in [pool.submit(self.step, name, [statement], "index") for name, statement in builds.items()]:
                future.result()  # a step recorded done is skipped
        self.step(step, ddl.table_post_data(table, names, key_made), "indexes")

    def load_table(self, db: DatabaseSchema, names: ddl.Names, table: Table, orphans: list[Orphans]) -> None:
        step = f"data {table.name}"
        if step in self.done:
            self.tables[table.name] = json.loads(self.done[step][1] or "{}")
            return
        config = table_job(self.config, db, names, table, self.build, self.sub_job(db, table), orphans)
        earlier = self._succeeded(config.job.name) if self.report.resumed else None  # a fresh run's tables ran nowhere else
        if earlier is not None:  # loaded; killed before its step was recorded
            summary: dict[str, Any] = {"run_id": earlier.run_id, "resumed": True}
        else:
            self.say(f"{table.name}: copying ~{table.rows:,} rows")
            # A table's run heals what it meets while it runs; one that ends on an outage (e.g. while it starts)
            # is waited out here and resumed from its checkpoints.
            patience = (Patience(self.config.pipeline.retries, self.config.pipeline.reconnect_for,
                                 (self.config.source_url, self.config.target_url))
                        if config.pipeline.checkpoints else Patience(0))  # without checkpoints: redone, rows twice
            attempts = itertools.count()

            def copy() -> RunReport:
                # A run whose success committed but whose answer was lost with its session is not run again: its
                # rows would be appended twice.
                done = self._succeeded(config.job.name) if next(attempts) else None
                return done if done is not None else self._run_table(config, table)

            sub = with_retries(copy, f"copying table {table.name}", patience, self.heard)
            summary = {"run_id": sub.run_id, "rows_read": sub.rows_read, "rows_loaded": sub.rows_loaded,
                       "rows_quarantined": sub.rows_quarantined, "seconds": sub.wall_seconds,
                       "partitions": sub.partitions_total, "verification": sub.verification}
            self._add(sub)
        self.record(step, detail=json.dumps(summary))
        self.tables[table.name] = summary

    def _succeeded(self, job: str) -> RunReport | None:
        """The table's run, as stored, if it succeeded."""
        return with_retries(partial(checkpoint.succeeded_report, self.config.target_url, job),
                            f"reading the state of {job}", self.patience, self.heard)

    def _run_table(self, config: JobConfig, table: Table) -> RunReport:
        self._snapshot_alive()
        return run_job(config, fresh=False, progress=lambda line: self.say(f"{table.name}: {line}"), slots=self.slots,
                       within_database=True)

    def _snapshot_alive(self) -> None:
        """The shared snapshot dies with its session (a restart): the next table reads as of a new one, or,
        under `source.snapshot = "strict"`, the run stops."""
        with self.snapshot_use:  # tables starting side by side retake it once
            self._retake_if_lost()

    def _retake_if_lost(self) -> None:
        why = self.snapshot.lost() if self.snapshot is not None else None
        if why is None or self.snapshot is None:
            return
        if self.config.source.snapshot == "strict":
            raise SnapshotLost(f"the source snapshot {self.snapshot.id} was lost ({why}) and source.snapshot = "
                               '"strict": rerun to resume (tables already copied stay as they are)')
        old = self.snapshot.id
        self.snapshot.take()
        self.heard(f"the source snapshot {old} was lost ({why}); the tables not yet copied are read as of a new one, "
                   f"{self.snapshot.id}")

    def sub_job(self, db: DatabaseSchema, table: Table) -> str:
        """The table's own job name: stable within this run (a resume finds its checkpoints), new for the next."""
        index = [t.name for t in db.tables].index(table.name)
        return f"{self.config.job.name[:70]}.{self.run_id[-6:]}.t{index:03d}"

    def _add(self, sub: RunReport) -> None:
        with self.totals_use:  # tables finish side by side
            self._add_up(sub)

    def _add_up(self, sub: RunReport) -> None:
        report = self.report
        report.rows_read += sub.rows_read
        report.rows_loaded += sub.rows_loaded
        report.rows_quarantined += sub.rows_quarantined
        report.partitions_total += sub.partitions_total
        report.partitions_run += sub.partitions_run
        report.partitions_skipped += sub.partitions_skipped
        report.rules += sub.rules

    # -------------------------------------------------------------------------------------------- the end

    def finish(self) -> None:
        """Replace: the new schema takes the old one's place in one transaction, with the run's status."""
        with_retries(self._finish, "swapping the new schema in", self.patience, self.heard)
        self.report.status = "succeeded"

    def _finish(self) -> None:
        with pg.connection(self.config.target_url) as conn:
            status = pg.fetch_all(conn, "SELECT status FROM engine.runs WHERE run_id = $1", (self.run_id,))
            if status and status[0][0] == "succeeded":  # committed before its connection was lost
                return
            if self.build != self.schema:
                pg.execute(conn, f"DROP SCHEMA IF EXISTS {quote_ident(self.schema)} CASCADE")
                pg.execute(conn, f"ALTER SCHEMA {quote_ident(self.build)} RENAME TO {quote_ident(self.schema)}")
                failpoints.hit("db.swap")
            checkpoint.set_status(conn, self.run_id, "succeeded", self._report_json())
            conn.commit()

    def _report_json(self) -> dict[str, Any]:
        self._summarise()
        return dict(json.loads(self.report.to_json()))

    def _summarise(self) -> None:
        self.report.database["tables"] = self.tables
        self.report.database["steps"] = {k: v[0] for k, v in self.done.items()}
        self.report.verification = "per table: " + ", ".join(
            f"{n} {s.get('verification', 'done')}" for n, s in sorted(self.tables.items())) if self.tables else \
            "not run"

    def _record_failure(self) -> None:
        try:
            with pg.connection(self.config.target_url) as conn:
                checkpoint.set_status(conn, self.run_id, "failed", json.loads(self.report.to_json()),
                                      self.report.error)
        except EngineError:
            pass


def table_job(config: JobConfig, db: DatabaseSchema, names: ddl.Names, table: Table, schema: str, job: str,
              orphans: list[Orphans]) -> JobConfig:
    """One table's single-table job: into the table the pre-data step made, columns renamed by the naming."""
    extra = config.tables.get(table.name)
    source: dict[str, Any] = config.source.model_dump(
        include={"url", "rows_per_partition", "partition_by", "reader", "snapshot"}, by_alias=True)
    relation = _relation(table)
    if table.read_only:  # an inheritance parent: its children are tables of their own
        source["query"] = f"SELECT * FROM ONLY {relation}"
    else:
        source["table"] = relation
    mode = "append" if config.target.mode == "replace" else (extra.mode if extra and extra.mode else
                                                              config.target.mode)
    key = list(extra.key) if extra and extra.key else [names.column(table.name, c) for c in
                                                       (table.primary_key.columns if table.primary_key else [])]
    rename = {c.name: names.column(table.name, c.name) for c in table.columns
              if names.column(table.name, c.name) != c.name}
    transform: dict[str, Any] = {"rename": rename, "drop": [names.column(table.name, c.name) for c in table.columns
                                                            if c.generated is not None]}
    validate: dict[str, Any] = {"max_error_rate": config.validate_.max_error_rate,
                                "max_errors": config.validate_.max_errors, "rules": []}
    if extra is not None:
        source.update({k: v for k, v in extra.model_dump(include={"partition_on", "partitions", "rows_per_partition"}
                                                         ).items() if v is not None})
        mine = extra.transform.model_dump()
        transform = {**mine, "rename": {**rename, **mine["rename"]}, "drop": transform["drop"] + mine["drop"]}
        validate = extra.validate_.model_dump(by_alias=True, exclude_unset=True) | {"rules": [
            r.model_dump(by_alias=True, exclude_unset=True) for r in extra.validate_.rules]}
    orphan_rules = _orphan_rules(db, names, table, orphans) if config.target.orphans == "quarantine" else []
    if orphan_rules:
        validate["rules"] = validate.get("rules", []) + orphan_rules
        if "max_error_rate" not in (extra.validate_.model_fields_set if extra else set()):
            # the orphans were counted and accepted before the load: the budget is for everything else
            known = sum(o.rows for o in orphans if o.key.table == table.name)
            validate["max_error_rate"] = min(1.0, config.validate_.max_error_rate + known / max(table.rows, known, 1))
    data = {"job": {"name": job, "description": f"table {table.name} of {config.job.name}",
                    **({"rules_dir": config.job.rules_dir} if config.job.rules_dir else {})},
            "source": source, "transform": transform, "validate": validate,
            "target": {"url": config.target.url, "table": f"{quote_ident(schema)}.{names.q_table(table.name)}",
                       "mode": mode, "key": key if mode == "upsert" else [], "create": False},
            "pipeline": config.pipeline.model_dump()}
    return parse_config(data, config.path)


def _orphan_rules(db: DatabaseSchema, names: ddl.Names, table: Table, orphans: list[Orphans]) -> list[dict[str, Any]]:
    """`orphans = "quarantine"`: the table's keys that had orphans become reference rules named after them."""
    rules = []
    for orphan in orphans:
        fk = orphan.key
        if fk.table != table.name:
            continue
        rules.append({"name": _rule_name(fk.name), "kind": "references", "table": _relation(db.table(fk.ref_table)),
                      "in": "source",
                      "columns": [names.column(table.name, c) for c in fk.columns], "keys": list(fk.ref_columns)})
    return rules


def _all_of(tables: list[Table], load: Callable[[Table], None], workers: int) -> None:
    """`load` every table, `workers` at a time, in order; the first failure stops those not started yet."""
    with ThreadPoolExecutor(workers, thread_name_prefix="table") as pool:
        futures = [pool.submit(load, t) for t in tables]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _statement(render: Callable[..., str], *args: Any) -> list[str]:
    """A step's one statement, made when the step runs (a view the naming cannot rewrite fails only itself)."""
    return [render(*args)]


def _ahead(table: Table, now: DatabaseSchema) -> Table:
    """The table with each identity's next value as the source has it now, never less than when planned."""
    later = next((t.next_values for t in now.tables if t.name == table.name), {})
    values = {c: max(v, later.get(c, v)) for c, v in table.next_values.items()}
    return table.model_copy(update={"next_values": values})


def _index_step(table: str, index: str) -> str:
    """The step that builds one index: names quoted, so no table and index names make another's step name."""
    return f"index {quote_ident(table)}.{quote_ident(index)}"


def _key(fk: ForeignKey) -> str:
    """A foreign key's name is unique per table only."""
    return f"{fk.table}.{fk.name}"


def _relation(table: Table) -> str:
    """The table as the source names it, quoted PostgreSQL-style (the single-table job's `source.table`)."""
    return relation(table, "postgresql")


def _rule_name(name: str) -> str:
    clean = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in name)[:100]
    return clean or "foreign_key"


# Index builds sort and foreign-key validations join in memory rather than in temporary files; raised for their
# own transaction only, never lowered below the server's setting.
_RAISE = ("SELECT set_config('{name}', '{size}', true) "
          "WHERE pg_size_bytes(current_setting('{name}')) < pg_size_bytes('{size}')")
_MEMORY = {"index": _RAISE.format(name="maintenance_work_mem", size="256MB"),
           "indexes": _RAISE.format(name="maintenance_work_mem", size="256MB"),
           "validate": _RAISE.format(name="work_mem", size="64MB")}


def run_database(config: JobConfig, fresh: bool = False, progress: Progress | None = None,
                 observer: Observer | None = None) -> RunReport:
    """Run (or resume) a whole-database job; raises an EngineError subclass on failure."""
    say = progress or _observer_lines(observer, config.job.name)
    return DatabaseRun(config, fresh, say).run()


def _observer_lines(observer: Observer | None, job: str) -> Progress:
    if observer is None:
        return lambda _: None
    return lambda text: observer.event({"ts": round(time.time(), 3), "run_id": "", "job": job, "table": "",
                                        "event": "message", "message": redact(text)})
