"""A SQLite source database as a `DatabaseSchema`.

SQLite's catalog is its `sqlite_master` table (each object's CREATE statement as written) and the table-valued
pragmas: `pragma_table_xinfo` (columns, generated ones included), `pragma_index_list` and `pragma_index_xinfo`
(indexes, the ones SQLite makes for PRIMARY KEY and UNIQUE too), `pragma_foreign_key_list`. What no pragma
gives (check constraints, generation expressions, a view's query) is cut out of the CREATE statement by a small
tokenizer and translated by sqlglot (`dbcatalog_common`): sqlglot cannot parse a whole SQLite CREATE TABLE
(`WITHOUT ROWID`, `ON CONFLICT`, bracketed names), but it does parse each expression in it.

An `INTEGER PRIMARY KEY` column is the table's rowid: it becomes an identity column continuing where SQLite
would, that is after the highest rowid, or for an AUTOINCREMENT table after the highest one it ever gave
(`sqlite_sequence`). Row counts are exact (`count(*)`; SQLite keeps no estimate); sizes are not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.catalog import sqlite_storage_classes
from engine.dbcatalog_common import (
    Untranslatable,
    carried_foreign_keys,
    default_not_carried,
    literal_default,
    to_postgres,
    unique_name,
    view_problem,
)
from engine.dbschema import Action, Check, Column, DatabaseSchema, ForeignKey, Index, NotCarried, Table, View
from engine.errors import SourceError
from engine.source import query_rows
from engine.sql import quote_ident
from engine.typemap import dialect_column, sqlite_by_values
from engine.urls import DatabaseUrl

_ACTIONS: dict[str, Action] = {a: a for a in ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT")}


@dataclass
class _Source:
    url: DatabaseUrl
    not_carried: list[NotCarried] = field(default_factory=list)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return query_rows(self.url, sql, params)

    def skip(self, what: str, reason: str, suggestion: str = "", source_ddl: str = "") -> None:
        self.not_carried.append(NotCarried(what=what, reason=reason, suggestion=suggestion, source_ddl=source_ddl))


class _Entry(NamedTuple):
    """A row of sqlite_master."""

    type: str
    name: str
    table: str
    sql: str


def read_sqlite(url: DatabaseUrl, include: Callable[[str], bool],
                exclude_data: Callable[[str], bool]) -> DatabaseSchema:
    source = _Source(url)
    entries = [_Entry(str(t), str(n), str(tb), str(s or "")) for t, n, tb, s in source.rows(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name")]
    kinds = _table_kinds(source, entries)
    tables = [e for e in entries if kinds.get(e.name) == "table"]
    _virtual_tables(source, [e for e in entries if kinds.get(e.name) == "virtual" and include(e.name)])
    kept = [_table(source, e, exclude_data) for e in tables if include(e.name)]
    by_name = {t.name: t for t in kept}
    foreign_keys = carried_foreign_keys(_foreign_keys(source, kept, [e.name for e in tables]), by_name,
                                        source.not_carried)
    views = _views(source, entries, tables, include)
    for e in entries:
        if e.type == "trigger" and e.table in by_name:
            source.skip(f"trigger {e.name} on {e.table}", "SQLite triggers are not translated", source_ddl=e.sql)
    return DatabaseSchema(dialect="sqlite", tables=kept, views=views, foreign_keys=foreign_keys,
                          not_carried=source.not_carried)


def _table_kinds(source: _Source, entries: list[_Entry]) -> dict[str, str]:
    """name -> table, view, virtual or shadow (a virtual table's storage). Before SQLite 3.37 (no pragma_table_list)
    virtual tables are told by their statement, and their shadow tables pass for tables."""
    try:
        return {str(n): str(t) for n, t in source.rows("SELECT name, type FROM pragma_table_list WHERE schema = 'main'")}
    except SourceError:
        return {e.name: "virtual" if e.sql.upper().startswith("CREATE VIRTUAL") else e.type
                for e in entries if e.type in ("table", "view")}


def _virtual_tables(source: _Source, entries: list[_Entry]) -> None:
    for e in entries:
        source.skip(f"virtual table {e.name}", "SQLite virtual tables (full-text, R*Tree, …) have no PostgreSQL "
                    "equivalent", source_ddl=e.sql)


# ------------------------------------------------------------------------------------------------ tables

class _ColumnRow(NamedTuple):
    name: str
    declared: str
    not_null: bool
    default: str | None
    pk: int  # position in the primary key, 0 when not in it
    hidden: int  # 2: a virtual generated column, 3: a stored one


def _table(source: _Source, entry: _Entry, exclude_data: Callable[[str], bool]) -> Table:
    name = entry.name
    rows = [_ColumnRow(str(n), str(t or ""), bool(nn), d, int(pk), int(h)) for n, t, nn, d, pk, h in source.rows(
        'SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid', name)]
    definition = _TableDefinition(entry.sql, [r.name for r in rows])
    indexes = _index_list(source, name)
    rowid = _rowid_alias(rows, indexes)
    pg_types = _pg_types(source, name, rows)
    columns = [_column(source, name, r, pg_types[r.name], r.name == rowid, definition) for r in rows]
    primary = [r.name for r in sorted(rows, key=lambda r: r.pk) if r.pk]
    count = int(source.rows(f"SELECT count(*) FROM {quote_ident(name, 'sqlite')}")[0][0])
    return Table(
        name=name, columns=columns, rows=count, checks=_checks(source, name, definition),
        primary_key=Index(name=f"{name}_pkey", columns=primary, unique=True, primary=True) if primary else None,
        indexes=_indexes(source, name, indexes, definition.columns), copy_data=not exclude_data(name),
        next_values={rowid: _next_rowid(source, name)} if rowid else {})


def _pg_types(source: _Source, table: str, rows: list[_ColumnRow]) -> dict[str, str]:
    """Each column's target type: by its declared type, or where that says nothing, by the classes of its values."""
    specs = {r.name: dialect_column("sqlite", r.name, r.declared) for r in rows}
    untyped = [n for n, s in specs.items() if s.pg_type == "auto"]
    classes = sqlite_storage_classes(source.url, quote_ident(table, "sqlite"), untyped)
    types = {n: s.pg_type for n, s in specs.items()}
    for name in untyped:
        mapped = sqlite_by_values(specs[name], classes[name])
        types[name] = mapped.pg_type if mapped is not None else "text"  # mixed classes: refused when copied
    return types


def _rowid_alias(rows: list[_ColumnRow], indexes: list[_IndexEntry]) -> str | None:
    """The `INTEGER PRIMARY KEY` column, which is the rowid, if any. A WITHOUT ROWID table, and the odd
    `INTEGER PRIMARY KEY DESC`, keep their primary key in an index of their own instead."""
    key = [r for r in rows if r.pk]
    if len(key) != 1 or key[0].declared.upper() != "INTEGER" or any(i.origin == "pk" for i in indexes):
        return None
    return key[0].name


def _next_rowid(source: _Source, table: str) -> int:
    """What SQLite gives the next row: one past the highest rowid, or for AUTOINCREMENT one past the highest it
    ever gave (sqlite_sequence exists once some table has AUTOINCREMENT)."""
    highest = source.rows(f"SELECT max(rowid) FROM {quote_ident(table, 'sqlite')}")[0][0] or 0
    if source.rows("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")[0][0]:
        given = source.rows("SELECT max(seq) FROM sqlite_sequence WHERE name = ?", table)[0][0] or 0
        highest = max(int(highest), int(given))
    return int(highest) + 1


def _column(source: _Source, table: str, row: _ColumnRow, pg_type: str, rowid: bool,
            definition: _TableDefinition) -> Column:
    generated = _generated(source, table, row, definition) if row.hidden in (2, 3) else None
    default = None
    if row.default is not None and not rowid and row.hidden not in (2, 3):
        try:
            default = literal_default(str(row.default), "sqlite", pg_type)
        except Untranslatable as exc:
            source.not_carried.append(default_not_carried(table, row.name, str(row.default), exc, "sqlite",
                                                          definition.columns))
    return Column(name=row.name, source_type=row.declared, pg_type=pg_type, not_null=row.not_null or rowid,
                  default=default, identity=rowid, generated=generated)


def _generated(source: _Source, table: str, row: _ColumnRow, definition: _TableDefinition) -> str | None:
    expression = definition.generated.get(row.name)
    try:
        if expression is None:
            raise Untranslatable("its expression is not found in the table's CREATE statement")
        return to_postgres(expression, "sqlite", definition.columns).sql
    except Untranslatable as exc:
        source.skip(f"generated column {table}.{row.name}", f"its expression does not translate ({exc}): carried as "
                    "a plain column holding the source's values", source_ddl=f"AS ({expression})")
        return None


def _checks(source: _Source, table: str, definition: _TableDefinition) -> list[Check]:
    checks: list[Check] = []
    taken: set[str] = set()
    for name, column, expression in definition.checks:
        try:
            translated = to_postgres(expression, "sqlite", definition.columns)
        except Untranslatable as exc:
            source.skip(f"check constraint {name} on {table}" if name else f"a check constraint on {table}",
                        f"its expression does not translate ({exc})", source_ddl=f"CHECK ({expression})")
            continue
        read = translated.columns or ([column] if column else [])
        base = name or "_".join([table, *read, "check"])  # PostgreSQL's own naming
        checks.append(Check(name=unique_name(base, taken), expression=f"({translated.sql})", columns=translated.columns))
    return checks


# ------------------------------------------------------------------------------------------------ indexes

class _IndexEntry(NamedTuple):
    name: str
    unique: bool
    origin: str  # c: CREATE INDEX, u: a UNIQUE constraint, pk: the PRIMARY KEY
    partial: bool


def _index_list(source: _Source, table: str) -> list[_IndexEntry]:
    return [_IndexEntry(str(n), bool(u), str(o), bool(p)) for n, u, o, p in source.rows(
        'SELECT name, "unique", origin, partial FROM pragma_index_list(?) ORDER BY name', table)]


def _indexes(source: _Source, table: str, entries: list[_IndexEntry], columns: list[str]) -> list[Index]:
    """UNIQUE constraints (named `<table>_<columns>_key`, as PostgreSQL would) and CREATE INDEX indexes; the primary
    key comes from the columns, expression and partial indexes are reported."""
    indexes: list[Index] = []
    taken: set[str] = set()
    for entry in entries:
        if entry.origin == "pk":
            continue
        parts = source.rows("SELECT cid, name FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", entry.name)
        if entry.partial or any(cid == -2 for cid, _ in parts):
            _special_index(source, table, entry, columns)
            continue
        columns = [str(n) for cid, n in parts]
        name = entry.name if entry.origin == "c" else unique_name(f"{table}_{'_'.join(columns)}_key", taken)
        indexes.append(Index(name=name, columns=columns, unique=entry.unique))
    return sorted(indexes, key=lambda i: i.name)


def _special_index(source: _Source, table: str, entry: _IndexEntry, columns: list[str]) -> None:
    ddl = str(source.rows("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", entry.name)[0][0])
    kind = "partial" if entry.partial else "expression"
    try:
        suggestion = to_postgres(ddl, "sqlite", columns, [table]).sql
    except Untranslatable:
        suggestion = ""
    source.skip(f"index {table}.{entry.name} ({kind})", f"SQLite {kind} indexes are not carried", suggestion, ddl)


# ------------------------------------------------------------------------------------------------ foreign keys

def _foreign_keys(source: _Source, tables: list[Table], every_table: list[str]) -> list[ForeignKey]:
    """The foreign keys of the included tables, named `<table>_<columns>_fkey` (SQLite's have no names). A key
    naming no parent columns references the parent's primary key."""
    spelling = {n.lower(): n for n in every_table}
    keys: list[ForeignKey] = []
    taken: set[str] = set()
    for table in tables:
        grouped: dict[int, list[tuple[Any, ...]]] = {}
        for row in source.rows('SELECT id, "table", "from", "to", on_update, on_delete FROM '
                               "pragma_foreign_key_list(?) ORDER BY id, seq", table.name):
            grouped.setdefault(int(row[0]), []).append(row)
        for rows in grouped.values():
            fk = _foreign_key(source, table, rows, spelling, taken)
            if fk is not None:
                keys.append(fk)
    return keys


def _foreign_key(source: _Source, table: Table, rows: list[tuple[Any, ...]], spelling: dict[str, str],
                 taken: set[str]) -> ForeignKey | None:
    columns = [str(r[2]) for r in rows]
    name = unique_name(f"{table.name}_{'_'.join(columns)}_fkey", taken)
    parent = spelling.get(str(rows[0][1]).lower())
    if parent is None:
        source.skip(f"foreign key {name} on {table.name}", f"references table {rows[0][1]}, which the source "
                    "does not have")
        return None
    parent_columns = source.rows("SELECT name, pk FROM pragma_table_info(?) ORDER BY pk", parent)
    if any(r[3] is None for r in rows):
        ref_columns = [str(n) for n, pk in parent_columns if pk]
    else:
        by_lower = {str(n).lower(): str(n) for n, _ in parent_columns}
        ref_columns = [by_lower.get(str(r[3]).lower(), str(r[3])) for r in rows]
    return ForeignKey(name=name, table=table.name, columns=columns, ref_table=parent, ref_columns=ref_columns,
                      on_update=_ACTIONS.get(str(rows[0][4]).upper(), "NO ACTION"),
                      on_delete=_ACTIONS.get(str(rows[0][5]).upper(), "NO ACTION"))


# ------------------------------------------------------------------------------------------------ views

def _views(source: _Source, entries: list[_Entry], tables: list[_Entry], include: Callable[[str], bool]) -> list[View]:
    table_names = {e.name for e in tables}
    view_names = {e.name for e in entries if e.type == "view"}
    included = {n for n in table_names | view_names if include(n)}
    every_column = sorted({str(r[0]) for t in table_names
                           for r in source.rows("SELECT name FROM pragma_table_info(?)", t)})
    views = []
    for entry in entries:
        if entry.type == "view" and entry.name in included:
            view = _view(source, entry, every_column, table_names, view_names, included)
            views += [view] if view is not None else []
    return views


def _view(source: _Source, entry: _Entry, every_column: list[str], tables: set[str], views: set[str],
          included: set[str]) -> View | None:
    what = f"view {entry.name}"
    try:
        columns = [str(r[0]) for r in source.rows("SELECT name FROM pragma_table_info(?)", entry.name)]
    except SourceError as exc:  # it reads a table or column that is not there
        source.skip(what, f"SQLite cannot read it ({exc})", source_ddl=entry.sql)
        return None
    try:
        select, named = _view_query(entry.sql)
        translated = to_postgres(select, "sqlite", every_column, tables | views, "main", columns)
    except Untranslatable as exc:
        source.skip(what, f"its query does not translate ({exc})", source_ddl=entry.sql)
        return None
    problem = view_problem(translated.tables, tables, views, included)
    if problem is not None:
        source.skip(what, problem, source_ddl=entry.sql)
        return None
    definition = translated.sql
    if named and not translated.named:  # CREATE VIEW v(a, b) AS SELECT * …: the names the query's columns take
        definition = f"SELECT * FROM ({definition}) AS {quote_ident(entry.name)}({', '.join(map(quote_ident, named))})"
    return View(name=entry.name, definition=definition, depends_on=sorted(set(translated.tables) & views),
                columns=columns)


def _view_query(sql: str) -> tuple[str, list[str]]:
    """The query of a CREATE VIEW statement, and the column names it lists before AS (if it does)."""
    top = _grouped(sql, _tokens(sql))
    at = next((i for i, t in enumerate(top) if t.word == "AS"), None)
    if at is None:
        raise Untranslatable("no AS in its CREATE statement")
    named = [_unquote(d[0].text) for d in _split(sql, top[at - 1])] if at and top[at - 1].group else []
    return sql[top[at].end :].strip().rstrip(";"), named


# ------------------------------------------------------------------------------------------------ DDL tokens

_TOKEN = re.compile(r"""\s+|--[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|[\w$]+|.""",
                    re.S)


class _Token(NamedTuple):
    text: str
    start: int
    end: int
    group: bool = False  # a parenthesised group, parentheses included

    @property
    def word(self) -> str:
        return self.text.upper()


def _tokens(sql: str) -> list[_Token]:
    found = (_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(sql))
    return [t for t in found if not t.text.isspace() and not t.text.startswith(("--", "/*"))]


def _grouped(sql: str, tokens: list[_Token]) -> list[_Token]:
    """The tokens at the outer level, each parenthesised group made one token."""
    out, depth, start = [], 0, 0
    for t in tokens:
        if t.text == "(":
            start = t.start if depth == 0 else start
            depth += 1
        elif t.text == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(_Token(sql[start : t.end], start, t.end, True))
        elif depth == 0:
            out.append(t)
    return out


def _split(sql: str, group: _Token) -> list[list[_Token]]:
    """The comma-separated items inside a group, each as its outer-level tokens."""
    inner = [t for t in _tokens(sql) if group.start < t.start and t.end < group.end]
    items: list[list[_Token]] = [[]]
    for t in _grouped(sql, inner):
        if t.text == ",":
            items.append([])
        else:
            items[-1].append(t)
    return [i for i in items if i]


def _unquote(text: str) -> str:
    if text[:1] in ('"', "`", "'"):
        return text[1:-1].replace(text[0] * 2, text[0])
    return text[1:-1] if text.startswith("[") else text


def _inside(group: _Token) -> str:
    return group.text[1:-1].strip()


_TABLE_CONSTRAINTS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}


class _TableDefinition:
    """What a CREATE TABLE statement says that no pragma does: its CHECK constraints (name or None, the column it
    is declared on or None, expression) and the expressions of its generated columns."""

    def __init__(self, sql: str, columns: list[str]) -> None:
        self.columns = columns
        self.checks: list[tuple[str | None, str | None, str]] = []
        self.generated: dict[str, str] = {}
        body = next((t for t in _grouped(sql, _tokens(sql)) if t.group), None)
        for item in _split(sql, body) if body is not None else []:
            column = None if item[0].word in _TABLE_CONSTRAINTS else _unquote(item[0].text)
            self._read(item, column)

    def _read(self, item: list[_Token], column: str | None) -> None:
        for i, t in enumerate(item[:-1]):
            following = item[i + 1]
            if t.word == "CHECK" and following.group:
                named = i >= 2 and item[i - 2].word == "CONSTRAINT"
                self.checks.append((_unquote(item[i - 1].text) if named else None, column, _inside(following)))
            elif t.word == "AS" and following.group and column is not None:
                self.generated[column] = _inside(following)
