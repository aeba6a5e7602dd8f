"""Identifier quoting and table-name parsing: the one place SQL names are made safe.

SQL text is never built by pasting user strings: identifiers go through `quote_ident`, values are
parameters (or, where a driver offers no parameters, integers rendered by `int()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["postgresql", "mysql", "sqlite"]

PG_MAX_IDENT_BYTES = 63


def pg_name_problem(name: str, what: str) -> str | None:
    """Why PostgreSQL cannot hold `name` exactly (it truncates names to 63 bytes silently), or None."""
    size = len(name.encode())
    if size <= PG_MAX_IDENT_BYTES:
        return None
    return (f"{what} {name!r} is {size} bytes; PostgreSQL keeps only the first {PG_MAX_IDENT_BYTES} bytes of a "
            "name, so it would be truncated (and names equal in those bytes would collide): use a shorter name")


def quote_ident(name: str, dialect: Dialect = "postgresql") -> str:
    """Quote one identifier for `dialect`, doubling any embedded quote character."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL byte")
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A string literal for SQL shown to people (a query to copy), the embedded quotes doubled. Statements the
    engine runs take their values as parameters instead."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class TableName:
    """A possibly schema-qualified table name, each part exact (case-sensitive, never folded)."""

    schema: str | None
    name: str

    def quoted(self, dialect: Dialect = "postgresql") -> str:
        if self.schema is None:
            return quote_ident(self.name, dialect)
        return f"{quote_ident(self.schema, dialect)}.{quote_ident(self.name, dialect)}"

    def with_suffix(self, suffix: str) -> TableName:
        """A sibling table name, truncated so PostgreSQL's 63-byte limit never merges two names."""
        room = PG_MAX_IDENT_BYTES - len(suffix.encode())
        base = self.name.encode()[:room].decode(errors="ignore")
        return TableName(self.schema, base + suffix)

    def __str__(self) -> str:
        return self.quoted()


def parse_table_name(text: str) -> TableName:
    """Parse `schema.table`, `table`, or double-quoted parts such as `"my schema"."Odd.Name"`."""
    parts: list[str] = []
    current: list[str] = []
    i, quoted_part = 0, False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            end = i + 1
            while True:
                end = text.find('"', end)
                if end == -1:
                    raise ValueError(f"unclosed double quote in table name {text!r}")
                if text[end + 1 : end + 2] == '"':
                    end += 2
                    continue
                break
            current.append(text[i + 1 : end].replace('""', '"'))
            quoted_part = True
            i = end + 1
            continue
        if ch == ".":
            parts.append("".join(current))
            current, quoted_part = [], False
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    del quoted_part
    if any(p == "" for p in parts) or len(parts) > 2:
        raise ValueError(
            f"table name {text!r} must be `table` or `schema.table`; quote parts holding dots, "
            'e.g. \'"my.schema"."orders"\''
        )
    if len(parts) == 1:
        return TableName(None, parts[0])
    return TableName(parts[0], parts[1])
