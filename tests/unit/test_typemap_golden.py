"""Golden files for the type map: what each representative declared type becomes, per source dialect.

tests/fixtures/typemap/<dialect>.json holds, for each declared type, its type in flight (Arrow), its PostgreSQL
type, whether it travels as text (cast by PostgreSQL on load) and the mapping's note, one entry a line. A
change to engine.typemap that changes any of them fails here with a diff; when the change is intended,
regenerate the files and review the diff in the commit:

    .venv/bin/python -m tests.unit.test_typemap_golden --regenerate
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import typemap
from engine.sql import Dialect
from engine.typemap import dialect_column

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "typemap"
REGENERATE = ".venv/bin/python -m tests.unit.test_typemap_golden --regenerate"
DIALECTS: tuple[Dialect, ...] = ("postgresql", "mysql", "sqlite")

# (declared type, is_enum, domain's base type): the types the documented type map shows, and a few more.
DECLARED: dict[Dialect, list[tuple[str, bool, str | None]]] = {
    "postgresql": [(t, False, None) for t in [
        "smallint", "integer", "bigint", "numeric(12,2)", "numeric(28,10)", "numeric(38,0)", "numeric(38,11)",
        "numeric(50,20)", "numeric", "real", "double precision", "boolean", "text", "character varying(20)",
        "character varying", "character(3)", "bytea", "date", "time without time zone", "time(3) without time zone",
        "time with time zone", "timestamp without time zone", "timestamp(3) with time zone",
        "timestamp with time zone", "interval", "interval hour to minute", "uuid", "json", "jsonb", "integer[]",
        "numeric(5,2)[]", "timestamp with time zone[]", "inet", "cidr", "macaddr", "bit(4)", "bit varying(8)",
        "int4range", "tsvector", "point", "money", "xml",
    ]] + [("mood", True, None), ("mood[]", True, None), ("posint", False, "integer"),
          ("price", False, "numeric(12,2)"), ("stamp", False, "timestamp with time zone")],
    "mysql": [(t, False, None) for t in [
        "tinyint(1)", "tinyint unsigned", "smallint", "smallint unsigned", "mediumint", "mediumint unsigned", "int",
        "int(11)", "int unsigned", "integer unsigned", "bigint", "bigint unsigned", "bigint(20) unsigned zerofill",
        "decimal(12,2)", "decimal(38,0)", "decimal(65,30)", "numeric(10,0) unsigned", "float", "double",
        "char(10)", "varchar(255)", "tinytext", "text", "mediumtext", "longtext", "blob", "tinyblob", "longblob",
        "binary(4)", "varbinary(16)", "date", "datetime", "datetime(6)", "timestamp", "timestamp(6)", "time",
        "time(6)", "year", "json", "enum('a','b')", "set('x','y')", "bit(1)", "bit(10)", "geometry",
    ]],
    "sqlite": [(t, False, None) for t in [
        "INTEGER", "INT", "BIGINT", "UNSIGNED BIG INT", "REAL", "DOUBLE", "FLOAT", "TEXT", "VARCHAR(5)", "CLOB",
        "BLOB", "NUMERIC(12,2)", "DECIMAL(10,5)", "NUMERIC(50,10)", "NUMERIC", "BOOLEAN", "BOOL", "DATE",
        "DATETIME", "TIMESTAMP", "JSON", "", "STRING",
    ]],
}


def entry(dialect: Dialect, declared: str, is_enum: bool, base_type: str | None) -> dict[str, Any]:
    spec = dialect_column(dialect, "c", declared, is_enum, base_type)
    row: dict[str, Any] = {"declared": declared}
    if is_enum:
        row["enum"] = True
    if base_type:
        row["domain_over"] = base_type
    row.update(flight=spec.flight, pg_type=spec.pg_type, via_text=spec.via_text, note=spec.note)
    return row


def render(dialect: Dialect) -> str:
    """The fixture's text: a JSON list, one entry a line, so a diff shows whole mappings."""
    lines = [json.dumps(entry(dialect, *declared), ensure_ascii=False) for declared in DECLARED[dialect]]
    return "[\n" + ",\n".join("  " + line for line in lines) + "\n]\n"


def fixture(dialect: Dialect) -> Path:
    return FIXTURES / f"{dialect}.json"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_type_map_matches_its_golden_file(dialect: Dialect) -> None:
    path = fixture(dialect)
    if not path.exists():
        pytest.fail(f"{path} is missing; create it with: {REGENERATE}")
    expected, current = path.read_text(encoding="utf-8"), render(dialect)
    if current != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), current.splitlines(keepends=True),
                                            fromfile=f"{path.name} (golden)", tofile=f"{path.name} (engine.typemap now)"))
        pytest.fail(f"the type map for {dialect} changed:\n{diff}\nIf the change is intended, regenerate the golden "
                    f"files with:\n    {REGENERATE}\nand review their diff.", pytrace=False)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_golden_file_is_valid_json_with_every_field(dialect: Dialect) -> None:
    entries = json.loads(fixture(dialect).read_text(encoding="utf-8"))
    assert [e["declared"] for e in entries] == [d for d, _, _ in DECLARED[dialect]]
    for e in entries:
        assert {"flight", "pg_type", "via_text", "note"} <= e.keys()
        assert isinstance(e["via_text"], bool)


@pytest.mark.parametrize(("dialect", "examples"), [
    ("postgresql", typemap._PG_EXAMPLES), ("mysql", typemap._MYSQL_EXAMPLES), ("sqlite", typemap._SQLITE_EXAMPLES),
])
def test_every_documented_type_has_a_golden_entry(dialect: Dialect, examples: list[tuple[str, str]]) -> None:
    covered = {d for d, _, _ in DECLARED[dialect]}
    assert [d for d, _ in examples if d not in covered] == []


def test_the_golden_entries_agree_with_the_documented_table() -> None:
    """Each documented row shows the same flight and PostgreSQL types as the golden entry for its type."""
    table = typemap.type_map_markdown()
    sources: tuple[tuple[Dialect, str], ...] = (("postgresql", "PostgreSQL"), ("mysql", "MySQL/MariaDB"),
                                                ("sqlite", "SQLite"))
    for dialect, source in sources:
        for e in json.loads(fixture(dialect).read_text(encoding="utf-8")):
            if e["declared"] and not e.get("enum") and not e.get("domain_over"):
                row = f"| {source} | `{e['declared']}` | `{e['flight']}` | `{e['pg_type']}` |"
                documented = f"| {source} | `{e['declared']}` |" in table
                assert not documented or row in table, row


def main(argv: list[str]) -> int:
    if argv != ["--regenerate"]:
        print(f"usage: {REGENERATE}", file=sys.stderr)
        return 2
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for dialect in DIALECTS:
        path, text = fixture(dialect), render(dialect)
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        path.write_text(text, encoding="utf-8")
        print(f"{'wrote' if changed else 'unchanged'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
