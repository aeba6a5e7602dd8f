"""The job file: TOML validated once into frozen, typed objects.

Every problem in a file is reported at once, each naming the key, what was found and what is allowed.
`${VAR}` anywhere in a string value is replaced from the environment (use it for passwords).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError
from engine.ruleconfig import KINDS, Rule, duplicate_names
from engine.sql import TableName, parse_table_name
from engine.urls import DatabaseUrl, parse_url

LoadMode = Literal["append", "replace", "upsert"]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """`"90s"`, `"5m"`, `"1h"`, `"250ms"` or a number of seconds, as seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration such as \"30s\", \"5m\" or \"1h\" (or a number of seconds)")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class JobSection(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,100}$", description="Job name: letters, digits, _ . -")
    description: str = ""
    rules_dir: str | None = Field(None, description="Folder of rule modules; default: the nearest `rules/`.")


class SourceSection(_Section):
    url: str = Field(description="postgresql://…, mysql://… (MariaDB too) or sqlite:///abs/path.db")
    table: str | None = Field(None, description="`schema.table` or `table`; parts are exact and quoted")
    query: str | None = Field(None, description="A SELECT to copy instead of a table")
    tables: list[str] | None = Field(
        None, description="A whole database: glob patterns over table (and view) names, `schema.table` for "
        "PostgreSQL; \"!pattern\" excludes. Instead of `table`/`query`")
    exclude_data: list[str] = Field(default_factory=list, description="Patterns of tables carried without rows")
    partition_on: str | None = Field(None, description="Integer column to split on; default: integer PK")
    partitions: int | None = Field(None, ge=1, le=100_000, description="Partition count (overrides rows_per_partition)")
    rows_per_partition: int = Field(50_000, ge=1, description="Target rows per partition (bounds memory)")
    bounds: tuple[int, int] | None = Field(None, description="Explicit [min, max] of partition_on")
    partition_by: Literal["auto", "key", "blocks"] = Field(
        "auto", description="key: ranges of an integer key; blocks: ranges of a PostgreSQL 14+ table's blocks "
        "(TID range scans); auto: the integer key, else blocks where they apply, else one partition")
    reader: Literal["connectorx", "adbc", "copy"] = Field(
        "connectorx", description="PostgreSQL sources: read with ConnectorX or with the ADBC driver's COPY-based "
        "reader (less client CPU per row), or copy: rows that need nothing on the way (no transform beyond "
        "renames, no rules) go server to server as COPY, never decoded; other sources: connectorx only")
    snapshot: Literal["retake", "strict"] = Field(
        "retake", description="PostgreSQL source, its snapshot lost mid-run (restart, killed session): retake: "
        "read the unfinished partitions as of a new one; strict: fail the run")

    @model_validator(mode="after")
    def _table_or_query(self) -> SourceSection:
        if sum(x is not None for x in (self.table, self.query, self.tables)) != 1:
            raise ValueError("set exactly one of `source.table`, `source.query` or `source.tables` (a whole database)")
        if self.tables is not None and not [p for p in self.tables if not p.startswith("!")]:
            raise ValueError('`source.tables` needs at least one pattern that includes tables, e.g. ["*"]')
        if self.exclude_data and self.tables is None:
            raise ValueError("`source.exclude_data` goes with `source.tables` (a whole database)")
        if self.bounds is not None and self.bounds[0] > self.bounds[1]:
            raise ValueError("`source.bounds` must be [min, max] with min <= max")
        if self.partition_by == "blocks" and _dialect(self.url) not in ("postgresql", None):
            raise ValueError(f'`source.partition_by = "blocks"` splits PostgreSQL tables only; this source is '
                             f'{_dialect(self.url)}: use "key" or "auto"')
        if self.reader != "connectorx" and _dialect(self.url) not in ("postgresql", None):
            raise ValueError(f'`source.reader = "{self.reader}"` reads PostgreSQL sources only; this source is '
                             f'{_dialect(self.url)}: remove the key (or set reader = "connectorx")')
        return self


