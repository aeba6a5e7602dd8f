"""A `DatabaseSchema` as the target's statements, step by step, with the job's naming applied.

Pure: no connection here. Every statement is meant to run with `search_path` set to the schema being built
(`set_path`), so names are unqualified and the same statements build the final schema or the one beside it
that a replace swaps in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlglot
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from engine.dbschema import Column, DatabaseSchema, ForeignKey, Index, Naming, Sequence, Table, View, target_name
from engine.sql import PG_MAX_IDENT_BYTES, quote_ident, quote_literal


class Optional(str):
    """A statement whose failure leaves its object out (reported) instead of failing the step: a function whose
    body or signature needs what the job leaves out."""

    what: str = ""


def optional(sql: str, what: str) -> Optional:
    statement = Optional(sql)
    statement.what = what
    return statement


def set_path(schema: str) -> str:
    return f"SET LOCAL search_path TO {quote_ident(schema)}, public"


class Names:
    """Target names for the source's tables, columns, indexes and constraints under the job's naming."""

    def __init__(self, db: DatabaseSchema, naming: Naming) -> None:
        self.naming = naming
        self.columns = {t.name: {c.name: target_name(c.name, naming) for c in t.columns} for t in db.tables}
        self.tables = {t.name: target_name(t.name, naming) for t in db.tables}
        self.tables.update({v.name: target_name(v.name, naming) for v in db.views})
        self._indexes = _index_names(db, self.tables, naming)
        # a view reads tables' and other views' columns (whose names the view's column list renames)
        self._any_column = {c: target_name(c, naming) for v in db.views for c in v.columns}
        self._any_column.update({s: t for table in self.columns.values() for s, t in table.items()})

    def table(self, name: str) -> str:
        return self.tables.get(name, target_name(name, self.naming))

    def column(self, table: str, name: str) -> str:
        return self.columns.get(table, {}).get(name, target_name(name, self.naming))

    def q_table(self, name: str) -> str:
        return quote_ident(self.table(name))

    def q_columns(self, table: str, names: Iterable[str]) -> str:
        return ", ".join(quote_ident(self.column(table, n)) for n in names)

    def index(self, table: str, index: Index) -> str:
        return self._indexes[(table, index.name)]

    def constraint(self, name: str) -> str:
        return _fit(target_name(name, self.naming))

    def routine(self, ddl: str) -> str:
        """A function's or trigger's DDL under the naming: the tables and columns its header and its body name
        (a body the tokenizer cannot read keeps its names, and fails when called, as PostgreSQL would say)."""
        if self.naming == "keep":
            return ddl
        try:
            return rename(ddl, self.tables, self._any_column, bodies=True)
        except SqlError:
            return rename(ddl, self.tables, self._any_column)

    def expression(self, table: str, sql: str) -> str:
        """A PostgreSQL expression or query with the source's table and column names replaced by the target's."""
        if self.naming == "keep":
            return sql
        return rename(sql, self.tables, self.columns.get(table) or self._any_column)


def _fit(name: str) -> str:
    return name.encode()[:PG_MAX_IDENT_BYTES].decode(errors="ignore")


def _index_names(db: DatabaseSchema, tables: dict[str, str], naming: Naming) -> dict[tuple[str, str], str]:
    """Index names are per schema in PostgreSQL, per table in MySQL and SQLite (every MySQL primary key is
    `PRIMARY`): a name used twice, or by a table, gets its table's name in front."""
    wanted = {(t.name, i.name): target_name(i.name, naming) for t in db.tables for i in _all_indexes(t)}
    for t in db.tables:
        if t.primary_key is not None:
            wanted[(t.name, t.primary_key.name)] = f"{tables[t.name]}_pkey"
    seen: dict[str, int] = {}
    for name in wanted.values():
        seen[name] = seen.get(name, 0) + 1
    taken = set(tables.values())
    return {(table, index): _fit(name if seen[name] == 1 and name not in taken else f"{tables[table]}_{name}")
            for (table, index), name in wanted.items()}


def _all_indexes(table: Table) -> list[Index]:
    return ([table.primary_key] if table.primary_key else []) + list(table.indexes)


class SqlError(ValueError):
    """An expression, index or view the naming could not rewrite."""


_NAMES = (TokenType.VAR, TokenType.IDENTIFIER)


