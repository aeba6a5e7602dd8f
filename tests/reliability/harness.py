"""What every fault test checks at the end, a TCP proxy that cuts connections mid-stream, and an `engine run`
that pauses at a failpoint while the test breaks something."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from tests.conftest import ROOT, job_toml, pg_exec, pg_rows, write_job

TABLE_DDL = """CREATE TABLE public.items (id bigint PRIMARY KEY, grp integer NOT NULL, label text,
    amount numeric(14,4), at timestamptz, doc jsonb)"""
TABLE_FILL = """INSERT INTO public.items SELECT g, g % 17, repeat('x', 50) || g || ' ✓', (g * 3.1415)::numeric(14,4),
    timestamptz '2024-10-27 00:00:00+00' + g * interval '37 seconds', jsonb_build_object('g', g)
    FROM generate_series({lo}, {hi}) g"""
CHECKSUM = "SELECT COUNT(*), COUNT(DISTINCT id), md5(COALESCE(string_agg(t::text, '|' ORDER BY id), '')) FROM {t} t"


def make_items(url: str, rows: int) -> None:
    pg_exec(url, TABLE_DDL, TABLE_FILL.format(lo=1, hi=rows))


def items_job(tmp_path: Path, name: str, source: str, target: str, mode: str = "append", partitions: int = 8,
              workers: int = 2, extra: str = "", reader: str = "connectorx") -> Path:
    return write_job(tmp_path, job_toml(name, source, "public.items", target, "public.items", mode=mode,
                                        key=["id"] if mode == "upsert" else None,
                                        extra_source=f"partitions = {partitions}\nreader = {reader!r}",
                                        extra=f"workers = {workers}\nbatch_rows = 1000\n{extra}"), f"{name}.toml")


def assert_exact_copy(source: str, target: str, table: str = "public.items") -> None:
    """lost = 0, duplicated = 0, unexpected = 0 and the content checksum equals the source's."""
    src = pg_rows(source, CHECKSUM.format(t=table))[0]
    dst = pg_rows(target, CHECKSUM.format(t=table))[0]
    assert dst[0] == dst[1], f"duplicated keys in the target: {dst[0] - dst[1]}"
    lost = pg_rows(target, f"SELECT COUNT(*) FROM {table}")[0][0]
    assert dst == src, f"target {dst} != source {src} (target rows: {lost})"


def upstream_address(url: str) -> tuple[str, int] | str:
    """Where a libpq URL connects: (host, port) over TCP, or the socket file of a Unix-socket host (no host
    in the URL, or a directory as `host`). The port defaults to 5432, as libpq's does."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    host = options.get("hostaddr") or options.get("host") or unquote(parts.hostname or "")
    port = int(options.get("port") or parts.port or 5432)
    if not host or host.startswith("/"):
        return f"{host or '/var/run/postgresql'}/.s.PGSQL.{port}"
    return host, port


def drop_advisory_locks(url: str) -> int:
    """End the sessions holding advisory locks in this database, as a server restart would; how many."""
    ended = pg_rows(url, """SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
                            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""")
    return sum(1 for (ok,) in ended if ok)


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the server of `upstream_url` (its host and port, TCP or a Unix socket, as the
    suite's PostgreSQL fixture gives them); cuts the first `cuts` connections after `after_bytes` bytes."""

    def __init__(self, upstream_url: str, after_bytes: int, cuts: int = 1, seed: int = 0) -> None:
        self.upstream = upstream_address(upstream_url)
        self.after_bytes, self.cuts_left = after_bytes, cuts
        self.cut_count = 0
        self.rng = random.Random(seed)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):  # a Unix-domain socket file
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream)
            return sock
        return socket.create_connection(self.upstream)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self.lock:
                cut_this = self.cuts_left > 0
            budget = [self.after_bytes if cut_this else -1]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, client, upstream, budget), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket, upstream: socket.socket,
              budget: list[int]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                with self.lock:
                    if budget[0] >= 0:
                        budget[0] -= len(data)
                        if budget[0] < 0 and self.cuts_left > 0:
                            self.cuts_left -= 1
                            self.cut_count += 1
                            raise ConnectionAbortedError("cut")
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def url(self, database_url: str) -> str:
        """`database_url` with its server replaced by this proxy (user, password, database and options kept)."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith(("host=", "hostaddr=", "port=")))
        return urlunsplit((parts.scheme, f"{user + '@' if user else ''}127.0.0.1:{self.port}", parts.path, query,
                           parts.fragment))

    def close(self) -> None:
        self.listener.close()


class Paused:
    """An `engine run` child process that pauses at failpoints (`name=pause@n`, see engine.failpoints) until the
    test has done its damage; each process gets its own folder of pause files."""

    def __init__(self, job: Path, points: str, folder: Path, *args: str, wait: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.dir, self.json = folder, folder / "report.json"
        self.first = points.split(",")[0].partition("=")[0]
        env = {**os.environ, "ENGINE_FAILPOINTS": points, "ENGINE_FAILPOINTS_DIR": str(folder)}
        self.child = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job), "--json", str(self.json),
                                       *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        if wait:
            self.wait(self.first)

    def wait(self, point: str, timeout: float = 120) -> None:
        """Until the run is paused at `point`."""
        marker = self.dir / f"{point}.paused"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if self.child.poll() is not None or time.monotonic() > deadline:
                self.child.kill()
                _, err = self.child.communicate(timeout=30)
                raise AssertionError(f"never paused at {point}: {err[-3000:]}")
            time.sleep(0.02)

    def release(self, point: str | None = None) -> None:
        (self.dir / f"{point or self.first}.paused").unlink(missing_ok=True)

    def finish(self) -> tuple[int, str, str, dict[str, Any]]:
        out, err = self.child.communicate(timeout=300)
        report = json.loads(self.json.read_text()) if self.json.exists() else {}
        return self.child.returncode, out, err, report


def wait_until(url: str, sql: str, expected: Any, timeout: float = 60) -> None:
    """Poll `sql` on `url` until its first value equals `expected`."""
    deadline = time.monotonic() + timeout
    while (pg_rows(url, sql) or [(None,)])[0][0] != expected:
        assert time.monotonic() < deadline, f"{sql} never gave {expected!r}"
        time.sleep(0.05)