def _dialect(url: str) -> str | None:
    try:
        return parse_url(url).dialect
    except ValueError:  # reported on its own
        return None


class TransformSection(_Section):
    function: str | None = Field(None, description="`module:function` in rules/, LazyFrame -> LazyFrame")
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    cast: dict[str, str] = Field(default_factory=dict, description="column -> Polars type, e.g. Int64, Decimal(12,2)")
    add: dict[str, str] = Field(default_factory=dict, description="column -> SQL expression (adds or replaces)")
    drop: list[str] = Field(default_factory=list, description="columns to drop")


class ValidateSection(_Section):
    schema_ref: str | None = Field(None, alias="schema", description="`module:SchemaName` in rules/")
    max_error_rate: float = Field(0.01, ge=0.0, le=1.0, description="Fail the job above this share of bad rows")
    max_errors: int | None = Field(None, ge=0, description="Fail the job above this many bad rows")
    rules: list[Rule] = Field(default_factory=list, description="[[validate.rules]]: declarative rules (README)")

    @model_validator(mode="after")
    def _unique_rule_names(self) -> ValidateSection:
        twice = duplicate_names(self.rules)
        if twice:
            raise ValueError(f"rule names must be unique in the job; repeated: {', '.join(sorted(set(twice)))}")
        return self


class TargetSection(_Section):
    url: str
    table: str | None = Field(None, description="`schema.table`; required unless `source.tables` is set")
    mode: LoadMode = "append"
    key: list[str] = Field(default_factory=list, description="Key columns; required for upsert")
    create: bool = Field(True, description="Create the table when missing")
    types: dict[str, str] = Field(default_factory=dict, description="column -> PostgreSQL type override")
    schema_: str | None = Field(None, alias="schema", description="A whole database: the schema every table "
                                "lands in (created when missing)")
    naming: Literal["keep", "lower", "snake"] = Field(
        "keep", description="A whole database: keep names, lower-case them, or snake_case (InvoiceLine -> "
        "invoice_line)")
    orphans: Literal["fail", "quarantine", "not_valid"] = Field(
        "fail", description="A whole database, rows whose foreign key has no parent: fail before loading, "
        "quarantine them, or load them and leave the key NOT VALID")

    @model_validator(mode="after")
    def _upsert_needs_key(self) -> TargetSection:
        if self.mode == "upsert" and not self.key and self.schema_ is None:
            raise ValueError('`target.key` is required when mode = "upsert", e.g. key = ["id"]')
        return self


class PipelineSection(_Section):
    workers: int = Field(2, ge=1, le=64, description="Partitions in flight at once")
    batch_rows: int = Field(8_192, ge=1_000, le=10_000_000,
                            description="Rows per Arrow batch (several per partition, so its stages overlap)")
    queue_depth: int = Field(4, ge=1, le=64, description="Batches buffered between stages per partition")
    staging_dir: str = Field(".engine/staging", description="Where rejected (and staged) batches go")
    stage_batches: bool = Field(False, description="Also write every loaded batch as Parquet")
    checkpoints: bool = Field(True, description="Record a checkpoint per partition (resume needs it). false: a "
                              "failed run is not resumed but redone, so an append rerun appends again the rows "
                              "the failed run had committed")
    verify: Literal["count", "content", "none"] = Field(
        "count", description="count: per-partition counts; content: also compare every row before commit")
    retries: int = Field(3, ge=0, le=20, description="Attempts after the first on transient errors")
    reconnect_for: Seconds = Field(
        "5m", ge=0, validate_default=True,
        description="How long to wait for a server that is down (backoff with jitter), e.g. 90s, 5m, 1h")
    executor: Literal["threads", "dask"] = Field(
        "threads", description="threads: partitions run in this process; dask: as tasks on a Dask cluster")
    dask_scheduler: str = Field(
        "", description="Dask scheduler address (tcp://host:8786); empty: a local cluster of `workers` processes")

    @model_validator(mode="after")
    def _dask_needs_checkpoints(self) -> PipelineSection:
        if self.executor == "dask" and not self.checkpoints:
            raise ValueError('`pipeline.checkpoints` must stay true with executor = "dask": Dask reruns the task of '
                             "a worker that died, and only the partition's checkpoint tells that it was loaded")
        return self