def rename(sql: str, tables: dict[str, str], columns: dict[str, str], bodies: bool = False) -> str:
    """Rename tables and columns in PostgreSQL SQL: identifier tokens only (never string literals), the rest of
    the text as it was, so any statement the server printed (index options, operator classes) survives.
    `bodies`: inside dollar-quoted strings too (a function's SQL or PL/pgSQL body)."""
    try:
        tokens = sqlglot.tokenize(sql, read="postgres")
    except SqlglotError as exc:
        raise SqlError(f"cannot rename the names in {sql[:200]!r}: {exc}") from None
    parts, at = [], 0
    for token in tokens:
        if bodies and token.token_type == TokenType.HEREDOC_STRING and token.text:
            inner = sql.index(token.text, token.start)  # the body, between its $tag$ quotes
            parts += [sql[at:inner], rename(token.text, tables, columns)]
            at = inner + len(token.text)
            continue
        new = tables.get(token.text, columns.get(token.text)) if token.token_type in _NAMES else None
        if new is None or new == token.text:
            continue
        parts += [sql[at:token.start], quote_ident(new)]
        at = token.end + 1
    return "".join(parts) + sql[at:]


# ------------------------------------------------------------------------------------------------ pre-data

def pre_data(db: DatabaseSchema, names: Names, tables: list[Table], schema: str,
             keys_first: dict[str, list[str]] | None = None) -> list[str]:
    """Types, standalone sequences, functions and the tables with NOT NULL only: what the rows need to land (the
    tables in `keys_first` with a unique index on those columns too, which an upsert needs). `schema` is the final
    schema's name: functions whose bodies name tables unqualified read them there."""
    statements = [f"CREATE TYPE {quote_ident(e.name)} AS ENUM ({', '.join(map(quote_literal, e.labels))})"
                  for e in db.enums]
    statements += [_domain(d.name, d.base_type, d.not_null, d.default, d.checks) for d in db.domains]
    statements += [_sequence(s) for s in db.sequences]
    statements += ["SET LOCAL check_function_bodies = off"]  # bodies may read tables made below
    functions = [r for r in db.routines if r.kind == "function"]
    statements += [optional(names.routine(r.ddl), f"function {r.name}") for r in functions
                   if not _takes_a_row(r.ddl, db)]
    for table in _parents_first(tables):
        statements += create_table(table, names)
        key = (keys_first or {}).get(table.name)
        if key and table.partition_of is None:
            primary = table.primary_key is not None and table.primary_key.columns == key
            index = table.primary_key if primary and table.primary_key else Index(
                name=f"{table.name}_upsert_key", columns=key, unique=True)
            statements += build_index(table, index, names)
    statements += [optional(names.routine(r.ddl), f"function {r.name}") for r in functions if _takes_a_row(r.ddl, db)]
    # The source's functions found unqualified names through the caller's search_path, where the source schema
    # was; in the target that schema has another name, so each function carries the path to its own.
    return statements + [optional(f"ALTER {'PROCEDURE' if ' PROCEDURE ' in r.ddl[:40] else 'FUNCTION'} "
                                  f"{names.routine(r.signature)} SET search_path TO {quote_ident(schema)}, public",
                                  f"function {r.name}") for r in functions if r.signature]


def _takes_a_row(function_ddl: str, db: DatabaseSchema) -> bool:
    """Whether a function's signature names a table's row type: it can only be made after the table."""
    header = function_ddl.split("\nAS ", 1)[0].split("(", 1)[-1]
    return any(re.search(rf"(?<![\w\"]){re.escape(t.name)}(?![\w\"])|\"{re.escape(t.name)}\"", header)
               for t in db.tables)


def _domain(name: str, base: str, not_null: bool, default: str | None, checks: list[str]) -> str:
    parts = [f"CREATE DOMAIN {quote_ident(name)} AS {base}"]
    parts += [f"DEFAULT {default}"] if default else []
    parts += ["NOT NULL"] if not_null else []
    return " ".join(parts + checks)


def _sequence(s: Sequence) -> str:
    bounds = (f" MINVALUE {s.min_value}" if s.min_value is not None else "") + (
        f" MAXVALUE {s.max_value}" if s.max_value is not None else "")
    return (f"CREATE SEQUENCE {quote_ident(s.name)} AS {s.data_type} INCREMENT BY {s.increment}{bounds} "
            f"START WITH {s.start}{' CYCLE' if s.cycle else ''}")


