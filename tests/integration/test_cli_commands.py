"""plan (dry run), check (every problem at once), status (partitions done) and inspect (DuckDB)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import job_toml, pg_exec, pg_rows, run_cli, write_job
from tests.reliability.harness import items_job, make_items


def test_plan_shows_partitions_mapping_and_ddl_and_writes_nothing(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 1000)
    job = items_job(tmp_path, "plan1", pg_source, pg_db, partitions=4)
    result = run_cli("plan", str(job))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[1, 250]" in out and "[751, 1000]" in out
    assert "numeric(14,4)" in out and "decimal128(14,4)" in out and "jsonb" in out
    assert 'CREATE TABLE "public"."items"' in out and "nothing was written" in out
    assert pg_rows(pg_db, "SELECT to_regclass('public.items'), to_regclass('engine.runs')") == [(None, None)]


def test_check_reports_every_problem(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 10)
    pg_exec(pg_db, "CREATE TABLE public.items (id bigint)")
    body = job_toml("check1", pg_source, "public.items", pg_db, "public.items", mode="upsert", key=["id"],
                    extra_source='partition_on = "label"')
    body += '\n[validate]\nschema = "orders.schema:Nope"\n[transform]\ncast = { grp = "Int99" }\n'
    result = run_cli("check", str(write_job(tmp_path, body)))
    assert result.returncode == 2
    out = result.stdout
    assert "`transform.cast.grp`: unknown type 'Int99'" in out
    assert "has no 'Nope'" in out
    assert "`source.partition_on`: column 'label' is text, not an integer" in out
    assert out.count("problem(s)") == 1 and out.count("\n  - ") == int(out.split(" problem(s)")[0].split()[-1])


def test_check_passes_a_good_job(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 10)
    result = run_cli("check", str(items_job(tmp_path, "check2", pg_source, pg_db)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_status_shows_done_and_pending_partitions(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "status1", pg_source, pg_db, partitions=4, workers=1)
    assert run_cli("status", str(job)).stdout.strip().endswith("no runs yet")
    run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@3"})
    out = run_cli("status", str(job)).stdout
    assert "2/4 done" in out and "running" in out and out.count("in flight or failed") == 2
    run_cli("run", str(job))
    assert "4/4 done" in run_cli("status", str(job)).stdout


def test_inspect_queries_rejected_rows_with_duckdb(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_source, """CREATE TABLE public.orders AS SELECT g AS id, 1 AS customer_id, 'paid' AS status,
        (CASE WHEN g % 10 = 0 THEN -1 ELSE 1 END)::numeric(12,2) AS amount, 'EUR' AS currency,
        'a@b.com' AS email, NULL::text AS note FROM generate_series(1, 100) g""")
    body = job_toml("inspect1", pg_source, "public.orders", pg_db, "public.orders")
    body += '\n[validate]\nschema = "orders.schema:Orders"\nmax_error_rate = 0.5\n'
    job = write_job(tmp_path, body)
    assert run_cli("run", str(job)).returncode == 0
    ids = "regexp_extract(row, '\"id\":(\\d+)', 1)::int"  # each rejected row keeps its source row as JSON
    sql = f"SELECT 'n=' || COUNT(*) || ' distinct=' || COUNT(DISTINCT {ids}) || ' sum=' || SUM({ids}) AS a FROM rejected"
    out = run_cli("inspect", str(job), sql).stdout
    assert "n=10 distinct=10 sum=550 " in out, out  # ids 10, 20, …, 100
    summary = run_cli("inspect", str(job)).stdout
    assert "rejected: 10 rows\n" in summary and "greater_than_or_equal_to(0)" in summary, summary
