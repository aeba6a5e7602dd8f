"""A PostgreSQL source database as a `DatabaseSchema`: everything PostgreSQL → PostgreSQL can carry.

One schema is read (the job's patterns are `schema.table`; a pattern without a dot means `public`). Definitions
are printed by the server itself (`pg_get_viewdef`, `pg_get_indexdef`, `pg_get_constraintdef`,
`pg_get_functiondef`, `pg_get_triggerdef`) with `search_path` set to the source schema, so they name its objects
unqualified and read the target schema's objects when created there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.dbschema import (
    Action,
    Check,
    Column,
    DatabaseSchema,
    Domain,
    EnumType,
    ForeignKey,
    Index,
    NotCarried,
    Routine,
    Sequence,
    Table,
    View,
)
from engine.errors import SourceError
from engine.source import query_rows
from engine.sql import quote_ident
from engine.typemap import pg_source_column
from engine.urls import DatabaseUrl

ACTIONS: dict[str, Action] = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_IN_SCHEMA = "c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)"


class _Reader:
    def __init__(self, url: DatabaseUrl, schema: str) -> None:
        self.url, self.schema = url, schema
        self.not_carried: list[NotCarried] = []

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return query_rows(self.url, sql, (self.schema, *params))

    def plain(self, text: str | None) -> str | None:
        """A definition with the source schema's qualifier taken off (the server prints it for schemas not on its
        search path), so it reads the target schema's objects when created there."""
        return None if text is None else _unqualified(text, self.schema)

    def user_types(self) -> dict[int, tuple[str, str]]:
        """oid -> (name, 'e' | 'd') of the enums and domains of the schema: columns keep them by name."""
        found = self.rows("SELECT t.oid::bigint, t.typname, t.typtype FROM pg_type t "
                          "WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) "
                          "AND t.typtype IN ('e', 'd')")
        return {int(oid): (str(name), str(kind)) for oid, name, kind in found}


def schema_of(patterns: list[str]) -> str:
    """The one source schema the job's `schema.table` patterns name (`public` when none does)."""
    schemas = {p.removeprefix("!").split(".", 1)[0] for p in patterns if "." in p}
    if len(schemas) > 1:
        raise SourceError(f"`source.tables` names several schemas ({', '.join(sorted(schemas))}); a job reads one "
                          "schema into `target.schema`: write one job per schema")
    return schemas.pop() if schemas else "public"


def table_patterns(patterns: list[str]) -> list[str]:
    """The patterns over bare table names of the one schema they name."""
    return [("!" if p.startswith("!") else "") + p.removeprefix("!").split(".", 1)[-1] for p in patterns]


def read_pg(url: DatabaseUrl, patterns: list[str], include: Callable[[str], bool],
            exclude_data: Callable[[str], bool]) -> DatabaseSchema:
    reader = _Reader(url, schema_of(patterns))
    if not reader.rows("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")[0][0]:
        raise SourceError(f"schema {reader.schema!r} does not exist in the source {url}")
    types = reader.user_types()
    tables = [t for t in _tables(reader, types, exclude_data) if include(t.name)]
    names = {t.name for t in tables}
    tables = [t for t in tables if t.partition_of is None or t.partition_of in names]
    views = [v for v in _views(reader) if include(v.name)]
    return DatabaseSchema(
        dialect="postgresql", source_schema=reader.schema, tables=tables, views=views,
        foreign_keys=_foreign_keys(reader, names), sequences=_sequences(reader), enums=_enums(reader),
        domains=_domains(reader), routines=_routines(reader, names), not_carried=reader.not_carried)


# ------------------------------------------------------------------------------------------------ tables

_TABLES = f"""
    SELECT c.oid::bigint, c.relname, c.relkind::text, obj_description(c.oid, 'pg_class'),
           GREATEST(c.reltuples, 0)::bigint, pg_relation_size(c.oid),
           CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
           (SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
             WHERE i.inhrelid = c.oid AND c.relispartition),
           CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
           ARRAY(SELECT p.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                  WHERE i.inhrelid = c.oid AND NOT c.relispartition ORDER BY i.inhseqno),
           EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid) AND c.relkind = 'r'
    FROM pg_class c WHERE {_IN_SCHEMA} AND c.relkind IN ('r', 'p') ORDER BY c.relname"""


