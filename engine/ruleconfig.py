"""`[[validate.rules]]`: the declarative rules of a job file, as frozen pydantic models (one per kind).

Only the shape lives here (keys, types, defaults, what may be combined); `engine.rulesets` compiles them to
Polars expressions and `engine.explain` checks them against the source and target (`engine check`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["reject", "warn", "fail"]
KINDS = ("schema", "dtype", "not_null", "range", "allowed", "length", "references", "expression", "completeness",
         "reconcile", "unique", "format")


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,100}$", description="Unique in the job; the quarantine's check")
    severity: Severity = "reject"
    max_errors: int | None = Field(None, ge=0, description="Budget: the job fails above this many failing rows")
    max_error_rate: float | None = Field(None, ge=0.0, le=1.0, description="Budget: share of rows checked")
    description: str = ""

    @property
    def columns_used(self) -> tuple[str, ...]:
        return ()

    @property
    def row_level(self) -> bool:
        """Judged row by row (a failing row is quarantined, counted or stops the job)."""
        return True


class _OneColumn(_Rule):
    column: str

    @property
    def columns_used(self) -> tuple[str, ...]:
        return (self.column,)


class SchemaRule(_Rule):
    kind: Literal["schema"]
    columns: list[str] = Field(min_length=1)
    extra: Literal["allow", "forbid"] = "allow"

    @property
    def row_level(self) -> bool:
        return False


class DtypeRule(_OneColumn):
    kind: Literal["dtype"]
    type: str = Field(description="A PostgreSQL type the value must convert to without loss")


class NotNullRule(_OneColumn):
    kind: Literal["not_null"]


class RangeRule(_OneColumn):
    kind: Literal["range"]
    min: float | int | str | None = None
    max: float | int | str | None = None
    inclusive: bool = True

    @model_validator(mode="after")
    def _a_bound(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("a range rule needs `min`, `max` or both")
        if isinstance(self.min, (int, float)) and isinstance(self.max, (int, float)) and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is above `max` ({self.max})")
        return self


class AllowedRule(_OneColumn):
    kind: Literal["allowed"]
    values: list[str | int | float | bool] = Field(min_length=1)


class LengthRule(_OneColumn):
    kind: Literal["length"]
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _a_bound(self) -> LengthRule:
        if self.min is None and self.max is None:
            raise ValueError("a length rule needs `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is above `max` ({self.max})")
        return self


class ReferencesRule(_Rule):
    kind: Literal["references"]
    column: str | None = None
    columns: list[str] | None = None
    table: str
    key: str | None = None
    keys: list[str] | None = None
    in_: Literal["source", "target"] = Field("source", alias="in")

    @model_validator(mode="after")
    def _key_shape(self) -> ReferencesRule:
        if (self.column is None) == (self.columns is None):
            raise ValueError("set exactly one of `column` or `columns`")
        if (self.key is None) == (self.keys is None):
            raise ValueError("set exactly one of `key` or `keys`")
        if len(self.columns_used) != len(self.ref_keys):
            raise ValueError(f"{len(self.columns_used)} column(s) but {len(self.ref_keys)} key(s)")
        return self

    @property
    def columns_used(self) -> tuple[str, ...]:
        return tuple(self.columns) if self.columns is not None else (self.column or "",)

    @property
    def ref_keys(self) -> tuple[str, ...]:
        return tuple(self.keys) if self.keys is not None else (self.key or "",)


class ExpressionRule(_Rule):
    kind: Literal["expression"]
    expr: str = Field(min_length=1, description="SQL boolean over the row; true (or NULL) passes")

    @field_validator("expr")
    @classmethod
    def _parses(cls, expr: str) -> str:
        try:
            pl.sql_expr(expr)
        except Exception as exc:
            raise ValueError(f"not a SQL expression Polars can run: {str(exc).splitlines()[0]}") from None
        return expr


class CompletenessRule(_OneColumn):
    kind: Literal["completeness"]
    max_null_ratio: float = Field(0.0, ge=0.0, le=1.0)

    @property
    def row_level(self) -> bool:
        return False


class ReconcileRule(_OneColumn):
    kind: Literal["reconcile"]
    agg: Literal["sum", "count_distinct", "min", "max"] = "sum"

    @property
    def row_level(self) -> bool:
        return False


class UniqueRule(_Rule):
    kind: Literal["unique"]
    columns: list[str] = Field(min_length=1)
    scope: Literal["batch", "job", "target"] = "job"

    @property
    def columns_used(self) -> tuple[str, ...]:
        return tuple(self.columns)


class FormatRule(_OneColumn):
    kind: Literal["format"]
    format: Literal["email", "uuid", "iso_date", "iso_datetime", "currency", "url", "ipv4", "e164_phone"] | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FormatRule:
        if (self.format is None) == (self.regex is None):
            raise ValueError("set exactly one of `format` or `regex`")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:  # Polars' (Rust) regex syntax: no look-around, no backreferences
            try:
                pl.select(pl.lit("").str.contains(regex))
            except Exception as exc:
                detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip().startswith("error:"))
                raise ValueError(f"not a valid regular expression ({detail or exc})") from None
        return regex


Rule = Annotated[SchemaRule | DtypeRule | NotNullRule | RangeRule | AllowedRule | LengthRule | ReferencesRule
                 | ExpressionRule | CompletenessRule | ReconcileRule | UniqueRule | FormatRule,
                 Field(discriminator="kind")]


def duplicate_names(rules: list[Rule]) -> list[str]:
    seen: set[str] = set()
    return [r.name for r in rules if r.name in seen or seen.add(r.name)]  # type: ignore[func-returns-value]
