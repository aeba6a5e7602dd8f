"""Time to resume after a kill at 90% of a job: only partitions in flight may be redone.

    .venv/bin/python -m perf.resume --rows 1000000

Kills the engine (os._exit, like kill -9) right after the commit of 90% of its partitions, reruns it, and
reports how many partitions the rerun redid and its wall time against a full run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pgdbapi

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _sql(url: str, *statements: str) -> list[tuple[Any, ...]]:
    conn = pgdbapi.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            rows: list[tuple[object, ...]] = []
            for s in statements:
                cur.execute(s)
                rows = list(cur.fetchall()) if cur.description else []
            return rows
    finally:
        conn.close()


def _db(name: str) -> str:
    return SERVER.rsplit("/", 1)[0] + "/" + name


def prepare(rows: int) -> tuple[str, str]:
    for name in ("engine_resume_src", "engine_resume_dst"):
        _sql(SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    src = _db("engine_resume_src")
    _sql(src, """CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, status text, amount numeric(12,2),
                 currency char(3), created_at timestamptz, note text, payload jsonb)""",
         f"""INSERT INTO orders SELECT g, g % 50000, 'paid', (g % 100000) / 100.0, 'EUR', now() - g * interval '1 s',
             repeat('lorem ipsum ', 29), jsonb_build_object('k', g) FROM generate_series(1, {rows}) g""")
    return src, _db("engine_resume_dst")


def run(job: Path, failpoints: str | None = None) -> tuple[int, float]:
    env = {**os.environ, **({"ENGINE_FAILPOINTS": failpoints} if failpoints else {})}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(job), "--quiet"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    return done.returncode, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=20)
    args = parser.parse_args()
    src, dst = prepare(args.rows)
    job = Path(tempfile.mkdtemp()) / "resume.toml"
    job.write_text(f"""[job]\nname = "resume_bench"\n[source]\nurl = "{src}"\ntable = "public.orders"
partitions = {args.partitions}\n[target]\nurl = "{dst}"\ntable = "public.orders"\nmode = "replace"\n""")
    code, full = run(job)
    assert code == 0, "the full run failed"
    kill_at = int(args.partitions * 0.9)
    code, _ = run(job, f"load.after_commit=exit@{kill_at}")
    assert code == 137, f"the engine was not killed (exit {code})"
    committed = int(_sql(dst, "SELECT COUNT(*) FROM engine.checkpoints c JOIN engine.runs r USING (run_id) "
                              "WHERE r.status = 'running'")[0][0])
    code, resume = run(job)
    assert code == 0, "the resumed run failed"
    result = {"rows": args.rows, "partitions": args.partitions, "killed_after_commits": kill_at,
              "checkpointed_before_kill": committed, "redone_partitions": args.partitions - committed,
              "full_run_s": round(full, 2), "resume_s": round(resume, 2), "resume_to_full": round(resume / full, 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
