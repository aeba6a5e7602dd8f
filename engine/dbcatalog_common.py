"""What the MySQL and SQLite catalog readers share: their SQL in PostgreSQL's dialect, and the rules for keys.

Check constraints, generated columns and views are written in the source's dialect; sqlglot translates them.
sqlglot passes a function it does not know through unchanged (and a few operators PostgreSQL lacks), which would
only fail when the target builds the object, so those count as untranslatable here: the object is reported as
not carried, with its source definition, instead of failing the build. Names in the result are double-quoted with
the source's own spelling (MySQL and SQLite match column names case-insensitively, PostgreSQL only when quoted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from engine.dbschema import ForeignKey, NotCarried, Table
from engine.sql import quote_ident, quote_literal


class Untranslatable(Exception):
    """Source SQL that has no PostgreSQL form here; the message says why, `instead` what might do instead."""

    def __init__(self, message: str, instead: str = "") -> None:
        super().__init__(message)
        self.instead = instead


# Nodes sqlglot writes out unchanged for PostgreSQL although PostgreSQL has no such function or operator.
_NO_POSTGRES_FORM: tuple[type[exp.Expr], ...] = (exp.Anonymous, exp.Glob, exp.Typeof, exp.Collate)

# MySQL prints string literals in check clauses and views with their character set (`_utf8mb4'a'`).
_INTRODUCER = re.compile(r"(?<![\w$])_(?:utf8mb4|utf8mb3|utf8|latin1|binary|ascii)(?=')", re.I)


@dataclass(frozen=True)
class Translated:
    sql: str
    columns: list[str] = field(default_factory=list)  # the source columns it reads, in order of first use
    tables: list[str] = field(default_factory=list)  # the source tables and views it reads (not its CTEs)
    named: bool = False  # its columns are given the `output` names asked for


def _parse(text: str, read: str) -> exp.Expr:
    if read == "mysql":
        text = _INTRODUCER.sub("", text)
    try:
        tree = sqlglot.parse_one(text, read=read, error_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise Untranslatable(f"sqlglot cannot parse it ({_first_line(exc)})") from None
    for node in tree.walk():
        if isinstance(node, _NO_POSTGRES_FORM):
            what = node.name if isinstance(node, exp.Anonymous) else node.key.upper()
            raise Untranslatable(f"{what} has no PostgreSQL translation")
    return tree


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _Spelling:
    """The source's spelling of a name written in another case (an exact match first: MySQL on Linux may have
    tables `T` and `t`)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.exact = set(names)
        self.folded = {n.lower(): n for n in self.exact}

    def __contains__(self, name: str) -> bool:
        return name in self.exact or name.lower() in self.folded

    def __call__(self, name: str) -> str:
        return name if name in self.exact else self.folded.get(name.lower(), name)


class _Names:
    """Resolves the identifiers of one parsed statement to the source's spelling, collecting what it reads."""

    def __init__(self, tree: exp.Expr, columns: Iterable[str], tables: Iterable[str], database: str | None):
        self.columns, self.tables = _Spelling(columns), _Spelling(tables)
        self.database = database
        self.ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        self.aliases = _Spelling(a.name for a in tree.find_all(exp.TableAlias) if a.name)
        self.read_columns: list[str] = []
        self.read_tables: list[str] = []

    def resolve(self, tree: exp.Expr) -> None:
        for table in list(tree.find_all(exp.Table)):
            self._table(table)
        for column in list(tree.find_all(exp.Column)):
            self._column(column)

    def _unqualify(self, node: exp.Expr, name: str) -> None:
        db = node.text("db")
        if db and db != self.database:
            raise Untranslatable(f"it reads {db}.{name}, in another database")
        node.set("db", None)
        node.set("catalog", None)

    def _table(self, table: exp.Table) -> None:
        if not table.name:
            return
        qualified = bool(table.text("db"))
        self._unqualify(table, table.name)
        if table.name.lower() in self.ctes and not qualified:
            return
        name = self.tables(table.name)
        table.set("this", exp.to_identifier(name, quoted=True))
        if name not in self.read_tables:
            self.read_tables.append(name)

    def _column(self, column: exp.Column) -> None:
        if isinstance(column.this, exp.Star):
            return
        self._unqualify(column, column.name)
        if column.table:
            qualifier = self.aliases(column.table) if column.table in self.aliases else self.tables(column.table)
            column.set("table", exp.to_identifier(qualifier, quoted=True))
        name = self.columns(column.name)
        column.set("this", exp.to_identifier(name, quoted=True))
        if name in self.columns and name not in self.read_columns:
            self.read_columns.append(name)