class TableSection(_Section):
    """`[tables."Name"]`: one table of a whole-database job, set apart from the defaults."""

    partition_on: str | None = Field(None, description="Integer column to split on (source name)")
    partitions: int | None = Field(None, ge=1, le=100_000, description="Partition count")
    rows_per_partition: int | None = Field(None, ge=1, description="Target rows per partition")
    types: dict[str, str] = Field(default_factory=dict, description="column -> PostgreSQL type override")
    key: list[str] = Field(default_factory=list, description="Key columns for upsert (default: the primary key)")
    mode: LoadMode | None = Field(None, description="append | upsert for this table (target.mode otherwise)")
    transform: TransformSection = Field(TransformSection(), description="[tables.Name.transform], as [transform]")
    validate_: ValidateSection = Field(ValidateSection(), alias="validate",
                                       description="[tables.Name.validate], as [validate] (rules use target names)")


class JobConfig(_Section):
    job: JobSection
    source: SourceSection
    target: TargetSection
    transform: TransformSection = TransformSection()
    validate_: ValidateSection = Field(ValidateSection(), alias="validate")
    pipeline: PipelineSection = PipelineSection()
    tables: dict[str, TableSection] = Field(default_factory=dict, description="[tables.Name]: per-table settings")
    path: Path = Field(Path("job.toml"), exclude=True)

    @model_validator(mode="after")
    def _one_table_or_a_database(self) -> JobConfig:
        if self.source.tables is None:
            if self.target.table is None:
                raise ValueError("`target.table` is required (or copy a whole database with `source.tables`)")
            if self.tables:
                raise ValueError("[tables.…] sections go with `source.tables` (a whole database)")
            if self.target.schema_ is not None:
                raise ValueError("`target.schema` goes with `source.tables`; a single table names its schema in "
                                 "`target.table`")
            return self
        if self.target.table is not None:
            raise ValueError("`target.table` does not go with `source.tables`: set `target.schema`, where every "
                             "table lands")
        if not self.target.schema_:
            raise ValueError('`target.schema` is required with `source.tables`, e.g. schema = "app"')
        if self.transform != TransformSection() or self.validate_.rules or self.validate_.schema_ref:
            raise ValueError("a whole-database job sets [transform] and [validate] rules per table, in "
                             "[tables.Name.transform] and [tables.Name.validate]")
        return self

    @property
    def is_database(self) -> bool:
        return self.source.tables is not None

    @field_validator("path", mode="before")
    @classmethod
    def _as_path(cls, value: Any) -> Path:
        return Path(value)

    @model_validator(mode="after")
    def _uniqueness_in_one_process(self) -> JobConfig:
        if self.pipeline.executor == "dask":
            wide = [r.name for r in self.validate_.rules if getattr(r, "scope", "batch") != "batch"]
            if wide:
                raise ValueError(f"unique rule(s) {', '.join(wide)}: scope \"job\" and \"target\" keep their keys in "
                                 'this process; use executor = "threads" or scope = "batch"')
        return self

    @property
    def source_url(self) -> DatabaseUrl:
        return parse_url(self.source.url, self.path.parent)

    @property
    def target_url(self) -> DatabaseUrl:
        return parse_url(self.target.url, self.path.parent)

    @property
    def source_table(self) -> TableName | None:
        return parse_table_name(self.source.table) if self.source.table else None

    @property
    def target_table(self) -> TableName:
        if self.target.table is None:  # a whole database: its tables have sub-jobs of their own
            return TableName(self.target.schema_, "*")
        table = parse_table_name(self.target.table)
        return table if table.schema else TableName("public", table.name)

    @property
    def rules_dir(self) -> Path:
        if self.job.rules_dir:
            return (self.path.parent / self.job.rules_dir).resolve()
        for folder in [self.path.parent.resolve(), *self.path.parent.resolve().parents]:
            if (folder / "rules").is_dir():
                return folder / "rules"
        return Path.cwd() / "rules"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value: Any, key: str, problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}" if key else k, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.append(f"`{key}`: environment variable {name} is not set (referenced as ${{{name}}})")
                return ""
            return os.environ[name]

        return _VAR.sub(substitute, value)
    return value


