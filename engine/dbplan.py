"""Planning a whole-database job: which tables, views and sequences it carries, what it cannot carry, and the
source's orphan rows, all known before a row moves (`engine plan`, `engine check` and the run itself)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from engine.config import JobConfig
from engine.dbschema import DatabaseSchema, ForeignKey, NotCarried, Table, matches, target_name, unmatched_patterns
from engine.errors import SourceError
from engine.source import one_session, query_rows
from engine.sql import Dialect, quote_ident
from engine.typemap import is_text_type
from engine.urls import DatabaseUrl


def read_database(config: JobConfig) -> DatabaseSchema:
    """The source's schema, filtered by the job's patterns, with the job's type overrides applied."""
    url, patterns = config.source_url, config.source.tables or ["*"]
    exclude_data = config.source.exclude_data
    if url.dialect == "postgresql":
        from engine.dbcatalog_pg import read_pg, table_patterns

        bare, no_data = table_patterns(patterns), table_patterns(exclude_data)
        with one_session(url):
            db = read_pg(url, patterns, lambda n: matches(n, bare), lambda n: bool(no_data) and matches(n, no_data))
    elif url.dialect == "mysql":
        from engine.dbcatalog_mysql import read_mysql

        db = read_mysql(url, lambda n: matches(n, patterns),
                        lambda n: bool(exclude_data) and matches(n, exclude_data))
    else:
        from engine.dbcatalog_sqlite import read_sqlite

        db = read_sqlite(url, lambda n: matches(n, patterns),
                         lambda n: bool(exclude_data) and matches(n, exclude_data))
    return _without_fks_to_empty_tables(_with_type_overrides(db, config))


def _with_type_overrides(db: DatabaseSchema, config: JobConfig) -> DatabaseSchema:
    tables = []
    for table in db.tables:
        types = config.tables[table.name].types if table.name in config.tables else {}
        columns = [c.model_copy(update={"pg_type": types[c.name]}) if c.name in types else c for c in table.columns]
        tables.append(table.model_copy(update={"columns": columns}))
    return db.model_copy(update={"tables": tables})


def _without_fks_to_empty_tables(db: DatabaseSchema) -> DatabaseSchema:
    """A table carried without rows cannot be referenced by one carried with rows: its key would fail."""
    empty = {t.name for t in db.tables if not t.copy_data and t.partition_key is None}
    kept, dropped = [], []
    for fk in db.foreign_keys:
        if fk.ref_table in empty and fk.table not in empty:
            dropped.append(NotCarried(what=f"foreign key {fk.name} on {fk.table}",
                                      reason=f"its parent {fk.ref_table} is carried without rows (exclude_data)"))
        else:
            kept.append(fk)
    return db.model_copy(update={"foreign_keys": kept, "not_carried": db.not_carried + dropped})


