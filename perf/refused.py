"""How long a partition takes when the target refuses some of its rows (`make perf-refused`).

50,000 rows into a table whose CHECK refuses every `--every`-th row: the partition's first COPY fails, and the
rows are isolated under savepoints (engine/refused.py). Prints the time of a clean load of the same rows, the
time with refused rows, and whether the partition's transaction overflowed PostgreSQL's subtransaction cache.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from engine import pg, refused
from engine.localpg import create_database, drop_database, ensure_postgres
from engine.quarantine import RejectedRow
from engine.urls import parse_url
from tests.conftest import pg_exec
from tests.integration.test_refused_rows import TARGET, _batches, _suboverflowed


def _once(url: str, rows: int, every: int, check: bool) -> tuple[float, int, bool]:
    pg_exec(url, "DROP TABLE IF EXISTS public.t",
            "CREATE TABLE public.t (id bigint PRIMARY KEY, v integer" + (" CHECK (v >= 0))" if check else ")"))
    conn = pg.savepoint_connection(parse_url(url))
    try:
        found: list[RejectedRow] = []
        start = time.perf_counter()
        refused.write_isolating(conn, TARGET, _batches(rows, every), found)
        seconds = time.perf_counter() - start
        overflowed = _suboverflowed(url)
        pg.execute(conn, "COMMIT")
        return seconds, len(found), overflowed
    finally:
        pg.drop_connection(conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=50, help="refuse every N-th row (50: 1,000 of 50,000)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = ensure_postgres(print)
    name = f"engine_perf_refused_{uuid.uuid4().hex[:8]}"
    create_database(server.url, name)
    url = server.database_url(name)
    try:
        clean = [_once(url, args.rows, args.every, check=False)[0] for _ in range(args.runs)]
        results = [_once(url, args.rows, args.every, check=True) for _ in range(args.runs)]
        print(f"{args.rows:,} rows, {results[0][1]:,} refused, median of {args.runs}: "
              f"clean {statistics.median(clean):.2f} s, with refused rows "
              f"{statistics.median(r[0] for r in results):.2f} s; subtransaction cache overflowed: "
              f"{any(r[2] for r in results)}")
    finally:
        drop_database(server.url, name)
        if server.private:
            server.stop()


if __name__ == "__main__":
    main()
