"""Load modes, one object each: what a mode writes into, how it writes, how it finishes and what it checks.

- append:  COPY straight into the table (or through a temporary table when a column needs a cast);
- replace: COPY into a staging table `<table>__engine_new`, swapped in for the table in one transaction at
           the end (readers see the old table or the new one, never a mix);
- upsert:  COPY into a temporary table, then INSERT … ON CONFLICT (key) DO UPDATE.
A new mode is a new class here and an entry in `MODES`; the stages only call these methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import failpoints, pg
from engine.model import LoadMode, LoadTarget
from engine.sql import TableName, quote_ident

STAGING_SUFFIX = "__engine_new"


@dataclass(frozen=True)
class Append:
    name: LoadMode = "append"
    summary: str = "rows are added to the table; a rerun after success adds them again"

    def write_table(self, table: TableName) -> TableName:
        return table

    def prepare(self, conn: pg.Connection, table: TableName, create_sql: str, like_existing: bool,
                resuming: bool) -> None:
        """Create what partitions write into (`create_sql` creates `write_table(table)`)."""
        if pg.table_columns(conn, table) is None:
            pg.execute(conn, create_sql)

    def problems(self, conn: pg.Connection, table: TableName, key: tuple[str, ...]) -> list[str]:
        return []

    @property
    def always_via_text(self) -> bool:
        """Whether every batch goes through a temporary table and an INSERT … SELECT."""
        return False

    def insert_clause(self, target: LoadTarget) -> str:
        return ""

    def finish(self, conn: pg.Connection, target: LoadTarget) -> None:
        """In the run's final transaction, after verification."""

    def verify(self, conn: pg.Connection, target: LoadTarget, loaded: int) -> list[str]:
        return []

    def verified(self) -> str:
        return ""

    def abandoned_note(self, run_id: str) -> str | None:
        """What the report says when `--fresh` abandons an unfinished run."""
        return f"run {run_id} was abandoned: rows it had committed stay in the target"


@dataclass(frozen=True)
class Replace(Append):
    name: LoadMode = "replace"
    summary: str = "a new table is loaded beside the old one and swapped in at the end, in one transaction"

    def write_table(self, table: TableName) -> TableName:
        return table.with_suffix(STAGING_SUFFIX)

    def prepare(self, conn: pg.Connection, table: TableName, create_sql: str, like_existing: bool,
                resuming: bool) -> None:
        # The new table keeps the old one's definition (indexes, defaults) when its columns are exactly the job's.
        staging = self.write_table(table)
        staged = pg.table_columns(conn, staging) if resuming else None
        if staged is None:
            pg.execute(conn, f"DROP TABLE IF EXISTS {staging.quoted()}")
            pg.execute(conn, f"CREATE TABLE {staging.quoted()} (LIKE {table.quoted()} INCLUDING ALL)" if like_existing
                       else create_sql)
        if pg.table_columns(conn, table) is None:  # the swap needs a table to replace
            pg.execute(conn, f"CREATE TABLE {table.quoted()} (LIKE {staging.quoted()})")

    def finish(self, conn: pg.Connection, target: LoadTarget) -> None:
        """The staging table becomes the table in one transaction (readers see old or new)."""
        failpoints.hit("replace.before_swap")
        pg.execute(conn, f"LOCK TABLE {target.table.quoted()} IN ACCESS EXCLUSIVE MODE")
        old_indexes = _indexes(conn, target.table)
        pg.execute(conn, f"DROP TABLE {target.table.quoted()}")
        pg.execute(conn, f"ALTER TABLE {target.write_table.quoted()} RENAME TO {quote_ident(target.table.name)}")
        _take_old_index_names(conn, target.table, old_indexes)
        _drop_staging_suffix(conn, target.table)

    def verify(self, conn: pg.Connection, target: LoadTarget, loaded: int) -> list[str]:
        in_target = pg.count_rows(conn, target.write_table)
        return [] if in_target == loaded else [f"the new table holds {in_target:,} rows, {loaded:,} were loaded"]

    def verified(self) -> str:
        return "; new table row count matches"

    def abandoned_note(self, run_id: str) -> str | None:
        return None  # its staging table is rebuilt; the old table was never touched


