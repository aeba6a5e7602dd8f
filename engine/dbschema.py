"""A whole source database as the target will hold it: tables, keys, indexes, sequences, foreign keys, views.

The catalog readers (`dbcatalog_*`) fill it in from the source, naming everything as the source does; `ddl`
turns it into the target's statements, applying the job's naming. It is frozen into the run's record as JSON,
so a resumed run builds exactly what the interrupted one planned.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Naming = Literal["keep", "lower", "snake"]
Action = Literal["NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class Column(_Part):
    name: str
    source_type: str  # as the source declares it
    pg_type: str  # the target's type (the type map's, or the job's override)
    not_null: bool = False
    default: str | None = None  # a PostgreSQL literal default, when the source's is one
    identity: bool = False  # auto-increment, serial or identity: an identity column in the target
    identity_always: bool = False  # PostgreSQL GENERATED ALWAYS (loaded as BY DEFAULT, made ALWAYS after)
    identity_options: str | None = None  # `INCREMENT BY … MINVALUE … MAXVALUE …` when not the defaults
    generated: str | None = None  # PostgreSQL expression of a stored generated column (PG sources)
    comment: str | None = None


class Index(_Part):
    name: str
    columns: list[str]  # source column names, in order (empty when `definition` says it all)
    unique: bool = False
    primary: bool = False
    definition: str | None = None  # PG → PG expression or partial index: what follows `USING` in its DDL
    exclusion: bool = False  # PG → PG exclusion constraint: `definition` is its `EXCLUDE USING …` clause


class ForeignKey(_Part):
    name: str
    table: str  # the referencing table's source name
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
    on_delete: Action = "NO ACTION"
    on_update: Action = "NO ACTION"
    deferrable: bool = False
    deferred: bool = False


class Check(_Part):
    name: str
    expression: str  # PostgreSQL boolean expression over the table's source column names
    columns: list[str] = Field(default_factory=list)  # the columns it reads (renamed with them)
    valid: bool = True  # false: NOT VALID in the source (rows there may break it): carried NOT VALID


class Table(_Part):
    name: str  # source name, without schema
    schema_: str = Field("", alias="schema")  # source schema (PostgreSQL), else ""
    columns: list[Column]
    primary_key: Index | None = None
    indexes: list[Index] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    comment: str | None = None
    rows: int = 0  # an estimate, for ordering and reporting
    bytes: int = 0
    next_values: dict[str, int] = Field(default_factory=dict)  # identity column -> next value, from the source
    partition_key: str | None = None  # PostgreSQL partitioned table: `RANGE (a)` and the like
    partition_of: str | None = None  # a partition: its parent's source name
    partition_bound: str | None = None  # `FOR VALUES …` of a partition
    inherits: list[str] = Field(default_factory=list)  # PostgreSQL inheritance parents (source names)
    read_only: bool = False  # read with ONLY: an inheritance parent, whose children are copied on their own
    copy_data: bool = True  # false: schema only (`exclude_data`), or a partitioned parent (rows via partitions)

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.name}" if self.schema_ else self.name


class View(_Part):
    name: str
    schema_: str = Field("", alias="schema")
    definition: str  # the SELECT, in PostgreSQL's dialect
    materialized: bool = False
    depends_on: list[str] = Field(default_factory=list)  # views of this schema it reads (source names)
    columns: list[str] = Field(default_factory=list)


class Sequence(_Part):
    name: str
    data_type: str = "bigint"
    increment: int = 1
    min_value: int | None = None
    max_value: int | None = None
    start: int = 1
    next_value: int = 1  # what nextval() returns next in the source
    cycle: bool = False


class EnumType(_Part):
    name: str
    labels: list[str]


class Domain(_Part):
    name: str
    base_type: str
    not_null: bool = False
    default: str | None = None
    checks: list[str] = Field(default_factory=list)  # `CHECK (…)` as pg_get_constraintdef gives them


class Routine(_Part):
    """A PG → PG function, procedure, aggregate or trigger: DDL as the source prints it."""

    name: str
    kind: Literal["function", "trigger", "extension"]
    ddl: str
    table: str = ""  # a trigger's table
    signature: str = ""  # a function's `name(argument types)`, when its body relies on the caller's search_path


class NotCarried(_Part):
    what: str  # e.g. "index film.idx_title (FULLTEXT)"
    reason: str
    suggestion: str = ""  # a statement to run by hand, where there is one
    source_ddl: str = ""


class DatabaseSchema(_Part):
    dialect: str
    source_schema: str = ""  # PostgreSQL: the schema read; MySQL: the database
    tables: list[Table]
    views: list[View] = Field(default_factory=list)
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    sequences: list[Sequence] = Field(default_factory=list)
    enums: list[EnumType] = Field(default_factory=list)
    domains: list[Domain] = Field(default_factory=list)
    routines: list[Routine] = Field(default_factory=list)
    not_carried: list[NotCarried] = Field(default_factory=list)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @staticmethod
    def from_json(text: str) -> DatabaseSchema:
        return DatabaseSchema.model_validate_json(text)


# ------------------------------------------------------------------------------------------------ names

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def target_name(name: str, naming: Naming) -> str:
    """The target's name for a source name: as is, lower-cased, or snake_case (InvoiceLine -> invoice_line)."""
    if naming == "keep":
        return name
    if naming == "lower":
        return name.lower()
    snake = _CAMEL.sub("_", name.strip())
    return re.sub(r"[^0-9a-zA-Z_]+", "_", snake).strip("_").lower() or name.lower()


def matches(name: str, patterns: list[str]) -> bool:
    """Whether a table passes glob patterns: included by one without `!` and excluded by none with it."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    included = any(fnmatch.fnmatchcase(name, p) for p in includes) if includes else True
    return included and not any(fnmatch.fnmatchcase(name, p) for p in excludes)


def unmatched_patterns(names: list[str], patterns: list[str]) -> list[str]:
    """Patterns that match no table (an exclusion that excludes nothing counts too: likely a typo)."""
    return [p for p in patterns if not any(fnmatch.fnmatchcase(n, p.removeprefix("!")) for n in names)]
