"""A MySQL or MariaDB source database as a `DatabaseSchema`.

Reads the URL's database from information_schema, each view of it schema-wide in one query (TABLES, COLUMNS,
STATISTICS, CHECK_CONSTRAINTS, REFERENTIAL_CONSTRAINTS with KEY_COLUMN_USAGE, VIEWS, TRIGGERS, ROUTINES): a
catalog query costs a connection through ConnectorX, so none is made per table except `SHOW CREATE TABLE` for
the tables with an auto-increment column. Its `AUTO_INCREMENT=n` is the table's own next value, read from the
table itself, where MySQL 8 answers information_schema.TABLES from statistics cached for up to a day.

Check constraints, generated columns and views are translated by sqlglot (`dbcatalog_common`); ENUM and SET
columns become text with a check of their members. What PostgreSQL cannot hold as the source has it (prefix,
full-text and spatial indexes, triggers, stored routines, expression defaults) is listed as not carried, with
the source's definition and, where there is one, a statement to run by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlglot
from sqlglot import exp

from engine.catalog import _mysql_text, mariadb_json_columns
from engine.dbcatalog_common import (
    Untranslatable,
    carried_foreign_keys,
    default_not_carried,
    foreign_key_clause,
    literal_default,
    string_default,
    to_postgres,
    view_problem,
)
from engine.dbschema import Action, Check, Column, DatabaseSchema, ForeignKey, Index, NotCarried, Table, View
from engine.errors import SourceError
from engine.source import query_rows
from engine.sql import quote_ident, quote_literal
from engine.typemap import dialect_column
from engine.urls import DatabaseUrl

_TABLE_KINDS = ("BASE TABLE", "SYSTEM VERSIONED")  # MariaDB's system-versioned tables: their current rows
_ACTIONS: dict[str, Action] = {a: a for a in ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT")}


@dataclass
class _Source:
    url: DatabaseUrl
    database: str
    mariadb: bool
    expressions: bool  # MySQL 8.0.13+: functional index parts (STATISTICS.EXPRESSION)
    not_carried: list[NotCarried] = field(default_factory=list)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """A catalog query of this database (`{db}` in `sql` names it)."""
        return query_rows(self.url, sql.replace("{db}", _mysql_text(self.database)))

    def show(self, what: str, name: str) -> list[tuple[Any, ...]]:
        """`SHOW CREATE <what> <name>` (no placeholder: the name may hold anything)."""
        return query_rows(self.url, f"SHOW CREATE {what} {quote_ident(name, 'mysql')}")

    def skip(self, what: str, reason: str, suggestion: str = "", source_ddl: str = "") -> None:
        self.not_carried.append(NotCarried(what=what, reason=reason, suggestion=suggestion, source_ddl=source_ddl))


class _Object(NamedTuple):
    name: str
    kind: str
    rows: int
    bytes: int
    auto_increment: int | None
    comment: str


class _ColumnRow(NamedTuple):
    table: str
    name: str
    type: str
    nullable: bool
    default: str | None
    extra: str
    generation: str | None
    comment: str


def read_mysql(url: DatabaseUrl, include: Callable[[str], bool], exclude_data: Callable[[str], bool]) -> DatabaseSchema:
    source = _connect(url)
    objects = [_Object(str(n), str(k), int(r or 0), int(b or 0), None if a is None else int(a), str(c or ""))
               for n, k, r, b, a, c in source.rows(_OBJECTS)]
    columns = _columns(source)
    kept = sorted((o for o in objects if o.kind in _TABLE_KINDS and include(o.name)), key=lambda o: o.name)
    indexes, checks = _statistics(source), _check_clauses(source)
    tables = [_table(source, o, columns.get(o.name, []), indexes.get(o.name, []), checks.get(o.name, []),
                     exclude_data) for o in kept]
    by_name = {t.name: t for t in tables}
    foreign_keys = carried_foreign_keys(_foreign_keys(source), by_name, source.not_carried)
    views = _views(source, objects, columns, include)
    _sequences(source, objects, include)
    _triggers(source, set(by_name))
    _routines(source)
    return DatabaseSchema(dialect="mysql", source_schema=source.database, tables=tables, views=views,
                          foreign_keys=foreign_keys, not_carried=source.not_carried)


def _connect(url: DatabaseUrl) -> _Source:
    if not url.database:
        raise SourceError(f"the source URL {url} names no database: add it as the path (mysql://…/name)")
    version, found = query_rows(url, (
        "SELECT VERSION() AS v, (SELECT COUNT(*) FROM information_schema.SCHEMATA "
        f"WHERE SCHEMA_NAME = {_mysql_text(url.database)}) AS n"))[0]
    if not found:
        raise SourceError(f"database {url.database!r} does not exist in the source {url}")
    mariadb = "mariadb" in str(version).lower()
    numbers = tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])
    return _Source(url, url.database, mariadb, not mariadb and numbers >= (8, 0, 13))


_OBJECTS = """
    SELECT TABLE_NAME AS n, TABLE_TYPE AS k, TABLE_ROWS AS r, DATA_LENGTH AS b, AUTO_INCREMENT AS a,
           TABLE_COMMENT AS c
    FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db}"""

_COLUMNS = """
    SELECT TABLE_NAME AS t, COLUMN_NAME AS n, COLUMN_TYPE AS ty, IS_NULLABLE AS nu, COLUMN_DEFAULT AS d,
           EXTRA AS e, GENERATION_EXPRESSION AS g, COLUMN_COMMENT AS c
    FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {db} ORDER BY TABLE_NAME, ORDINAL_POSITION"""


def _columns(source: _Source) -> dict[str, list[_ColumnRow]]:
    """Columns of every table and view, in their order."""
    found: dict[str, list[_ColumnRow]] = {}
    for t, n, ty, nu, d, e, g, c in source.rows(_COLUMNS):
        found.setdefault(str(t), []).append(_ColumnRow(str(t), str(n), str(ty), nu == "YES", d, str(e or ""),
                                                       g or None, str(c or "")))
    return found


# ------------------------------------------------------------------------------------------------ tables

def _table(source: _Source, obj: _Object, rows: list[_ColumnRow], statistics: list[_IndexPart],
           clauses: list[tuple[str, str]], exclude_data: Callable[[str], bool]) -> Table:
    json = _json_columns(source, obj.name, rows)
    names = [r.name for r in rows]
    columns = [_column(source, r, json, names) for r in rows]
    primary, indexes = _indexes(source, obj.name, statistics)
    checks = _checks(source, obj.name, clauses, json, names) + _member_checks(obj.name, rows)
    next_values = {c.name: _next_auto_increment(source, obj) for c in columns if c.identity}  # MySQL allows one
    columns = [_identity_type(c, next_values) for c in columns]
    return Table(name=obj.name, columns=columns, primary_key=primary, indexes=indexes, checks=checks,
                 comment=obj.comment or None, rows=obj.rows, bytes=obj.bytes, next_values=next_values,
                 copy_data=not exclude_data(obj.name))


_BIGINT_MAX = 2**63 - 1


def _identity_type(column: Column, next_values: dict[str, int]) -> Column:
    """An identity column must be an integer: an unsigned BIGINT auto-increment (numeric(20,0) in the type map) is
    a bigint while its next value is one, as every value it gave is below that."""
    if column.identity and column.pg_type.startswith("numeric") and next_values[column.name] <= _BIGINT_MAX:
        return column.model_copy(update={"pg_type": "bigint"})
    return column


def _json_columns(source: _Source, table: str, rows: list[_ColumnRow]) -> set[str]:
    """MariaDB's JSON columns (LONGTEXT with a json_valid check); only tables with a LONGTEXT can have one."""
    if not source.mariadb or not any(r.type.lower() == "longtext" for r in rows):
        return set()
    return {n for n in mariadb_json_columns(source.url, source.database, table)
            if any(r.name == n and r.type.lower() == "longtext" for r in rows)}


