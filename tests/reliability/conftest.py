"""A private PostgreSQL server for tests that stop, start or fill it: theirs to break (the shared one is not)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from engine.localpg import PostgresServer, create_database, drop_database, start_private


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PostgresServer]:
    server = start_private()
    yield server
    server.stop()


def _database(server: PostgresServer, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create_database(server.url, name)
    yield server.database_url(name)
    drop_database(server.url, name)


@pytest.fixture
def private_source(private_pg: PostgresServer) -> Iterator[str]:
    """A fresh database on the private server (a source)."""
    yield from _database(private_pg, "heal_src")


@pytest.fixture
def private_target(private_pg: PostgresServer) -> Iterator[str]:
    """A fresh database on the private server (a target)."""
    yield from _database(private_pg, "heal_dst")
