"""Headless Chromium (Debian's `chromium`) for report tests: render a file from disk, offline, and list every
request the page made, from Chromium's own net-log."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run does)"
        if IN_CI:
            pytest.fail(message + " — CI=true requires the browser test to run")
        pytest.skip(message)
    return path


def _run(page: Path, workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    netlog = workdir / f"netlog-{len(list(workdir.glob('netlog-*')))}.json"
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={workdir / 'profile'}", "--disable-background-networking", "--disable-component-update",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}", "--virtual-time-budget=15000",
         *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    return result, requested_urls(netlog)


def requested_urls(netlog: Path) -> list[str]:
    """Every URL the page asked for, according to Chromium's net-log: URL_REQUEST_START_JOB events whose
    initiator is the page (Chromium's own background requests have "not an origin"; none can resolve here)."""
    text = netlog.read_text(encoding="utf-8", errors="replace")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log Chromium did not get to close
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") == start_job and "url" in params and params.get("initiator") != "not an origin":
            urls.append(str(params.get("url")))
    return urls


def dump_dom(page: Path, workdir: Path) -> tuple[str, list[str]]:
    result, urls = _run(page, workdir, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, urls


def screenshot(page: Path, workdir: Path, size: str = "1280,2400") -> tuple[Path, list[str]]:
    shot = workdir / "shot.png"
    result, urls = _run(page, workdir, f"--screenshot={shot}", f"--window-size={size}", "--hide-scrollbars")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    return shot, urls


def remote(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(LOCAL_SCHEMES)]