def _tables(reader: _Reader, types: dict[int, tuple[str, str]], exclude_data: Callable[[str], bool]) -> list[Table]:
    """Every table of the schema, each query over all of them at once: a schema of hundreds of tables is read in
    a handful of round trips."""
    found = reader.rows(_TABLES)
    columns, indexes, checks = _columns(reader, types), _indexes(reader), _checks(reader)
    tables = []
    for oid, name, kind, comment, rows, size, partkey, parent, bound, inherits, is_parent in found:
        own = columns.get(int(oid), [])
        pk, secondary = indexes.get(int(oid), (None, []))
        tables.append(Table(
            name=name, schema=reader.schema, columns=[c for c, _ in own], primary_key=pk, indexes=secondary,
            checks=checks.get(int(oid), []), comment=comment, rows=int(rows), bytes=int(size),
            next_values={c.name: after for c, after in own if after is not None},
            partition_key=partkey, partition_of=parent, partition_bound=bound,
            inherits=list(inherits or []), read_only=bool(is_parent),
            copy_data=kind != "p" and not exclude_data(str(name))))
    return tables


_OF_TABLES = f"(SELECT c.oid FROM pg_class c WHERE {_IN_SCHEMA} AND c.relkind IN ('r', 'p'))"

_COLUMNS = f"""
    SELECT a.attrelid::bigint, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
           col_description(a.attrelid, a.attnum), a.atttypid::bigint,
           COALESCE(NULLIF(t.typelem, 0), 0)::bigint, t.typcategory = 'A', pg_get_serial_sequence(
               format('%I.%I', $1::text, (SELECT relname FROM pg_class WHERE oid = a.attrelid)), a.attname)
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid IN {_OF_TABLES} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"""

def _columns(reader: _Reader, types: dict[int, tuple[str, str]]) -> dict[int, list[tuple[Column, int | None]]]:
    """Each table's columns (by oid), an identity's or serial's with the next value of its sequence."""
    found = reader.rows(_COLUMNS)
    states = _next_values(reader, sorted({row[-1] for row in found if row[-1] is not None}))
    tables: dict[int, list[tuple[Column, int | None]]] = {}
    for oid, name, declared, not_null, default, identity, generated, comment, type_oid, elem, is_array, seq in found:
        user = types.get(int(elem) if is_array else int(type_oid))
        pg_type = pg_source_column(name, declared).pg_type
        if user is not None:  # the schema's own enum or domain, created in the target schema too
            pg_type = quote_ident(user[0]) + ("[]" if is_array else "")
        serial = seq is not None and default is not None and str(default).startswith("nextval(")
        after, options = states[seq] if seq is not None else (None, None)
        tables.setdefault(int(oid), []).append((Column(
            name=name, source_type=declared, pg_type=pg_type, not_null=bool(not_null),
            default=None if serial or generated == "s" else reader.plain(default), identity=bool(identity) or serial,
            identity_always=identity == "a", identity_options=options,
            generated=reader.plain(default) if generated == "s" else None, comment=comment), after))
    return tables


def _next_values(reader: _Reader, sequences: list[str]) -> dict[str, tuple[int, str | None]]:
    """Per sequence: what nextval() returns next (the sequence's own state, never MAX(column)), and its options
    when they are not an identity's defaults (a step other than 1, a lowest value other than 1: a descending
    one, say). One query for up to `_SEQUENCES_A_QUERY` of them."""
    states = {}
    for start in range(0, len(sequences), _SEQUENCES_A_QUERY):
        chunk = sequences[start:start + _SEQUENCES_A_QUERY]
        union = " UNION ALL ".join(
            f"SELECT {i}, q.last_value, q.is_called, p.seqincrement, p.seqmin, p.seqmax FROM {seq} AS q "
            f"JOIN pg_sequence AS p ON p.seqrelid = ${i + 2}::text::regclass" for i, seq in enumerate(chunk))
        for i, last, called, step, low, high in reader.rows(f"SELECT * FROM ({union}) AS s WHERE $1::text IS NOT NULL",
                                                            *chunk):
            options = None if (int(step), int(low)) == (1, 1) else f"INCREMENT BY {step} MINVALUE {low} MAXVALUE {high}"
            states[chunk[int(i)]] = ((int(last) + int(step) if called else int(last)), options)
    return states