_GENERATED = re.compile(r"\b(VIRTUAL|STORED|PERSISTENT) GENERATED\b", re.I)


def _column(source: _Source, row: _ColumnRow, json: set[str], names: list[str]) -> Column:
    declared = "json" if row.name in json else row.type
    pg_type = dialect_column("mysql", row.name, declared).pg_type
    identity = "auto_increment" in row.extra.lower()
    is_generated = _GENERATED.search(row.extra) is not None
    generated = _generated(source, row, names) if is_generated else None
    plain = not identity and not is_generated
    if "on update" in row.extra.lower():
        source.skip(f"on update of {row.table}.{row.name}", "PostgreSQL has no ON UPDATE clause for a column "
                    "(a BEFORE UPDATE trigger setting it would do the same)", source_ddl=row.extra)
    return Column(name=row.name, source_type=declared, pg_type=pg_type, not_null=not row.nullable,
                  default=_default(source, row, pg_type, names) if plain else None, identity=identity,
                  generated=generated, comment=row.comment or None)


def _generated(source: _Source, row: _ColumnRow, names: list[str]) -> str | None:
    try:
        return to_postgres(row.generation or "", "mysql", names).sql
    except Untranslatable as exc:
        source.skip(f"generated column {row.table}.{row.name}", f"its expression does not translate ({exc}): carried "
                    "as a plain column holding the source's values", source_ddl=f"AS ({row.generation})")
        return None


