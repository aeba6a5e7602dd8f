"""Run one command as a child process and measure it: wall time, CPU time and the peak RSS of its process tree.

Every case, the engine and every peer alike, runs as its own process, so start-up and imports are paid
the same way and memory is that process tree's own (database server processes are not counted).
A sampler thread sums the RSS of the child and all its descendants every `interval` seconds; the main
thread only waits, so the wall time is not skewed by sampling. CPU time (user + system) is the kernel's
account of the child and the descendants it waited for; on a machine of few cores, every CPU-second a tool
spends is taken from the database servers.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

TAIL_CHARS = 2000


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    cpu_s: float
    stdout: str  # the last TAIL_CHARS characters
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """A one-paragraph reason for a failed run: the exit code and the end of stderr (or stdout)."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = " | ".join(line.strip() for line in text[-4:] if line.strip())
        return f"exit code {self.returncode}" + (f": {tail}" if tail else "")


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and all its descendants (processes that vanish mid-walk are skipped)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, 0, threading.Event()
        try:
            self.process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.process = None

    def run(self) -> None:
        while self.process is not None and not self._done.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def wait_for_quiet(max_wait_s: float = 60.0, busy_pct: float = 25.0) -> float:
    """Wait until the machine's CPUs are nearly idle (or `max_wait_s` passed); return the last busy % seen.

    Other work on the machine (a test suite, autovacuum, a checkpoint) would be timed as ours; waiting for a
    quiet second before each run, and recording what was seen, keeps that visible instead of hidden.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = psutil.cpu_percent(interval=1.0 if max_wait_s > 0 else 0.2)
        if busy < busy_pct or time.monotonic() >= deadline:
            return float(busy)


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_CHARS))
        return handle.read().decode("utf-8", errors="replace")


def run_measured(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout_s: float = 3600.0, interval_s: float = 0.05) -> Measurement:
    """Run `argv` to completion (killing its whole process group past `timeout_s`) and measure it."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="perf-run-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            cpu_before = _children_cpu_s()
            started = time.perf_counter()
            # Output goes to files, not pipes: a chatty child can never block on a full pipe buffer.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env,
                                    cwd=cwd, start_new_session=True)
            sampler = _Sampler(proc.pid, interval_s)
            sampler.start()
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = -9
                err.write(f"\nkilled after the {timeout_s:.0f} s timeout".encode())
            wall = time.perf_counter() - started
            peak = sampler.stop()
            cpu = _children_cpu_s() - cpu_before
        return Measurement(round(wall, 3), round(peak / 2**20, 1), code, round(cpu, 2), _tail(out_path),
                           _tail(err_path))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