def to_postgres(text: str, read: str, columns: Iterable[str] = (), tables: Iterable[str] = (),
                database: str | None = None, output: list[str] | None = None) -> Translated:
    """`text` (an expression or a query in the `read` dialect) in PostgreSQL's dialect, its names quoted with the
    source's spelling of `columns` and `tables`; qualifiers naming `database` are dropped. A query's columns are
    given the `output` names where it lists them one by one. Raises Untranslatable."""
    tree = _parse(text, read)
    names = _Names(tree, columns, tables, database)
    names.resolve(tree)
    named = output is not None and _name_outputs(tree, output)
    try:
        sql = tree.sql(dialect="postgres", identify=True, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise Untranslatable(_first_line(exc)) from None
    return Translated(sql, names.read_columns, names.read_tables, named)


def _name_outputs(tree: exp.Expr, output: list[str]) -> bool:
    """Alias the query's columns to `output` (in a union, the first query's: PostgreSQL names them so), where
    PostgreSQL would name them otherwise (`count(*)` is "count(*)" in SQLite, "count" in PostgreSQL)."""
    first = tree
    while isinstance(first, exp.SetOperation):
        first = first.this
    if not isinstance(first, exp.Select) or len(first.expressions) != len(output) or \
            any(p.is_star for p in first.expressions):
        return False
    first.set("expressions", [p if p.alias_or_name == name else exp.alias_(p.unalias(), name, quoted=True)
                              for p, name in zip(first.expressions, output, strict=True)])
    return True


# ------------------------------------------------------------------------------------------------ defaults

_TIME_TYPES = ("timestamp", "date")


def literal_default(text: str, read: str, pg_type: str) -> str | None:
    """A source default (SQL text) as a PostgreSQL literal: numbers, strings, NULL (None), booleans, blobs, and the
    current timestamp or date in a column of a time type. Raises Untranslatable for anything else."""
    tree = _parse_default(text, read)
    if isinstance(tree, exp.Neg) and isinstance(tree.this, exp.Literal) and not tree.this.is_string:
        return "-" + tree.this.this
    if isinstance(tree, exp.Literal):
        return string_default(tree.this, pg_type) if tree.is_string else tree.this
    if isinstance(tree, exp.Null):
        return None
    if isinstance(tree, exp.Boolean):
        return ("true" if tree.this else "false") if pg_type == "boolean" else str(int(tree.this))
    if isinstance(tree, exp.HexString) and pg_type == "bytea":
        return f"'\\x{tree.this}'"
    if isinstance(tree, exp.BitString) and pg_type.startswith("bit"):
        return f"B'{tree.this}'"
    return _current_time(tree, text, pg_type)


def _parse_default(text: str, read: str) -> exp.Expr:
    try:
        return sqlglot.parse_one(text, read=read, error_level=ErrorLevel.RAISE)
    except SqlglotError:
        raise Untranslatable(f"the expression {text}") from None


def string_default(value: str, pg_type: str) -> str:
    """A string default as a PostgreSQL literal (MySQL's zero dates have none)."""
    if pg_type.startswith(_TIME_TYPES) and value.startswith("0000"):
        raise Untranslatable(f"the zero date {quote_literal(value)}, which PostgreSQL has not")
    return quote_literal(value)


# SQLite's current time as the text it writes (UTC), for a text column defaulting to it.
_SQLITE_TIME_TEXT: dict[type[exp.Expr], str] = {
    exp.CurrentTimestamp: "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
    exp.CurrentDate: "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    exp.CurrentTime: "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'HH24:MI:SS')",
}