def _default(source: _Source, row: _ColumnRow, pg_type: str, names: list[str]) -> str | None:
    """MariaDB writes a default as SQL (strings quoted, NULL as `NULL`, expressions as they are); MySQL writes a
    literal's bare value and marks expressions DEFAULT_GENERATED."""
    if row.default is None:
        return None
    text = str(row.default)
    try:
        if source.mariadb or "DEFAULT_GENERATED" in row.extra.upper() or _BITS.fullmatch(text):
            return literal_default(text, "mysql", pg_type)
        numeric = _NUMBER.fullmatch(text) and pg_type.split("(")[0] in _NUMERIC_TYPES
        return text if numeric else string_default(text, pg_type)
    except Untranslatable as exc:
        source.not_carried.append(default_not_carried(row.table, row.name, text, exc, "mysql", names))
        return None


_BITS = re.compile(r"b'[01]*'")
_NUMBER = re.compile(r"-?\d+(\.\d*)?([eE][+-]?\d+)?")
_NUMERIC_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}


def _next_auto_increment(source: _Source, obj: _Object) -> int:
    """The table's next auto-increment value, from `SHOW CREATE TABLE` (1 when it shows none: never advanced)."""
    try:
        ddl = str(source.show("TABLE", obj.name)[0][1])
    except SourceError:
        return obj.auto_increment or 1
    options = ddl[ddl.find("\n) ") :].split("\n", 2)[1] if "\n) " in ddl else ""
    found = re.search(r"\bAUTO_INCREMENT=(\d+)", options)
    return int(found.group(1)) if found else 1


# ------------------------------------------------------------------------------------------------ indexes

class _IndexPart(NamedTuple):
    name: str
    unique: bool
    column: str | None
    sub_part: int | None
    kind: str
    expression: str | None


_STATISTICS = """
    SELECT TABLE_NAME AS t, INDEX_NAME AS i, NON_UNIQUE AS nu, COLUMN_NAME AS c, SUB_PART AS s, INDEX_TYPE AS k,
           {expression} AS x
    FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {db} ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"""


def _statistics(source: _Source) -> dict[str, list[_IndexPart]]:
    sql = _STATISTICS.replace("{expression}", "EXPRESSION" if source.expressions else "CAST(NULL AS CHAR)")
    found: dict[str, list[_IndexPart]] = {}
    for t, i, nu, c, s, k, x in source.rows(sql):
        found.setdefault(str(t), []).append(_IndexPart(str(i), not int(nu), c, None if s is None else int(s),
                                                       str(k).upper(), x))
    return found