_SEQUENCES_A_QUERY = 200  # each read locks its sequence until the query ends: a bounded number at once


_INDEXES = f"""
    SELECT x.indrelid::bigint, i.relname, x.indisprimary, x.indisunique,
           x.indexprs IS NOT NULL OR x.indpred IS NOT NULL OR am.amname <> 'btree' OR x.indnkeyatts <> x.indnatts,
           pg_get_indexdef(x.indexrelid),
           ARRAY(SELECT a.attname::text FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.n),
           COALESCE(con.conname, ''), EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = x.indexrelid),
           CASE WHEN con.contype = 'x' THEN pg_get_constraintdef(con.oid) END
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam
    LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x')
    WHERE x.indrelid IN {_OF_TABLES} ORDER BY x.indrelid, i.relname"""

_USING = re.compile(r" USING (.*)$", re.S)


def _indexes(reader: _Reader) -> dict[int, tuple[Index | None, list[Index]]]:
    """Each table's primary key and other indexes, by oid."""
    tables: dict[int, tuple[Index | None, list[Index]]] = {}
    for oid, name, is_pk, unique, special, indexdef, columns, constraint, inherited, exclude in reader.rows(_INDEXES):
        if inherited:  # a partition's share of its parent's index: the parent's index creates it
            continue
        primary, indexes = tables.setdefault(int(oid), (None, []))
        definition = _USING.search(indexdef)
        index = Index(name=constraint or name, columns=list(columns), unique=bool(unique), primary=bool(is_pk),
                      definition=reader.plain(exclude or (definition.group(1) if special and definition else None)),
                      exclusion=exclude is not None)
        if is_pk:
            tables[int(oid)] = (index, indexes)
        else:
            indexes.append(index)
    return tables


def _checks(reader: _Reader) -> dict[int, list[Check]]:
    """Each table's own check constraints, by oid."""
    tables: dict[int, list[Check]] = {}
    for oid, name, definition, valid, columns in reader.rows(f"""
            SELECT con.conrelid::bigint, con.conname, pg_get_constraintdef(con.oid), con.convalidated,
                   ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = con.conrelid
                         AND a.attnum = ANY(con.conkey) ORDER BY a.attnum)
            FROM pg_constraint con WHERE con.conrelid IN {_OF_TABLES} AND con.contype = 'c' AND con.conislocal
            ORDER BY con.conrelid, con.conname"""):
        tables.setdefault(int(oid), []).append(Check(name=name, expression=reader.plain(_check_body(definition)) or "",
                                                     columns=list(columns), valid=bool(valid)))
    return tables


def _check_body(definition: str) -> str:
    body = definition.removeprefix("CHECK ").removesuffix(" NOT VALID")
    return body.removesuffix(" NO INHERIT")


# ------------------------------------------------------------------------------------------------ keys

_FOREIGN_KEYS = """
    SELECT con.conname, c.relname, f.relname,
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
           con.confdeltype::text, con.confupdtype::text, con.condeferrable, con.condeferred,
           f.relnamespace = c.relnamespace, pg_get_constraintdef(con.oid)
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class f ON f.oid = con.confrelid
    WHERE con.contype = 'f' AND {in_schema} AND con.conparentid = 0 ORDER BY c.relname, con.conname"""