def _model_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = JobConfig
    for part in loc:
        if model is None:
            return None
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items() if n != "path"]


def _rule_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """validate.rules.2.range.min -> validate.rules[2].min: the kind pydantic puts in the path is not a key."""
    if loc[:2] == ("validate", "rules") and len(loc) > 3 and isinstance(loc[2], int):
        return (*loc[:3], *loc[4:])
    return loc


def _key(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Any) -> str:
    loc = _rule_loc(tuple(error["loc"]))
    key = _key(loc) or "(top level)"
    kind, found = error["type"], error.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        what = f"unknown kind {found.get('kind')!r}" if isinstance(found, dict) and "kind" in found else "missing"
        return f"`{key}.kind`: {what}; one of: {', '.join(KINDS)}"
    if kind == "extra_forbidden" and loc[:2] == ("validate", "rules"):
        return f"`{key}`: unknown key for this kind of rule"
    if kind == "extra_forbidden":
        parent = _model_for(loc[:-1])
        allowed = _allowed_keys(parent) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f" Did you mean `{hint[0]}`?" if hint else ""
        return f"`{key}`: unknown key.{suggestion} Allowed here: {', '.join(allowed)}"
    if kind == "missing":
        model = _model_for(loc)
        if model is not None:
            return f"`{key}`: missing section [{key}]; it needs keys: {', '.join(_allowed_keys(model))}"
        return f"`{key}`: missing required value"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"`{key}`: {message} (found {found!r})"
    if loc:
        return f"`{key}`: {message} (found {found!r})"
    return message


def _schema_problems(data: dict[str, Any]) -> list[str]:
    """Problems pydantic cannot see: URLs and table names that do not parse."""
    problems = []
    for section, key in [("source", "url"), ("target", "url")]:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str):
            try:
                url = parse_url(value)
                if section == "target" and url.dialect != "postgresql":
                    problems.append(f"`target.url`: the target must be PostgreSQL (postgresql://…), got {url}")
            except ValueError as exc:
                problems.append(f"`{section}.{key}`: {exc}")
    for section in ("source", "target"):
        value = data.get(section, {}).get("table") if isinstance(data.get(section), dict) else None
        if isinstance(value, str):
            try:
                parse_table_name(value)
            except ValueError as exc:
                problems.append(f"`{section}.table`: {exc}")
    return problems


def parse_config(data: dict[str, Any], path: Path) -> JobConfig:
    """Validate an already-parsed job document; raise ConfigError listing every problem."""
    problems: list[str] = []
    data = _interpolate(data, "", problems)
    problems += _schema_problems(data)
    try:
        config = JobConfig.model_validate({**data, "path": path})
    except ValidationError as exc:
        problems += [_describe(e) for e in exc.errors()]
        raise ConfigError(str(path), problems) from None
    if problems:
        raise ConfigError(str(path), problems)
    return config


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a job file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the job file: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_config(data, path)


def describe_keys() -> str:
    """A reference of every section and key, built from the models (shown by `engine run --help`)."""
    lines = []
    for name, field in JobConfig.model_fields.items():
        model = field.annotation
        if name == "path" or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        lines.append(f"[{field.alias or name}]")
        for key, sub in model.model_fields.items():
            hint = typing.get_args(sub.annotation) if sub.annotation else ()
            kind = " | ".join(repr(h) for h in hint) if hint and all(isinstance(h, str) for h in hint) else ""
            default = "required" if sub.is_required() else f"default {sub.get_default(call_default_factory=True)!r}"
            desc = sub.description or kind
            lines.append(f"  {sub.alias or key:<20} {default:<28} {desc}")
    lines.append("[tables.Name]  (a whole database: one table's settings)")
    lines += [f"  {f.alias or k:<20} {'':<28} {f.description or ''}" for k, f in TableSection.model_fields.items()]
    return "\n".join(lines)
