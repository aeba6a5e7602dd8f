"""A private PostgreSQL server for tests that stop, start or fill it: theirs to break (the shared one is not)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.localpg import PostgresServer, start_private
from tests.conftest import fresh_database


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PostgresServer]:
    server = start_private()
    yield server
    server.stop()


@pytest.fixture
def private_source(private_pg: PostgresServer) -> Iterator[str]:
    """A fresh database on the private server (a source)."""
    yield from fresh_database(private_pg, "heal_src")


@pytest.fixture
def private_target(private_pg: PostgresServer) -> Iterator[str]:
    """A fresh database on the private server (a target)."""
    yield from fresh_database(private_pg, "heal_dst")