@dataclass(frozen=True)
class Upsert(Append):
    name: LoadMode = "upsert"
    summary: str = "rows with a new key are inserted, rows with an existing key update it"

    def problems(self, conn: pg.Connection, table: TableName, key: tuple[str, ...]) -> list[str]:
        if pg.table_columns(conn, table) is None or set(key) in pg.unique_keys(conn, table):
            return []
        return [f"`target.key`: {table} has no unique index or primary key on ({', '.join(key)}); upsert needs one "
                "(CREATE UNIQUE INDEX … or let the engine create the table)"]

    @property
    def always_via_text(self) -> bool:
        return True

    def insert_clause(self, target: LoadTarget) -> str:
        keys = ", ".join(quote_ident(k) for k in target.key)
        updates = [f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n, _ in target.columns if n not in target.key]
        return f" ON CONFLICT ({keys}) " + (f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING")

    def abandoned_note(self, run_id: str) -> str | None:
        return None  # a rerun writes the same rows over them


Mode = Append
MODES: dict[LoadMode, Mode] = {"append": Append(), "replace": Replace(), "upsert": Upsert()}


def mode_of(name: LoadMode) -> Mode:
    return MODES[name]


def _indexes(conn: pg.Connection, table: TableName) -> list[tuple[str, str, str]]:
    """(schema, name, definition after its name and table) of each index on `table`, oldest first."""
    rows = pg.fetch_all(conn, """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indrelid = to_regclass($1) ORDER BY i.indexrelid""", (table.quoted(),))
    return [(r[0], r[1], _index_shape(r[2])) for r in rows]


def _index_shape(definition: str) -> str:
    """`CREATE [UNIQUE] INDEX name ON table USING btree (a) WHERE …` without the name and the table."""
    unique = definition.startswith("CREATE UNIQUE")
    return ("UNIQUE " if unique else "") + definition[definition.index(" USING "):]


def _take_old_index_names(conn: pg.Connection, table: TableName, old: list[tuple[str, str, str]]) -> None:
    """The swapped-in table's indexes (and the constraints they back) get the names the old table's had: the
    new table was made LIKE the old one, so each index has its twin, matched by its definition."""
    names_by_shape: dict[str, list[str]] = {}
    for _, name, shape in old:
        names_by_shape.setdefault(shape, []).append(name)
    for schema, name, shape in _indexes(conn, table):
        wanted = names_by_shape.get(shape)
        if not wanted:
            continue
        old_name = wanted.pop(0)
        if old_name != name:
            pg.execute(conn, f"ALTER INDEX {quote_ident(schema)}.{quote_ident(name)} RENAME TO {quote_ident(old_name)}")


def _drop_staging_suffix(conn: pg.Connection, table: TableName) -> None:
    """Indexes (and with them their constraints) and owned sequences of the swapped-in table were named after
    the staging table: give them the names the old table's had (`orders_pkey`, not `orders__engine_new_pkey`)."""
    owned = pg.fetch_all(conn, """
        SELECT c.relname, c.relkind::text, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = to_regclass($1))
           OR c.oid IN (SELECT objid FROM pg_depend WHERE refobjid = to_regclass($1)
                        AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i'))""", (table.quoted(),))
    for name, kind, schema in owned:
        if STAGING_SUFFIX not in name or kind not in ("i", "S"):
            continue
        wanted = name.replace(STAGING_SUFFIX, "", 1)
        if pg.fetch_all(conn, "SELECT to_regclass($1)", (f"{quote_ident(schema)}.{quote_ident(wanted)}",))[0][0]:
            continue  # the name is taken by something else: keep the staging name rather than fail the swap
        what = "INDEX" if kind == "i" else "SEQUENCE"
        pg.execute(conn, f"ALTER {what} {quote_ident(schema)}.{quote_ident(name)} RENAME TO {quote_ident(wanted)}")