def _foreign_keys(reader: _Reader, tables: set[str]) -> list[ForeignKey]:
    keys = []
    for name, table, ref, columns, ref_columns, on_delete, on_update, deferrable, deferred, same, ddl in \
            reader.rows(_FOREIGN_KEYS.format(in_schema=_IN_SCHEMA)):
        if table not in tables:
            continue
        if not same or ref not in tables:
            reader.not_carried.append(NotCarried(
                what=f"foreign key {name} on {table}", reason=f"references table {ref}, which the job leaves out",
                suggestion=f"ALTER TABLE {quote_ident(table)} ADD CONSTRAINT {quote_ident(name)} {ddl}"))
            continue
        keys.append(ForeignKey(name=name, table=table, columns=list(columns), ref_table=ref,
                               ref_columns=list(ref_columns), on_delete=ACTIONS[on_delete],
                               on_update=ACTIONS[on_update], deferrable=bool(deferrable), deferred=bool(deferred)))
    return keys


# ------------------------------------------------------------------------------------------------ other objects

_VIEWS = f"""
    SELECT c.relname, c.relkind = 'm', pg_get_viewdef(c.oid, true),
           ARRAY(SELECT DISTINCT d.relname::text FROM pg_rewrite r JOIN pg_depend dep ON dep.objid = r.oid
                 JOIN pg_class d ON d.oid = dep.refobjid
                 WHERE r.ev_class = c.oid AND d.oid <> c.oid AND d.relkind IN ('v', 'm')
                   AND d.relnamespace = c.relnamespace),
           ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                 AND NOT a.attisdropped ORDER BY a.attnum)
    FROM pg_class c WHERE {_IN_SCHEMA} AND c.relkind IN ('v', 'm') ORDER BY c.relname"""


def _views(reader: _Reader) -> list[View]:
    return [View(name=n, schema=reader.schema, materialized=bool(m), definition=(reader.plain(d) or "").strip().rstrip(";"),
                 depends_on=sorted(deps), columns=list(cols)) for n, m, d, deps, cols in reader.rows(_VIEWS)]


def _sequences(reader: _Reader) -> list[Sequence]:
    """Sequences no column owns (a serial's or identity's own sequence travels with its column)."""
    found = reader.rows("""
        SELECT s.sequencename, format_type(c.seqtypid, NULL), s.increment_by, s.min_value, s.max_value,
               s.start_value, COALESCE(s.last_value, s.start_value), s.last_value IS NOT NULL, s.cycle
        FROM pg_sequences s JOIN pg_class k ON k.relname = s.sequencename
             AND k.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) JOIN pg_sequence c ON c.seqrelid = k.oid
        WHERE s.schemaname = $1 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = k.oid
              AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        ORDER BY s.sequencename""")
    return [Sequence(name=n, data_type=t, increment=int(i), min_value=int(lo), max_value=int(hi), start=int(s),
                     next_value=int(last) + int(i) if called else int(last), cycle=bool(cyc))
            for n, t, i, lo, hi, s, last, called, cyc in found]


def _enums(reader: _Reader) -> list[EnumType]:
    found = reader.rows("""
        SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) GROUP BY t.typname ORDER BY t.typname""")
    return [EnumType(name=n, labels=list(labels)) for n, labels in found]


def _domains(reader: _Reader) -> list[Domain]:
    found = reader.rows("""
        SELECT t.typname, format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
               ARRAY(SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contypid = t.oid
                     ORDER BY c.conname)
        FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
          AND t.typtype = 'd' ORDER BY t.typname""")
    return [Domain(name=n, base_type=b, not_null=bool(nn), default=d, checks=list(c)) for n, b, nn, d, c in found]