def _parents_first(tables: list[Table]) -> list[Table]:
    """A partition after its parent, an inheritance child after its parents."""
    return _in_order(tables, lambda t: [t.partition_of or "", *t.inherits])


def create_table(table: Table, names: Names) -> list[str]:
    name = names.q_table(table.name)
    if table.partition_of is not None:
        statements = [f"CREATE TABLE {name} PARTITION OF {names.q_table(table.partition_of)} {table.partition_bound}"
                      + (f" PARTITION BY {names.expression(table.name, table.partition_key)}"
                         if table.partition_key else "")]
    else:
        body = ",\n  ".join(_column(table.name, c, names) for c in table.columns)
        tail = f" INHERITS ({', '.join(names.q_table(p) for p in table.inherits)})" if table.inherits else ""
        tail += f" PARTITION BY {names.expression(table.name, table.partition_key)}" if table.partition_key else ""
        statements = [f"CREATE TABLE {name} (\n  {body}\n){tail}"]
    if table.comment:
        statements.append(f"COMMENT ON TABLE {name} IS {quote_literal(table.comment)}")
    statements += [f"COMMENT ON COLUMN {name}.{quote_ident(names.column(table.name, c.name))} IS "
                   f"{quote_literal(c.comment)}" for c in table.columns if c.comment and table.partition_of is None]
    return statements


def _column(table: str, column: Column, names: Names) -> str:
    parts = [quote_ident(names.column(table, column.name)), column.pg_type]
    if column.generated is not None:
        parts.append(f"GENERATED ALWAYS AS ({names.expression(table, column.generated)}) STORED")
    elif column.identity:
        options = f" ({column.identity_options})" if column.identity_options else ""
        parts.append(f"GENERATED BY DEFAULT AS IDENTITY{options}")  # loaded as the source has it; ALWAYS after
    elif column.default is not None:
        parts.append(f"DEFAULT {names.expression(table, column.default)}")
    if column.not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------ post-data

def index_builds(table: Table, names: Names, key_made: bool = False) -> dict[str, str]:
    """The indexes of one loaded table, each a statement of its own (they may be built side by side: CREATE INDEX
    locks out writes, not other builds), by index name (`key_made`: its primary key was made with the table, as
    an upsert needs it to load)."""
    return {index.name: build_index(table, index, names)[0] for index in _all_indexes(table)
            if not (key_made and index.primary)}


def table_post_data(table: Table, names: Names, key_made: bool = False) -> list[str]:
    """After `index_builds`: keys attached to their indexes, checks, then ANALYZE."""
    indexes = [i for i in _all_indexes(table) if not (key_made and i.primary)]
    name = names.q_table(table.name)
    statements = [s for index in indexes for s in build_index(table, index, names)[1:]]
    statements += [f"ALTER TABLE {name} ADD CONSTRAINT {quote_ident(names.constraint(c.name))} "
                   f"CHECK {names.expression(table.name, c.expression)}{'' if c.valid else ' NOT VALID'}"
                   for c in table.checks]
    statements.append(f"ANALYZE {name}")
    return statements


def build_index(table: Table, index: Index, names: Names) -> list[str]:
    """An index: the statement that builds it, then the one that attaches it as a primary key or unique
    constraint, if any (`USING INDEX`; partitioned tables cannot: they add the constraint directly)."""
    name = names.q_table(table.name)
    index_name = quote_ident(names.index(table.name, index))
    columns = names.q_columns(table.name, index.columns)
    if index.exclusion and index.definition:
        return [f"ALTER TABLE {name} ADD CONSTRAINT {index_name} {names.expression(table.name, index.definition)}"]
    if index.definition is not None:
        unique = "UNIQUE " if index.unique else ""
        return [f"CREATE {unique}INDEX {index_name} ON {name} USING {names.expression(table.name, index.definition)}"]
    if not (index.primary or index.unique):
        return [f"CREATE INDEX {index_name} ON {name} ({columns})"]
    kind = "PRIMARY KEY" if index.primary else "UNIQUE"
    if table.partition_key:
        return [f"ALTER TABLE {name} ADD CONSTRAINT {index_name} {kind} ({columns})"]
    return [f"CREATE UNIQUE INDEX {index_name} ON {name} ({columns})",
            f"ALTER TABLE {name} ADD CONSTRAINT {index_name} {kind} USING INDEX {index_name}"]


