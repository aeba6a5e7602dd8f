"""A PostgreSQL server for machines that have none: found on localhost, or started privately.

`ensure_postgres()` returns a server URL: `DATABASE_URL` if set and reachable, else the local service on
127.0.0.1:5432, else a private server started from local PostgreSQL binaries or the `pgserver` wheel's,
listening on a free 127.0.0.1 port in a temporary folder, stopped by `stop()`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import pg
from engine.sql import quote_ident
from engine.urls import parse_url, redact


@dataclass
class PostgresServer:
    url: str  # a server URL ending in a database name
    private: bool
    data_dir: Path | None = None
    bin_dir: Path | None = None
    run_as: str | None = None

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.private and self.data_dir and self.bin_dir:
            _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], self.run_as)
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        assert self.private and self.data_dir and self.bin_dir, "only a private server is stopped and started"
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], self.run_as)

    def halt(self) -> None:
        """Stop the private server, keeping its data (as a crash or a maintenance stop would; `-m fast`)."""
        self._ctl("-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted private server again, on the same port."""
        assert self.data_dir is not None
        self._ctl("-l", str(self.data_dir.parent / "server.log"), "-w", "-t", "60", "start")

    def restart(self) -> None:
        """Restart the private server: every session ends, as in `pg_ctlcluster … restart`."""
        assert self.data_dir is not None
        self._ctl("-l", str(self.data_dir.parent / "server.log"), "-m", "fast", "-w", "-t", "60", "restart")


def reachable(url: str, timeout: float = 3.0) -> bool:
    return pg.reachable(url, timeout)


def pgserver_binaries() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # the wheel carries a whole PostgreSQL build
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _binaries() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return pgserver_binaries()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], user: str | None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, user=user, timeout=120)


def _unprivileged_user() -> str | None:
    """initdb refuses to run as root: run the server as an ordinary user then."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


def start_private(bin_dir: Path | None = None) -> PostgresServer:
    bin_dir = bin_dir or _binaries()
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="engine-pg-"))
    data = root / "data"
    if user:
        os.chmod(root, 0o777)
        for parent in bin_dir.parents:  # the server user must reach its binaries
            if str(parent).startswith(("/root", str(Path.home()))):
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], user)
    port = _free_port()
    with open(data / "postgresql.auto.conf", "a") as conf:  # kept across stops and starts
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n")
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start"], user)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(50):
        if reachable(url):
            break
        time.sleep(0.1)
    return PostgresServer(url, True, data, bin_dir, user)


def ensure_postgres(say: Callable[[str], None] = print) -> PostgresServer:
    env = os.environ.get("DATABASE_URL")
    if env and reachable(env):
        say(f"using PostgreSQL at {redact(env)} (DATABASE_URL)")
        return PostgresServer(env, False)
    local = os.environ.get("ENGINE_LOCAL_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if reachable(local, timeout=2):
        say("using the local PostgreSQL service on 127.0.0.1:5432")
        return PostgresServer(local, False)
    say("no PostgreSQL reachable: starting a private server in a temporary folder…")
    server = start_private()
    say(f"private PostgreSQL running at {server.url}")
    return server


def create_database(server_url: str, name: str, drop_first: bool = False) -> None:
    with pg.connection(parse_url(server_url), autocommit=True) as conn:
        if drop_first:
            pg.execute(conn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        if not pg.fetch_all(conn, "SELECT 1 FROM pg_database WHERE datname = $1", (name,)):
            pg.execute(conn, f"CREATE DATABASE {quote_ident(name)}")


def drop_database(server_url: str, name: str) -> None:
    with pg.connection(parse_url(server_url), autocommit=True) as conn:
        pg.execute(conn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