def _indexes(source: _Source, table: str, parts: list[_IndexPart]) -> tuple[Index | None, list[Index]]:
    grouped: dict[str, list[_IndexPart]] = {}
    for part in parts:
        grouped.setdefault(part.name, []).append(part)
    primary, indexes = None, []
    for name in sorted(grouped):
        index = _index(source, table, name, grouped[name])
        if index is not None and index.primary:
            primary = index
        elif index is not None:
            indexes.append(index)
    return primary, indexes


def _index(source: _Source, table: str, name: str, parts: list[_IndexPart]) -> Index | None:
    """The index as PostgreSQL can build it, or None (reported) when it cannot."""
    columns = [p.column or "" for p in parts]
    what, ddl = f"index {table}.{name}", _source_key(name, parts)
    q_name, q_table = quote_ident(f"{table}_pkey" if name == "PRIMARY" else name), quote_ident(table)
    if parts[0].kind == "FULLTEXT":
        document = " || ' ' || ".join(f"coalesce({quote_ident(c)}, '')" for c in columns)
        source.skip(f"{what} (FULLTEXT)", "PostgreSQL's full-text search uses a GIN index over a tsvector",
                    f"CREATE INDEX {q_name} ON {q_table} USING GIN (to_tsvector('simple', {document}))", ddl)
    elif parts[0].kind == "SPATIAL":
        source.skip(f"{what} (SPATIAL)", "spatial types and indexes need PostGIS; the column is carried as text",
                    source_ddl=ddl)
    elif any(p.column is None for p in parts):
        source.skip(f"{what} (expression)", "MySQL functional index parts are not translated", source_ddl=ddl)
    elif any(p.sub_part is not None for p in parts):
        # A unique prefix index is the same constraint over left(col, n); any other is best replaced by an index
        # of the whole values, which PostgreSQL's planner uses for the same lookups.
        unique = parts[0].unique
        keys = [quote_ident(p.column or "") if p.sub_part is None or not unique
                else f"left({quote_ident(p.column or '')}, {p.sub_part})" for p in parts]
        source.skip(f"{what} (prefix)", "PostgreSQL indexes whole values, not the first characters of one",
                    f"CREATE {'UNIQUE ' if unique else ''}INDEX {q_name} ON {q_table} ({', '.join(keys)})", ddl)
    else:
        primary = name == "PRIMARY"
        return Index(name=f"{table}_pkey" if primary else name, columns=columns, unique=parts[0].unique,
                     primary=primary)
    return None


def _source_key(name: str, parts: list[_IndexPart]) -> str:
    """The index as MySQL's CREATE TABLE writes it (MariaDB gives a SPATIAL index's parts a SUB_PART of 32 that
    it never shows there)."""
    prefixes = parts[0].kind != "SPATIAL"
    keys = ", ".join(f"({p.expression})" if p.column is None else quote_ident(p.column, "mysql")
                     + ("" if p.sub_part is None or not prefixes else f"({p.sub_part})") for p in parts)
    if name == "PRIMARY":
        return f"PRIMARY KEY ({keys})"
    kind = {"FULLTEXT": "FULLTEXT ", "SPATIAL": "SPATIAL "}.get(parts[0].kind, "UNIQUE " if parts[0].unique else "")
    return f"{kind}KEY {quote_ident(name, 'mysql')} ({keys})"


# ------------------------------------------------------------------------------------------------ checks

_MARIADB_CHECKS = """
    SELECT TABLE_NAME AS t, CONSTRAINT_NAME AS n, CHECK_CLAUSE AS c
    FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = {db}"""

_MYSQL_CHECKS = """
    SELECT tc.TABLE_NAME AS t, cc.CONSTRAINT_NAME AS n, cc.CHECK_CLAUSE AS c
    FROM information_schema.CHECK_CONSTRAINTS cc JOIN information_schema.TABLE_CONSTRAINTS tc
      ON tc.CONSTRAINT_SCHEMA = cc.CONSTRAINT_SCHEMA AND tc.CONSTRAINT_NAME = cc.CONSTRAINT_NAME
     AND tc.CONSTRAINT_TYPE = 'CHECK'
    WHERE cc.CONSTRAINT_SCHEMA = {db}"""