def identity_restarts(tables: list[Table], names: Names, past_rows: bool = False) -> list[str]:
    """Identity columns continue from the source's own next value (gaps and empty tables included); `past_rows`
    (a table that was there before): and past the rows it holds."""
    statements = []
    for table in tables:
        if table.partition_of is not None:
            continue
        for column in [c for c in table.columns if c.identity]:
            value = table.next_values.get(column.name, 1)
            name, col = names.q_table(table.name), quote_ident(names.column(table.name, column.name))
            if past_rows:  # setval on its sequence, whichever the column has (none: the statement does nothing)
                statements.append(f"SELECT setval(s, GREATEST({value}, (SELECT COALESCE(max({col}), 0) + 1 FROM {name})"
                                  f"), false) FROM pg_get_serial_sequence({quote_literal(name)}, "
                                  f"{quote_literal(names.column(table.name, column.name))}) s WHERE s IS NOT NULL")
                continue
            statements.append(f"ALTER TABLE {name} ALTER COLUMN {col} RESTART WITH {value}")
            if column.identity_always:
                statements.append(f"ALTER TABLE {name} ALTER COLUMN {col} SET GENERATED ALWAYS")
    return statements


def sequence_restarts(sequences: list[Sequence]) -> list[str]:
    return [f"SELECT setval({quote_literal(quote_ident(s.name))}, {s.next_value}, false)" for s in sequences]


def add_foreign_key(fk: ForeignKey, names: Names) -> str:
    """Added NOT VALID: no scan, a brief lock (validated on its own, see `validate_foreign_key`)."""
    deferral = (" DEFERRABLE" + (" INITIALLY DEFERRED" if fk.deferred else "")) if fk.deferrable else ""
    return (f"ALTER TABLE {names.q_table(fk.table)} ADD CONSTRAINT {quote_ident(names.constraint(fk.name))} "
            f"FOREIGN KEY ({names.q_columns(fk.table, fk.columns)}) "
            f"REFERENCES {names.q_table(fk.ref_table)} ({names.q_columns(fk.ref_table, fk.ref_columns)}) "
            f"ON DELETE {fk.on_delete} ON UPDATE {fk.on_update}{deferral} NOT VALID")


def validate_foreign_key(fk: ForeignKey, names: Names) -> str:
    """A scan of the referencing table under a lock that lets writes, and other tables' validations, go on."""
    return f"ALTER TABLE {names.q_table(fk.table)} VALIDATE CONSTRAINT {quote_ident(names.constraint(fk.name))}"


def parents_first(tables: list[Table], keys: list[ForeignKey]) -> list[Table]:
    """Tables ordered so a referenced table comes before those referencing it (a cycle: in the given order)."""
    return _in_order(tables, lambda t: [k.ref_table for k in keys if k.table == t.name])


def views_in_order(views: list[View]) -> list[View]:
    """Each view after the views it reads (a cycle cannot exist among views)."""
    return _in_order(views, lambda v: v.depends_on)


Named = TypeVar("Named", Table, View)


def _in_order(items: list[Named], before: Callable[[Named], list[str]]) -> list[Named]:
    """`items` in their order, except that each comes after the items it names in `before` (depth first; a
    cycle is broken where it is met, and names of no item are ignored)."""
    by_name = {i.name: i for i in items}
    done: dict[str, Named] = {}
    visiting: set[str] = set()

    def visit(item: Named) -> None:
        if item.name in visiting or item.name in done:
            return
        visiting.add(item.name)
        for name in before(item):
            if name in by_name:
                visit(by_name[name])
        done[item.name] = item

    for item in items:
        visit(item)
    return list(done.values())


def create_view(view: View, names: Names) -> str:
    columns = "" if names.naming == "keep" or not view.columns else \
        f" ({', '.join(quote_ident(target_name(c, names.naming)) for c in view.columns)})"
    kind = "MATERIALIZED VIEW" if view.materialized else "VIEW"
    return f"CREATE {kind} {names.q_table(view.name)}{columns} AS {names.expression('', view.definition)}"
