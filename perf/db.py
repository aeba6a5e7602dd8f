"""Small database helpers for the perf suite: admin statements on PostgreSQL (ADBC) and MariaDB (PyMySQL).

The suite only needs autocommit one-liners (create databases, truncate targets, count rows), so these
open a connection per call: simple, and never left holding a lock between timed runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import adbc_driver_postgresql.dbapi as pgdbapi


@dataclass(frozen=True)
class Server:
    """A server URL without a database; `url(db)` names one."""

    base: str  # e.g. postgresql://postgres@127.0.0.1:5432 or mysql://root@127.0.0.1:3306

    def url(self, database: str, query: str = "") -> str:
        parts = urlsplit(self.base)
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, query, ""))

    @property
    def host(self) -> str:
        return urlsplit(self.base).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.base)
        return parts.port or (3306 if parts.scheme.startswith("mysql") else 5432)

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.base).username or "")

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.base).password or "")


def pg_exec(url: str, *statements: str) -> None:
    conn = pgdbapi.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def pg_rows(url: str, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    conn = pgdbapi.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def pg_scalar(url: str, sql: str, params: tuple[Any, ...] | None = None) -> Any:
    return pg_rows(url, sql, params)[0][0]


def pg_create_database(server: Server, name: str) -> None:
    if not pg_scalar(server.url("postgres"), "SELECT count(*) FROM pg_database WHERE datname = $1", (name,)):
        pg_exec(server.url("postgres"), f'CREATE DATABASE "{name}"')


def pg_count(url: str, table: str) -> int | None:
    """Rows in `table` (schema-qualified, already quoted), or None when it does not exist."""
    if pg_scalar(url, "SELECT to_regclass($1) IS NOT NULL", (table,)):
        return int(pg_scalar(url, f"SELECT count(*) FROM {table}"))
    return None


def mariadb_dump(server: Server, database: str, query: str, *options: str) -> list[str]:
    """The `mariadb` client printing `query`'s rows raw, tab-separated, as it streams them: MariaDB's own
    fastest way out (the password, if any, goes in MYSQL_PWD, not here)."""
    return ["mariadb", "--quick", "--batch", "--raw", "--skip-column-names", f"--host={server.host}",
            f"--port={server.port}", f"--user={server.user}", *options, f"--database={database}", "-e", query]


def mysql_connect(server: Server, database: str | None = None) -> Any:
    import pymysql  # only the MariaDB cases need it

    return pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                           database=database, autocommit=True, local_infile=False, charset="utf8mb4")


def mysql_exec(server: Server, database: str | None, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements in order; returns the last one's rows."""
    conn = mysql_connect(server, database)
    try:
        rows: list[tuple[Any, ...]] = []
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows
    finally:
        conn.close()