def _routines(reader: _Reader, tables: set[str]) -> list[Routine]:
    """Extensions, then the schema's functions and procedures (not an extension's), then triggers on its tables."""
    routines = [Routine(name=n, kind="extension", ddl=f"CREATE EXTENSION IF NOT EXISTS {quote_ident(n)} SCHEMA public")
                for (n,) in reader.rows("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' "
                                        "AND $1::text IS NOT NULL ORDER BY extname")]
    for name, ddl, pathless, args in reader.rows("""
            SELECT p.proname, pg_get_functiondef(p.oid),
                   NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%'),
                   pg_get_function_identity_arguments(p.oid)
            FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
              AND p.prokind IN ('f', 'p')
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
            ORDER BY p.proname, p.oid"""):
        routines.append(Routine(name=name, kind="function", ddl=_unqualified(ddl, reader.schema),
                                signature=f"{quote_ident(name)}({_unqualified(args, reader.schema)})"
                                if pathless else ""))
    for name, ddl in reader.rows(_AGGREGATES):  # after the functions: they are made of them
        if ddl is None:
            reader.not_carried.append(NotCarried(what=f"aggregate {name}", reason="ordered-set and hypothetical-set "
                                                 "aggregates and window functions are not carried"))
            continue
        routines.append(Routine(name=name, kind="function", ddl=_unqualified(ddl, reader.schema)))
    for name, table, ddl in reader.rows("""
            SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
              AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
              AND t.tgparentid = 0 ORDER BY c.relname, t.tgname"""):
        if table in tables:
            routines.append(Routine(name=name, kind="trigger", table=table, ddl=_unqualified(ddl, reader.schema)))
    return routines


# CREATE AGGREGATE from the catalog (pg_get_functiondef refuses aggregates): plain aggregates with their support
# functions, initial conditions, moving-aggregate mode, sort operator and parallel safety.
_AGGREGATES = """
    SELECT p.proname, CASE WHEN p.prokind = 'a' AND a.aggkind = 'n' THEN format(
        'CREATE AGGREGATE %I(%s) (SFUNC = %s, STYPE = %s%s)', p.proname, pg_get_function_identity_arguments(p.oid),
        a.aggtransfn::regproc, format_type(a.aggtranstype, NULL), concat(
            ', SSPACE = ' || NULLIF(a.aggtransspace, 0),
            ', FINALFUNC = ' || NULLIF(a.aggfinalfn, 0)::regproc,
            CASE WHEN a.aggfinalextra THEN ', FINALFUNC_EXTRA' END,
            CASE WHEN a.aggfinalfn <> 0 THEN ', FINALFUNC_MODIFY = ' ||
                 CASE a.aggfinalmodify WHEN 'r' THEN 'READ_ONLY' WHEN 's' THEN 'SHAREABLE' ELSE 'READ_WRITE' END END,
            ', COMBINEFUNC = ' || NULLIF(a.aggcombinefn, 0)::regproc,
            ', SERIALFUNC = ' || NULLIF(a.aggserialfn, 0)::regproc,
            ', DESERIALFUNC = ' || NULLIF(a.aggdeserialfn, 0)::regproc,
            ', INITCOND = ' || quote_literal(a.agginitval),
            ', MSFUNC = ' || NULLIF(a.aggmtransfn, 0)::regproc,
            ', MINVFUNC = ' || NULLIF(a.aggminvtransfn, 0)::regproc,
            ', MSTYPE = ' || format_type(NULLIF(a.aggmtranstype, 0), NULL),
            ', MSSPACE = ' || NULLIF(a.aggmtransspace, 0),
            ', MFINALFUNC = ' || NULLIF(a.aggmfinalfn, 0)::regproc,
            CASE WHEN a.aggmfinalextra THEN ', MFINALFUNC_EXTRA' END,
            ', MINITCOND = ' || quote_literal(a.aggminitval),
            ', SORTOP = OPERATOR(' || (SELECT o.oprname FROM pg_operator o WHERE o.oid = NULLIF(a.aggsortop, 0))
                || ')',
            ', PARALLEL = ' || CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' END)) END
    FROM pg_proc p LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND p.prokind IN ('a', 'w')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    ORDER BY p.proname, p.oid"""


def _unqualified(ddl: str, schema: str) -> str:
    """The source schema's qualifier taken off the names a definition prints, so it builds in the target's."""
    quoted = re.escape('"' + schema.replace('"', '""') + '".')
    bare = r"(?<![\w\"$.])" + re.escape(schema + ".") if re.fullmatch(r"[a-z_][a-z0-9_$]*", schema) else None
    return re.sub(quoted if bare is None else f"{quoted}|{bare}", "", ddl)