def source_names(config: JobConfig) -> list[str]:
    """Every table and view name in the source the patterns apply to (for patterns that match nothing)."""
    url = config.source_url
    if url.dialect == "postgresql":
        from engine.dbcatalog_pg import schema_of

        schema = schema_of(config.source.tables or [])
        rows = query_rows(url, "SELECT relname FROM pg_class "
                               "WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) "
                               "AND relkind IN ('r', 'p', 'v', 'm')", (schema,))
    elif url.dialect == "mysql":
        rows = query_rows(url, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
    else:
        rows = query_rows(url, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                               "AND name NOT LIKE 'sqlite_%'")
    return [str(r[0]) for r in rows]


def problems(config: JobConfig, db: DatabaseSchema) -> list[str]:
    """What would stop the job, found without writing anything."""
    found: list[str] = []
    patterns = [p.removeprefix("!").split(".", 1)[-1] if config.source_url.dialect == "postgresql" else p
                for p in config.source.tables or []]
    names = source_names(config)
    for pattern in unmatched_patterns(names, patterns):
        found.append(f"`source.tables`: pattern {pattern!r} matches no table or view in the source")
    for pattern in unmatched_patterns(names, config.source.exclude_data):
        found.append(f"`source.exclude_data`: pattern {pattern!r} matches no table in the source")
    if not db.tables:
        found.append("`source.tables`: no table matched; check the patterns (names are case-sensitive)")
    carried = {t.name for t in db.tables}
    found += [f"`tables.{n}`: no such table among those the job copies ({', '.join(sorted(carried)) or 'none'})"
              for n in config.tables if n not in carried]
    found += _name_clashes(config, db)
    found += [f"table {t.name}: mode = \"upsert\" needs a key, and it has no primary key; set [tables.{t.name}] "
              "key = [...]" for t in db.tables if t.copy_data and upsert_key(config, t) == []]
    if config.target.mode == "replace":
        found += [f"`tables.{n}.mode`: a table's mode goes with target.mode append or upsert; replace builds the "
                  "whole schema anew" for n, t in config.tables.items() if t.mode is not None]
    return found


def upsert_key(config: JobConfig, table: Table) -> list[str] | None:
    """The source columns a table loaded by upsert is keyed on ([] when it has none); None: not an upsert."""
    extra = config.tables.get(table.name)
    mode = extra.mode if extra is not None and extra.mode else config.target.mode
    if mode != "upsert":
        return None
    if extra is not None and extra.key:
        return list(extra.key)
    return list(table.primary_key.columns) if table.primary_key else []


def _name_clashes(config: JobConfig, db: DatabaseSchema) -> list[str]:
    naming = config.target.naming
    found = []
    seen: dict[str, str] = {}
    for name in [t.name for t in db.tables] + [v.name for v in db.views]:
        target = target_name(name, naming)
        if target in seen:
            found.append(f"`target.naming = \"{naming}\"`: {seen[target]!r} and {name!r} both become {target!r}; "
                         "use naming = \"keep\" or exclude one")
        seen[target] = name
    for table in db.tables:
        columns: dict[str, str] = {}
        for column in table.columns:
            target = target_name(column.name, naming)
            if target in columns:
                found.append(f"`target.naming = \"{naming}\"`: in {table.name}, columns {columns[target]!r} and "
                             f"{column.name!r} both become {target!r}")
            columns[target] = column.name
    return found


# ------------------------------------------------------------------------------------------------ orphans

@dataclass
class Orphans:
    key: ForeignKey
    rows: int
    samples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        cols = ", ".join(self.key.columns)
        return (f"foreign key {self.key.name}: {self.rows:,} row(s) of {self.key.table} ({cols}) have no parent in "
                f"{self.key.ref_table}; e.g. {'; '.join(self.samples)}")


def relation(table: Table, dialect: Dialect) -> str:
    """The table as the source names it, quoted for `dialect` (schema-qualified in PostgreSQL)."""
    name = quote_ident(table.name, dialect)
    return f"{quote_ident(table.schema_)}.{name}" if table.schema_ and dialect == "postgresql" else name


def find_orphans(url: DatabaseUrl, db: DatabaseSchema, workers: int = 2) -> list[Orphans]:
    """One anti-join per foreign key in the source: rows whose key (all parts non-NULL) has no parent. `workers`
    at a time (a PostgreSQL source's run with a snapshot takes them in turn on the snapshot's session)."""
    keys = [fk for fk in db.foreign_keys if db.table(fk.table).copy_data]
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="orphans") as pool:
        found = list(pool.map(lambda fk: _orphans_of(url, db, fk), keys))
    return [o for o in found if o is not None]


def _orphans_of(url: DatabaseUrl, db: DatabaseSchema, fk: ForeignKey) -> Orphans | None:
    sql = _orphans_sql(fk, db.table(fk.table), db.table(fk.ref_table), url.dialect)
    count = int(query_rows(url, f"SELECT count(*) FROM {sql}")[0][0])
    if not count:
        return None
    cols = ", ".join(f"c.{quote_ident(c, url.dialect)}" for c in fk.columns)
    samples = query_rows(url, f"SELECT {cols} FROM {sql} LIMIT 5")
    return Orphans(fk, count, [json.dumps(list(r), default=str) for r in samples])


