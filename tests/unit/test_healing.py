"""Waiting out outages (engine.healing) without servers: which failures cost an attempt, what is said."""

from __future__ import annotations

import pytest

from engine import healing
from engine.config import PipelineSection
from engine.errors import SnapshotLost, SourceError, TargetError, TransientError, with_advice
from engine.urls import parse_url

TARGET = parse_url("postgresql://u@db.example:5432/dst")


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(healing.time, "sleep", slept.append)
    return slept


def test_an_outage_is_waited_for_with_growing_pauses_and_costs_no_attempt(monkeypatch: pytest.MonkeyPatch,
                                                                          no_sleep: list[float]) -> None:
    looks = iter(["connection refused"] * 4 + [None] * 10)
    monkeypatch.setattr(healing, "unreachable", lambda url: next(looks))
    calls = [0]

    def action() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise TransientError("server closed the connection")
        return "done"

    said: list[str] = []
    patience = healing.Patience(retries=0, reconnect_for=300, servers=(TARGET,))
    assert healing.with_retries(action, "partition 3", patience, said.append) == "done"
    waits = [s for s in said if "is unreachable (connection refused); waiting" in s]
    assert len(waits) == 4 and all("of pipeline.reconnect_for = 300s" in w for w in waits)
    assert no_sleep[3] > no_sleep[0]  # exponential backoff (with jitter: 4x apart at worst 1.5 vs 6)
    assert any("answering again" in s for s in said)


def test_a_server_down_longer_than_reconnect_for_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(healing, "unreachable", lambda url: "connection refused")
    clock = iter(float(t) for t in range(0, 1000, 7))
    monkeypatch.setattr(healing.time, "monotonic", lambda: next(clock))
    patience = healing.Patience(retries=5, reconnect_for=20, servers=(TARGET,))
    with pytest.raises(TransientError, match=r"stayed unreachable for \d+s \(pipeline.reconnect_for = 20s\)"):
        healing.with_retries(lambda: (_ for _ in ()).throw(TransientError("refused")), "partition 1", patience)


def test_failures_against_a_server_that_answers_are_retried_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(healing, "unreachable", lambda url: None)
    calls = [0]

    def action() -> None:
        calls[0] += 1
        raise TransientError("deadlock detected")

    with pytest.raises(TransientError, match=r"deadlock detected \(gave up after 3 attempts\)"):
        healing.with_retries(action, "partition 1", healing.Patience(retries=2, servers=(TARGET,)))
    assert calls[0] == 3


def test_an_error_that_ends_a_run_says_rerun_to_resume() -> None:
    for kind in (SourceError, TargetError, TransientError, SnapshotLost):
        advised = with_advice(kind("partition 8 [7001, 8000]: ERROR: invalid snapshot identifier"))
        assert type(advised) is kind and str(advised).endswith("committed partitions are kept: rerun to resume")
    already = TargetError("… then rerun to resume")
    assert with_advice(already) is already


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("250ms", 0.25), (12, 12)])
def test_reconnect_for_takes_a_duration(text: str | int, seconds: float) -> None:
    assert PipelineSection(reconnect_for=text).reconnect_for == seconds  # type: ignore[arg-type]
    assert PipelineSection().reconnect_for == 300


def test_a_duration_that_does_not_parse_is_refused() -> None:
    with pytest.raises(ValueError, match="a duration such as"):
        PipelineSection(reconnect_for="soon")  # type: ignore[arg-type]
