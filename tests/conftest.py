"""Shared fixtures: real PostgreSQL (local service, DATABASE_URL, or a private server) and MariaDB.

Every test gets uniquely named databases that are dropped afterwards. MariaDB tests skip with a reason
where no server is reachable, except under CI=true, where a skipped database test is a failure.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import adbc_driver_postgresql.dbapi as pgdbapi
import pytest

from engine.localpg import PostgresServer, create_database, drop_database, ensure_postgres

ROOT = Path(__file__).resolve().parent.parent
MARIADB_URL = os.environ.get("ENGINE_TEST_MARIADB", "mysql://root@127.0.0.1:3306")  # the server tests use
_MARIADB = urlsplit(MARIADB_URL)
MARIADB_SERVER = f"{_MARIADB.scheme}://{_MARIADB.netloc}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = ensure_postgres(say=lambda m: print(m, file=sys.stderr))
    yield server
    if server.private:
        server.stop()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def fresh_database(server: PostgresServer, prefix: str) -> Iterator[str]:
    """A uniquely named database on `server`, dropped after the test; yields its URL."""
    name = _unique(prefix)
    create_database(server.url, name)
    yield server.database_url(name)
    drop_database(server.url, name)


@pytest.fixture
def pg_db(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database (the usual target); yields its URL."""
    yield from fresh_database(pg_server, "engine_t")


@pytest.fixture
def pg_source(pg_server: PostgresServer) -> Iterator[str]:
    """Another fresh PostgreSQL database (the usual source)."""
    yield from fresh_database(pg_server, "engine_src")


def pg_exec(url: str, *statements: str, params: Any = None) -> None:
    conn = pgdbapi.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s, params)
    finally:
        conn.close()


def pg_rows(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = pgdbapi.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def mariadb_connect(database: str | None = None):  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(host=_MARIADB.hostname or "127.0.0.1", port=_MARIADB.port or 3306,
                           user=unquote(_MARIADB.username or "root"), password=unquote(_MARIADB.password or ""),
                           database=database, autocommit=True, charset="utf8mb4")


@pytest.fixture
def mariadb_db() -> Iterator[str]:
    """A fresh MariaDB database; yields its URL. Skips (fails under CI=true) when no server is reachable."""
    try:
        conn = mariadb_connect()
    except Exception as exc:
        message = f"MariaDB not reachable at {_MARIADB.hostname}:{_MARIADB.port or 3306} ({exc}; set ENGINE_TEST_MARIADB)"
        if IN_CI:
            pytest.fail(message + " — CI=true requires every database test to run")
        pytest.skip(message)
    name = _unique("engine_m")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield f"{MARIADB_SERVER}/{name}"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def mariadb_exec(url: str, *statements: str, many: tuple[str, list[tuple[Any, ...]]] | None = None) -> None:
    conn = mariadb_connect(url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            if many:
                cur.executemany(many[0], many[1])
    finally:
        conn.close()


def sqlite_exec(path: Path, *statements: str, many: tuple[str, list[tuple[Any, ...]]] | None = None) -> None:
    with sqlite3.connect(path) as conn:
        for s in statements:
            conn.execute(s)
        if many:
            conn.executemany(many[0], many[1])


MATRIX_NULL_ROW = 4  # in the type-matrix tests, the row that is NULL in every column


def matrix_value(values: list[Any], row: int) -> Any:
    """A type-matrix column's value in 1-based `row`: NULL past its list of edge values and in the NULL row."""
    return values[row - 1] if row - 1 < len(values) and row != MATRIX_NULL_ROW else None


def write_job(tmp_path: Path, body: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `engine` command in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def job_toml(name: str, source_url: str, source_table: str, target_url: str, target_table: str,
             mode: str = "append", extra_source: str = "", extra: str = "", key: list[str] | None = None) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    key_line = f"key = [{', '.join(q(k) for k in key)}]" if key else ""
    return f"""
[job]
name = {q(name)}
rules_dir = {q(str(ROOT / "rules"))}

[source]
url = {q(source_url)}
table = {q(source_table)}
{extra_source}

[target]
url = {q(target_url)}
table = {q(target_table)}
mode = {q(mode)}
{key_line}

[pipeline]
staging_dir = {q(str(ROOT / ".engine" / "test-staging"))}
{extra}
"""


def failpoint_reached(folder: Path, name: str, count: int = 1, timeout: float = 120,
                      alive: subprocess.Popen[str] | None = None) -> list[int]:
    """Wait until `count` processes stopped at the `wait` failpoint `name` (ENGINE_FAILPOINTS_DIR = `folder`);
    their pids. Fails at once if `alive` (the engine process) ends first."""
    deadline = time.monotonic() + timeout
    while True:
        pids = sorted(int(p.name.rsplit(".", 2)[-2]) for p in folder.glob(f"{name}.*.reached"))
        if len(pids) >= count:
            return pids
        if alive is not None and alive.poll() is not None:
            err = alive.communicate()[1] or ""
            raise AssertionError(f"the engine ended (exit {alive.returncode}) before reaching {name}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} process(es) did not reach failpoint {name} within {timeout} s: {pids}")
        time.sleep(0.02)


def release_failpoint(folder: Path, name: str) -> None:
    """Let every process waiting at the `wait` failpoint `name` go on (and any that reach it later)."""
    (folder / f"{name}.go").touch()