def _check_clauses(source: _Source) -> dict[str, list[tuple[str, str]]]:
    """table -> [(name, clause)], by name (none before MySQL 8.0.16 and MariaDB 10.2, which ignored checks)."""
    try:
        rows = source.rows(_MARIADB_CHECKS if source.mariadb else _MYSQL_CHECKS)
    except SourceError:
        return {}
    found: dict[str, list[tuple[str, str]]] = {}
    for t, n, c in sorted(rows, key=lambda r: (str(r[0]), str(r[1]))):
        found.setdefault(str(t), []).append((str(n), str(c)))
    return found


def _checks(source: _Source, table: str, clauses: list[tuple[str, str]], json: set[str],
            names: list[str]) -> list[Check]:
    checks = []
    for name, clause in clauses:
        if any(clause.strip() == f"json_valid({quote_ident(c, 'mysql')})" for c in json):
            continue  # the JSON type itself
        try:
            translated = to_postgres(clause, "mysql", names)
        except Untranslatable as exc:
            source.skip(f"check constraint {name} on {table}", f"its expression does not translate ({exc})",
                        source_ddl=f"CONSTRAINT {quote_ident(name, 'mysql')} CHECK ({clause})")
            continue
        checks.append(Check(name=name, expression=f"({translated.sql})", columns=translated.columns))
    return checks


_MEMBERS = re.compile(r"(enum|set)\((.*)\)", re.I | re.S)


def _member_checks(table: str, rows: list[_ColumnRow]) -> list[Check]:
    """ENUM and SET columns travel as text: a check keeps them to their members (a SET: comma-separated ones)."""
    checks = []
    for row in rows:
        found = _MEMBERS.fullmatch(row.type.strip())
        if not found:
            continue
        members = ", ".join(quote_literal(m) for m in _members(found.group(2)))
        q = quote_ident(row.name)
        expression = f"({q} IN ({members}))" if found.group(1).lower() == "enum" \
            else f"(string_to_array({q}, ',') <@ ARRAY[{members}]::text[])"
        checks.append(Check(name=f"{table}_{row.name}_check", expression=expression, columns=[row.name]))
    return checks


def _members(listed: str) -> list[str]:
    """The members of `'a','b'` as MySQL prints them (quotes doubled, backslashes escaped)."""
    tree = sqlglot.parse_one(f"({listed})", read="mysql")
    values = tree.expressions if isinstance(tree, exp.Tuple) else [tree.this if isinstance(tree, exp.Paren) else tree]
    return [v.this for v in values]


# ------------------------------------------------------------------------------------------------ foreign keys

_FOREIGN_KEYS = """
    SELECT rc.TABLE_NAME AS t, rc.CONSTRAINT_NAME AS n, k.COLUMN_NAME AS c, k.REFERENCED_TABLE_SCHEMA AS rs,
           k.REFERENCED_TABLE_NAME AS rt, k.REFERENCED_COLUMN_NAME AS rc, rc.DELETE_RULE AS od, rc.UPDATE_RULE AS ou
    FROM information_schema.REFERENTIAL_CONSTRAINTS rc JOIN information_schema.KEY_COLUMN_USAGE k
      ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA AND k.TABLE_NAME = rc.TABLE_NAME
     AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME
    WHERE rc.CONSTRAINT_SCHEMA = {db} ORDER BY rc.TABLE_NAME, rc.CONSTRAINT_NAME, k.ORDINAL_POSITION"""