def _orphans_sql(fk: ForeignKey, child: Table, parent: Table, dialect: Dialect) -> str:
    q = lambda name: quote_ident(name, dialect)  # noqa: E731 - a short alias keeps the SQL readable
    present = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in fk.columns)
    # MySQL compares text by the column's collation ('abc' = 'ABC ', as PostgreSQL would not): text keys byte for
    # byte too, after the comparison that can use the parent's index (numbers: that one only, it stays fast)
    texts = {c.name for c in child.columns if is_text_type(c.pg_type)}

    def exact(c: str, r: str) -> str:
        return f" AND BINARY p.{q(r)} = BINARY c.{q(c)}" if dialect == "mysql" and c in texts else ""

    joined = " AND ".join(f"p.{q(r)} = c.{q(c)}{exact(c, r)}" for c, r in zip(fk.columns, fk.ref_columns, strict=True))
    return (f"{relation(child, dialect)} c WHERE {present} AND NOT EXISTS "
            f"(SELECT 1 FROM {relation(parent, dialect)} p WHERE {joined})")


def orphan_check(config: JobConfig, db: DatabaseSchema) -> tuple[list[Orphans], str | None]:
    """The orphans, and the error that stops the run when the policy is `fail`."""
    try:
        orphans = find_orphans(config.source_url, db, config.pipeline.workers)
    except SourceError as exc:
        return [], f"the orphan check failed: {exc}"
    if orphans and config.target.orphans == "fail":
        lines = "; ".join(o.describe() for o in orphans)
        return orphans, (f"orphan rows in the source, nothing loaded: {lines}. Fix them in the source, or set "
                         '[target] orphans = "quarantine" (they go to the quarantine, the key is kept) or '
                         '"not_valid" (they are loaded, the key is left NOT VALID)')
    return orphans, None


# ------------------------------------------------------------------------------------------------ engine plan

def describe(config: JobConfig, db: DatabaseSchema, orphans: list[Orphans], routes: dict[str, str] | None = None) -> str:
    """`engine plan`'s text; `routes`: how each table's rows go, when the job chose `reader = "copy"`."""
    naming = config.target.naming
    lines = [f"job {config.job.name}: whole database {config.source_url} -> {config.target_url} "
             f"schema {config.target.schema_} [{config.target.mode}, naming {naming}, orphans {config.target.orphans}]"]
    lines.append(f"  tables ({len(db.tables)}), largest first:")
    for t in sorted(db.tables, key=lambda t: (-t.bytes, -t.rows, t.name)):
        keys = f"pk ({', '.join(t.primary_key.columns)})" if t.primary_key else "no primary key"
        extra = [] if t.copy_data else ["schema only" if t.partition_key is None else "rows via its partitions"]
        extra += [f"{c} continues at {v}" for c, v in t.next_values.items()]
        extra += [routes[t.name]] if routes and t.name in routes else []
        lines.append(f"    {t.name} -> {target_name(t.name, naming)}  ~{t.rows:,} rows, {len(t.columns)} columns, "
                     f"{keys}, {len(t.indexes)} index(es), {len(t.checks)} check(s)"
                     + (f"  [{'; '.join(extra)}]" if extra else ""))
    lines.append(f"  foreign keys ({len(db.foreign_keys)}): " + ", ".join(
        f"{k.table}.{k.name} -> {k.ref_table}" for k in db.foreign_keys))
    lines.append(f"  views ({len(db.views)}): " + ", ".join(v.name for v in db.views))
    lines.append(f"  sequences ({len(db.sequences)}): " + ", ".join(f"{s.name} at {s.next_value}" for s in db.sequences))
    if db.enums or db.domains:
        lines.append("  types: " + ", ".join([f"enum {e.name}" for e in db.enums] + [f"domain {d.name}"
                                                                                    for d in db.domains]))
    routines = [r for r in db.routines if r.kind != "extension"]
    if routines:
        lines.append("  functions and triggers: " + ", ".join(f"{r.kind} {r.name}" for r in routines))
    lines.append(f"  orphan rows: {'none' if not orphans else ''}")
    lines += [f"    {o.describe()}" for o in orphans]
    if db.not_carried:
        lines.append(f"  not carried ({len(db.not_carried)}):")
        for n in db.not_carried:
            lines.append(f"    {n.what}: {n.reason}" + (f"; instead: {n.suggestion}" if n.suggestion else ""))
    return "\n".join(lines)