def _current_time(tree: exp.Expr, text: str, pg_type: str) -> str:
    if isinstance(tree, exp.CurrentTimestamp) and pg_type.startswith("timestamp"):
        return "CURRENT_TIMESTAMP"
    if isinstance(tree, exp.CurrentDate) and pg_type.startswith(_TIME_TYPES):
        return "CURRENT_DATE"
    if isinstance(tree, (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime)):
        raise Untranslatable(f"{text} in a column of type {pg_type} (PostgreSQL would write it in its own format)",
                             _SQLITE_TIME_TEXT.get(type(tree), ""))
    raise Untranslatable(f"the expression {text}")


def default_not_carried(table: str, column: str, source: str, why: Untranslatable, read: str,
                        columns: list[str]) -> NotCarried:
    """A default that is not a literal, with the PostgreSQL statement that would set it where there is one."""
    try:
        expression = why.instead or to_postgres(source, read, columns).sql
        suggestion = f"ALTER TABLE {quote_ident(table)} ALTER COLUMN {quote_ident(column)} SET DEFAULT {expression}"
    except Untranslatable:
        suggestion = ""
    return NotCarried(what=f"default of {table}.{column}", reason=f"not a literal: {why}", suggestion=suggestion,
                      source_ddl=f"DEFAULT {source}")


# ------------------------------------------------------------------------------------------------ keys

def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base1`, `base2`… when a name is taken (the name is added to `taken`)."""
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


def carried_foreign_keys(found: list[ForeignKey], tables: dict[str, Table],
                         not_carried: list[NotCarried]) -> list[ForeignKey]:
    """The foreign keys between included tables whose referenced columns PostgreSQL can reference (a primary key
    or unique index on exactly them); the others are reported."""
    keys = []
    for fk in found:
        if fk.table not in tables:
            continue
        why = _not_referenceable(fk, tables)
        if why is None:
            keys.append(fk)
            continue
        not_carried.append(NotCarried(
            what=f"foreign key {fk.name} on {fk.table}", reason=why, source_ddl=foreign_key_clause(fk),
            suggestion="" if fk.ref_table not in tables else
            f"CREATE UNIQUE INDEX ON {quote_ident(fk.ref_table)} ({', '.join(map(quote_ident, fk.ref_columns))})"))
    return keys


def _not_referenceable(fk: ForeignKey, tables: dict[str, Table]) -> str | None:
    parent = tables.get(fk.ref_table)
    if parent is None:
        return f"references table {fk.ref_table}, which the job leaves out"
    keys = ([parent.primary_key] if parent.primary_key else []) + [i for i in parent.indexes if i.unique]
    if any(set(k.columns) == set(fk.ref_columns) for k in keys):
        return None
    return (f"references ({', '.join(fk.ref_columns)}) of {fk.ref_table}, which no primary key or unique index "
            "covers: PostgreSQL references only those")


def foreign_key_clause(fk: ForeignKey) -> str:
    """The foreign key as the source defines it (for a report), in PostgreSQL's syntax."""
    return (f"FOREIGN KEY ({', '.join(map(quote_ident, fk.columns))}) REFERENCES {quote_ident(fk.ref_table)} "
            f"({', '.join(map(quote_ident, fk.ref_columns))}) ON DELETE {fk.on_delete} ON UPDATE {fk.on_update}")


# ------------------------------------------------------------------------------------------------ views

def view_problem(reads: list[str], tables: set[str], views: set[str], included: set[str]) -> str | None:
    """Why a view cannot be built in the target: it reads a table or view the job leaves out, or none there is."""
    for read in reads:
        if read not in tables and read not in views:
            return f"reads {read}, which the source does not have"
        if read not in included:
            kind = "table" if read in tables else "view"
            return f"reads {kind} {read}, which the job leaves out"
    return None
