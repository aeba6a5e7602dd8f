"""What each declarative rule saw: rows checked, failures, the most frequent failing values, sample keys.

Partitions fill one `RuleStats` per rule (they travel in `PartitionResult`, so they pickle); the run merges
them for the budgets and the validation report. Depends on nothing of the engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

VALUE_SLOTS = 1_000  # distinct failing values remembered per rule (the top five are reported)
SAMPLE_KEYS = 5


@dataclass
class RuleStats:
    name: str
    kind: str
    severity: str
    checked: int = 0
    failures: int = 0
    values: Counter[str] = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)
    aggregate: Any = None  # reconcile: the partition's aggregate so far (count_distinct: its distinct values)
    detail: str = ""  # a job-level verdict (schema, completeness, reconcile), in words

    def add(self, checked: int, values: Counter[str] | None = None, failures: int = 0,
            keys: list[str] | None = None) -> None:
        self.checked += checked
        self.failures += failures
        if values:
            for value, n in values.items():
                if value in self.values or len(self.values) < VALUE_SLOTS:
                    self.values[value] += n
        if keys and len(self.keys) < SAMPLE_KEYS:
            self.keys += keys[:SAMPLE_KEYS - len(self.keys)]

    def merge(self, other: RuleStats) -> None:
        self.add(other.checked, other.values, other.failures, other.keys)
        if other.detail:
            self.detail = "; ".join(d for d in (self.detail, other.detail) if d)

    @property
    def share(self) -> float:
        return self.failures / self.checked if self.checked else 0.0

    def over_budget(self, max_errors: int | None, max_error_rate: float | None) -> str | None:
        if max_errors is not None and self.failures > max_errors:
            return f"{self.failures:,} failures > max_errors {max_errors:,}"
        if max_error_rate is not None and self.checked and self.share > max_error_rate:
            return f"{self.failures:,} of {self.checked:,} rows ({self.share:.2%}) > max_error_rate {max_error_rate:.2%}"
        return None


def merge_all(into: dict[str, RuleStats], new: dict[str, RuleStats]) -> None:
    for name, stats in new.items():
        if name in into:
            into[name].merge(stats)
        else:
            into[name] = RuleStats(stats.name, stats.kind, stats.severity)
            into[name].merge(stats)