def _foreign_keys(source: _Source) -> list[ForeignKey]:
    """Every foreign key of the database (one to another database is reported here)."""
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in source.rows(_FOREIGN_KEYS):
        grouped.setdefault((str(row[0]), str(row[1])), []).append(row)
    keys = []
    for (table, name), rows in sorted(grouped.items()):
        _, _, _, ref_schema, ref_table, _, on_delete, on_update = rows[0]
        fk = ForeignKey(name=name, table=table, columns=[str(r[2]) for r in rows], ref_table=str(ref_table),
                        ref_columns=[str(r[5]) for r in rows], on_delete=_ACTIONS.get(str(on_delete), "NO ACTION"),
                        on_update=_ACTIONS.get(str(on_update), "NO ACTION"))
        if ref_schema != source.database:
            source.skip(f"foreign key {name} on {table}", f"references table {ref_schema}.{ref_table}, in another "
                        "database", source_ddl=foreign_key_clause(fk))
            continue
        keys.append(fk)
    return keys


# ------------------------------------------------------------------------------------------------ other objects

def _views(source: _Source, objects: list[_Object], columns: dict[str, list[_ColumnRow]],
           include: Callable[[str], bool]) -> list[View]:
    tables = {o.name for o in objects if o.kind in _TABLE_KINDS}
    views = {o.name for o in objects if o.kind == "VIEW"}
    included = {n for n in tables | views if include(n)}
    every_column = sorted({c.name for rows in columns.values() for c in rows})
    found = []
    for name, definition in sorted((str(n), str(d or "")) for n, d in source.rows(
            "SELECT TABLE_NAME AS n, VIEW_DEFINITION AS d FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {db}")):
        if name not in included:
            continue
        view = _view(source, name, definition, [c.name for c in columns.get(name, [])], every_column, tables, views,
                     included)
        found += [view] if view is not None else []
    return found


def _view(source: _Source, name: str, definition: str, own_columns: list[str], every_column: list[str],
          tables: set[str], views: set[str], included: set[str]) -> View | None:
    what, ddl = f"view {name}", f"CREATE VIEW {quote_ident(name, 'mysql')} AS {definition}"
    if not definition:
        source.skip(what, "its definition is not readable (it takes the SHOW VIEW privilege)")
        return None
    try:
        translated = to_postgres(definition, "mysql", every_column, tables | views, source.database)
    except Untranslatable as exc:
        source.skip(what, f"its query does not translate ({exc})", source_ddl=ddl)
        return None
    problem = view_problem(translated.tables, tables, views, included)
    if problem is not None:
        source.skip(what, problem, source_ddl=ddl)
        return None
    return View(name=name, definition=translated.sql, depends_on=sorted(set(translated.tables) & views),
                columns=own_columns)


def _sequences(source: _Source, objects: list[_Object], include: Callable[[str], bool]) -> None:
    for o in objects:
        if o.kind == "SEQUENCE" and include(o.name):
            source.skip(f"sequence {o.name}", "MariaDB sequences are not carried (their next value is not readable "
                        "without taking it)")


def _triggers(source: _Source, tables: set[str]) -> None:
    for name, table, timing, event, statement in sorted(source.rows("""
            SELECT TRIGGER_NAME AS n, EVENT_OBJECT_TABLE AS t, ACTION_TIMING AS w, EVENT_MANIPULATION AS e,
                   ACTION_STATEMENT AS s
            FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db}""")):
        if table in tables:
            source.skip(f"trigger {name} on {table}", "MySQL triggers are not translated", source_ddl=(
                f"CREATE TRIGGER {quote_ident(name, 'mysql')} {timing} {event} ON {quote_ident(table, 'mysql')} "
                f"FOR EACH ROW {statement}"))


def _routines(source: _Source) -> None:
    for name, kind, body in sorted(source.rows(
            "SELECT ROUTINE_NAME AS n, ROUTINE_TYPE AS k, ROUTINE_DEFINITION AS d FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = {db}")):
        source.skip(f"{str(kind).lower()} {name}", "MySQL stored functions and procedures are not translated",
                    source_ddl=_routine_ddl(source, str(name), str(kind), str(body or "")))


def _routine_ddl(source: _Source, name: str, kind: str, body: str) -> str:
    """The routine's whole CREATE statement (its body alone where SHOW CREATE is not allowed)."""
    try:
        rows = source.show(kind, name)
    except SourceError:
        return body
    return str(rows[0][2]) if rows and rows[0][2] else body
