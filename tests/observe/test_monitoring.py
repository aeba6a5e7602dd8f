"""Step 5: Prometheus metrics of a run — the textfile (parsed with prometheus_client's parser) and a push to
a Pushgateway (a small HTTP server here that records what it receives)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli
from tests.observe.helpers import make_orders, orders_job
from tests.observe.test_progress import SECRET, _with_password


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class _Gateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT = _record

    def log_message(self, *args: Any) -> None:
        pass


def test_metrics_file_and_pushgateway(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    job = orders_job(tmp_path, "prom1", _with_password(pg_source), _with_password(pg_db))
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.received = []
    metrics = tmp_path / "textfile" / "engine.prom"
    env = {"ENGINE_PUSHGATEWAY_URL": f"http://127.0.0.1:{server.server_port}"}
    try:
        result = run_cli("run", str(job), "--metrics-file", str(metrics), "--quiet", env=env)
        assert result.returncode == 0, result.stderr
        text = metrics.read_text()
        s = _samples(text)
        job_l = (("job", "prom1"),)
        table_l = (("job", "prom1"), ("table", '"public"."orders"'))
        assert s[("engine_rows_read", table_l)] == 4000 and s[("engine_rows_loaded", table_l)] == 3600
        assert s[("engine_rows_quarantined", table_l)] == 400
        assert s[("engine_last_run_success", job_l)] == 1
        last_success = s[("engine_last_success_timestamp_seconds", job_l)]
        assert last_success > 1.7e9 and s[("engine_run_duration_seconds", job_l)] > 0
        assert s[("engine_phase_duration_seconds", (("job", "prom1"), ("phase", "load")))] >= 0
        labels = {k for (_, ls) in s for k, _ in ls}
        assert labels <= {"job", "table", "phase"}  # no run ids in labels
        assert SECRET not in text

        [(method, path, body)] = _Gateway.received
        assert (method, path) == ("POST", "/metrics/job/prom1")  # push-add, grouped by job
        assert _samples(body)[("engine_rows_loaded", table_l)] == 3600 and SECRET not in body

        # A failed run (error budget): no new last success in the file or the push; the file keeps the old one.
        bad = orders_job(tmp_path, "prom1", _with_password(pg_source), _with_password(pg_db),
                         extra="").read_text().replace("max_error_rate = 0.5", "max_error_rate = 0")
        (tmp_path / "prom1.toml").write_text(bad)
        failed = run_cli("run", str(tmp_path / "prom1.toml"), "--fresh", "--metrics-file", str(metrics), "--quiet",
                         env=env)
        assert failed.returncode == 65, failed.stderr
        s = _samples(metrics.read_text())
        assert s[("engine_last_run_success", job_l)] == 0
        assert s[("engine_last_success_timestamp_seconds", job_l)] == last_success
        pushed = _samples(_Gateway.received[-1][2])
        assert ("engine_last_success_timestamp_seconds", job_l) not in pushed
        assert pushed[("engine_last_run_success", job_l)] == 0
    finally:
        server.shutdown()
