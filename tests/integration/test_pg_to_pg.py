"""PostgreSQL -> PostgreSQL: round trips compared row by row, every load mode, resume, edge-shaped tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ErrorBudgetExceeded
from engine.pipeline import run_job
from tests.conftest import job_toml, pg_exec, pg_rows, run_cli, write_job

ORDERS_DDL = """CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id integer,
    status varchar(20),
    amount numeric(12,2), currency char(3), created_at timestamptz, note text, payload jsonb, ref uuid)"""
ORDERS_FILL = """INSERT INTO public.orders SELECT g, g % 1000, (ARRAY['new','paid','shipped'])[1 + g % 3],
    (g * 1.37)::numeric(12,2), 'EUR', timestamptz '2024-03-31 00:30:00+00' + g * interval '1 minute',
    CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g || ' ✓' END, jsonb_build_object('n', g, 'tags', ARRAY['a']),
    md5(g::text)::uuid FROM generate_series(1, {n}) g"""

COMPARE = ("SELECT id, customer_id, status, amount::text, currency, created_at, note, payload::text, ref::text "
           "FROM {t} ORDER BY id")


def make_orders(url: str, n: int = 5000) -> None:
    pg_exec(url, ORDERS_DDL, ORDERS_FILL.format(n=n))


def test_round_trip_is_row_for_row_identical(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source)
    job = write_job(tmp_path, job_toml("pg_round_trip", pg_source, "public.orders", pg_db, "public.orders",
                                       extra_source="partitions = 4"))
    report = run_job(load_config(job))
    assert report.status == "succeeded" and report.rows_loaded == 5000 and report.partitions_total == 4
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))
    types = dict(pg_rows(pg_db, """SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns
        JOIN pg_attribute ON attrelid = 'public.orders'::regclass AND attname = column_name
        WHERE table_name = 'orders' AND table_schema = 'public'"""))
    assert types["amount"] == "numeric(12,2)" and types["currency"] == "character(3)"
    assert types["payload"] == "jsonb" and types["ref"] == "uuid" and types["created_at"] == "timestamp with time zone"
    checkpoints = pg_rows(pg_db, "SELECT COUNT(*), SUM(rows_loaded) FROM engine.checkpoints")
    assert [(int(a), int(b)) for a, b in checkpoints] == [(4, 5000)]


def test_append_twice_appends_twice(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 300)
    pg_exec(pg_db, "CREATE TABLE public.copy (id bigint, customer_id integer, status text, amount numeric(12,2), "
                   "currency char(3), created_at timestamptz, note text, payload jsonb, ref uuid)")
    job = write_job(tmp_path, job_toml("append2", pg_source, "public.orders", pg_db, "public.copy"))
    run_job(load_config(job))
    run_job(load_config(job))
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM public.copy") == [(600, 300)]


def test_replace_swaps_in_the_new_table(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 400)
    pg_exec(pg_db, "CREATE TABLE public.orders (id bigint, old_column text)", "INSERT INTO public.orders VALUES (1, 'x')")
    job = write_job(tmp_path, job_toml("replace1", pg_source, "public.orders", pg_db, "public.orders", mode="replace",
                                       key=["id"], extra_source="partitions = 3"))
    run_job(load_config(job))
    pg_exec(pg_source, "DELETE FROM public.orders WHERE id > 350")
    report = run_job(load_config(job))
    assert report.rows_loaded == 350
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))
    assert pg_rows(pg_db, "SELECT to_regclass('public.orders__engine_new')") == [(None,)]
    # the new table's primary key keeps the table's own name through the swaps
    assert pg_rows(pg_db, "SELECT conname FROM pg_constraint WHERE conrelid = 'public.orders'::regclass") == [
        ("orders_pkey",)]


def test_upsert_updates_changed_rows_and_inserts_new(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 500)
    job = write_job(tmp_path, job_toml("upsert1", pg_source, "public.orders", pg_db, "public.orders", mode="upsert",
                                       key=["id"], extra_source="partitions = 2"))
    run_job(load_config(job))
    pg_exec(pg_source, "UPDATE public.orders SET status = 'changed', amount = 0.01 WHERE id % 50 = 0",
            ORDERS_FILL.format(n=520).replace("generate_series(1, 520)", "generate_series(501, 520)"))
    run_job(load_config(job))
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.orders WHERE status = 'changed'") == [(10,)]


def test_upsert_without_unique_key_in_existing_target_is_refused(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 10)
    pg_exec(pg_db, "CREATE TABLE public.orders (id bigint, customer_id integer, status text, amount numeric(12,2), "
                   "currency char(3), created_at timestamptz, note text, payload jsonb, ref uuid)")
    job = write_job(tmp_path, job_toml("upsert_nokey", pg_source, "public.orders", pg_db, "public.orders",
                                       mode="upsert", key=["id"]))
    result = run_cli("run", str(job))
    assert result.returncode == 2, result.stderr
    assert "no unique index or primary key on (id)" in result.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.orders") == [(0,)]


@pytest.mark.parametrize("mode", ["append", "replace", "upsert"])
def test_resume_after_a_crash_loses_and_duplicates_nothing(mode: str, pg_source: str, pg_db: str,
                                                            tmp_path: Path) -> None:
    make_orders(pg_source, 6000)
    job = write_job(tmp_path, job_toml(f"resume_{mode}", pg_source, "public.orders", pg_db, "public.orders",
                                       mode=mode, key=["id"] if mode == "upsert" else None,
                                       extra_source="partitions = 6", extra="workers = 1"))
    crashed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@4"})
    assert crashed.returncode == 137, crashed.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(3,)]
    resumed = run_cli("run", str(job))
    assert resumed.returncode == 0, resumed.stderr
    assert "3 already done" in resumed.stdout and "(resumed)" in resumed.stdout
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))
    assert pg_rows(pg_db, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM public.orders") == [(0,)]


def test_transient_failure_is_retried_within_the_run(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 1000)
    job = write_job(tmp_path, job_toml("retry1", pg_source, "public.orders", pg_db, "public.orders",
                                       extra_source="partitions = 2", extra="workers = 1"))
    result = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=raise@1"})
    assert result.returncode == 0, result.stderr
    assert "retry 1/3" in result.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM public.orders") == [(1000, 1000)]


def test_fresh_starts_over_and_a_finished_rerun_starts_a_new_run(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 100)
    job = write_job(tmp_path, job_toml("fresh1", pg_source, "public.orders", pg_db, "public.orders", mode="replace",
                                       extra_source="partitions = 2"))
    failed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "run.before_verify=fatal"})
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "failpoint run.before_verify (fatal)" in failed.stderr
    assert pg_rows(pg_db, "SELECT status FROM engine.runs") == [("failed",)]
    again = run_cli("run", str(job), "--fresh")
    assert again.returncode == 0, again.stderr
    assert "(resumed)" not in again.stdout and "2 run, 0 already done" in again.stdout
    statuses = sorted(r[0] for r in pg_rows(pg_db, "SELECT status FROM engine.runs"))
    assert statuses == ["abandoned", "succeeded"]

    # the run is finished: a rerun starts a new run, which converges on the changed source (replace)
    pg_exec(pg_source, "UPDATE public.orders SET status = 'changed' WHERE id <= 10",
            "DELETE FROM public.orders WHERE id > 90")
    finished = run_cli("run", str(job))
    assert finished.returncode == 0, finished.stderr
    assert "(resumed)" not in finished.stdout and "2 run, 0 already done" in finished.stdout
    runs = pg_rows(pg_db, "SELECT run_id, status FROM engine.runs ORDER BY started_at")
    assert [r[1] for r in runs] == ["abandoned", "succeeded", "succeeded"] and len({r[0] for r in runs}) == 3
    assert runs[-1][0] in finished.stdout
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))


def test_bad_rows_are_quarantined_with_reasons_and_budget_enforced(pg_source: str, pg_db: str,
                                                                   tmp_path: Path) -> None:
    pg_exec(pg_source, """CREATE TABLE public.orders AS SELECT g AS id, g % 100 + 1 AS customer_id,
        CASE WHEN g % 50 = 0 THEN 'lost' ELSE 'paid' END AS status,
        CASE WHEN g % 40 = 0 THEN -1.00 ELSE 10.50 END::numeric(12,2) AS amount, 'EUR'::char(3) AS currency,
        CASE WHEN g % 30 = 0 THEN 'nope' ELSE 'a' || g || '@example.com' END AS email, NULL::text AS note
        FROM generate_series(1, 1200) g""", "ALTER TABLE public.orders ADD PRIMARY KEY (id)")
    body = job_toml("quarantine1", pg_source, "public.orders", pg_db, "public.orders",
                    extra_source="partitions = 3") + '\n[validate]\nschema = "orders.schema:Orders"\nmax_error_rate = 0.2\n'
    report = run_job(load_config(write_job(tmp_path, body)))
    bad_ids = {i for i in range(1, 1201) if i % 50 == 0 or i % 40 == 0 or i % 30 == 0}
    assert report.rows_quarantined == len(bad_ids) and report.rows_loaded == 1200 - len(bad_ids)
    quarantined = pg_rows(pg_db, "SELECT source_key, checks, reason, row->>'id' FROM engine.quarantine")
    # each bad row exactly once (a list, not a set: a row quarantined twice must show)
    assert sorted(int(r[0]) for r in quarantined) == sorted(bad_ids) and all(r[0] == r[3] for r in quarantined)
    reasons = {int(r[0]): r[2] for r in quarantined}
    assert "status: isin" in reasons[50] and "amount: greater_than_or_equal_to(0)" in reasons[40]
    assert "email: str_matches" in reasons[30] and reasons[600].count(";") == 2  # 600 breaks three rules
    loaded = [r[0] for r in pg_rows(pg_db, "SELECT id FROM public.orders ORDER BY id")]
    assert loaded == sorted(set(range(1, 1201)) - bad_ids)

    strict = write_job(tmp_path, body.replace("quarantine1", "quarantine2").replace("0.2", "0.01")
                       .replace('"public.orders"\nmode', '"public.strict"\nmode'), "strict.toml")
    with pytest.raises(ErrorBudgetExceeded) as failure:
        run_job(load_config(strict))
    assert "max_error_rate" in str(failure.value)
    result = run_cli("run", str(strict))  # resuming does not launder the budget: it holds for the whole run
    assert result.returncode == 65 and "top failing checks" in result.stdout, result.stdout + result.stderr


def test_null_keys_empty_and_one_row_tables(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_source, "CREATE TABLE public.nk (k integer, v text)",
            "INSERT INTO public.nk SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE g END, 'v' || g FROM generate_series(1, 700) g",
            "CREATE TABLE public.empty (id integer PRIMARY KEY, v text)",
            "CREATE TABLE public.one (id integer PRIMARY KEY, v text)", "INSERT INTO public.one VALUES (42, 'only')")
    for table, extra in [("nk", 'partition_on = "k"\npartitions = 5'), ("empty", ""), ("one", "partitions = 4")]:
        job = write_job(tmp_path, job_toml(f"shape_{table}", pg_source, f"public.{table}", pg_db, f"public.{table}",
                                           extra_source=extra), f"{table}.toml")
        run_job(load_config(job))
        compare = f"SELECT * FROM public.{table} ORDER BY 1, 2"
        assert pg_rows(pg_db, compare) == pg_rows(pg_source, compare), table
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.nk WHERE k IS NULL") == [(100,)]


def test_content_verification_passes_on_an_exact_copy(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 3000)
    job = write_job(tmp_path, job_toml("content_ok", pg_source, "public.orders", pg_db, "public.orders", mode="replace",
                                       extra_source="partitions = 3", extra='verify = "content"'))
    report = run_job(load_config(job))
    assert "every row's content matched" in report.verification
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))


def test_content_verification_catches_a_row_changed_on_the_way_in(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 3000)
    pg_exec(pg_db, "CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id integer, status varchar(20), "
                   "amount numeric(12,2), currency char(3), created_at timestamptz, note text, payload jsonb, ref uuid)",
            """CREATE FUNCTION public.meddle() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.id = 1234 THEN NEW.amount := NEW.amount + 0.01; END IF; RETURN NEW; END $$""",
            "CREATE TRIGGER meddle BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.meddle()")
    job = write_job(tmp_path, job_toml("content_bad", pg_source, "public.orders", pg_db, "public.orders",
                                       extra_source="partitions = 3", extra='verify = "content"\nworkers = 1'))
    result = run_cli("run", str(job))
    assert result.returncode == 66, result.stderr
    assert "first differing keys: 1234" in result.stderr and "rolled back" in result.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.orders WHERE id BETWEEN 1001 AND 2000") == [(0,)]


def test_budget_holds_for_the_whole_run_even_when_every_partition_committed(pg_source: str, pg_db: str,
                                                                           tmp_path: Path) -> None:
    pg_exec(pg_source, """CREATE TABLE public.orders AS SELECT g AS id, 1 AS customer_id, 'paid' AS status,
        (CASE WHEN g % 5 = 0 THEN -1 ELSE 1 END)::numeric(12,2) AS amount, 'EUR' AS currency,
        'a@b.com' AS email, NULL::text AS note FROM generate_series(1, 500) g""")
    body = job_toml("budget_all", pg_source, "public.orders", pg_db, "public.orders")
    job = write_job(tmp_path, body + '\n[validate]\nschema = "orders.schema:Orders"\nmax_error_rate = 0.1\n')
    first = run_cli("run", str(job))
    assert first.returncode == 65 and "100 of 500 rows failed validation" in first.stderr
    again = run_cli("run", str(job))
    assert again.returncode == 65, again.stdout + again.stderr
    assert "amount" in again.stdout and "top failing checks" in again.stdout


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_rows_the_target_refuses_are_quarantined_with_the_database_reason(mode: str, pg_source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    """A target table with its own constraints: each refused row is quarantined once, with PostgreSQL's
    condition and message; every other row loads; a rerun into the full table stops at the error budget.
    Of two rows with the same email the one read second is refused: row 41, updated, comes after row 40 in
    the key's order and in the table's physical order alike, so the outcome does not depend on the plan."""
    pg_exec(pg_source, "CREATE TABLE public.t (id bigint PRIMARY KEY, code text, qty integer, parent integer, "
                       "note text, email text)",
            "INSERT INTO public.t SELECT g, 'c' || g % 100, g, g % 3 + 1, 'n', 'e' || g FROM generate_series(1, 2000) g",
            "UPDATE public.t SET qty = -5 WHERE id = 10", "UPDATE public.t SET code = 'toolongcode' WHERE id = 20",
            "UPDATE public.t SET note = NULL WHERE id = 30", "UPDATE public.t SET email = 'e40' WHERE id = 41",
            "UPDATE public.t SET parent = 99 WHERE id = 50")
    pg_exec(pg_db, "CREATE TABLE public.parents (id integer PRIMARY KEY)", "INSERT INTO public.parents VALUES (1), (2), (3)",
            "CREATE TABLE public.t (id bigint PRIMARY KEY, code varchar(5), qty integer CHECK (qty > 0), "
            "parent integer REFERENCES public.parents, note text NOT NULL, email text UNIQUE)")
    job = write_job(tmp_path, job_toml("refused", pg_source, "public.t", pg_db, "public.t", mode=mode,
                                       key=["id"] if mode == "upsert" else None, extra_source="partitions = 4",
                                       extra="batch_rows = 1000"))
    report = run_job(load_config(job))
    assert report.status == "succeeded", report.error
    assert (report.rows_loaded, report.rows_quarantined) == (1995, 5)
    quarantined = pg_rows(pg_db, "SELECT source_key, checks, columns, reason, row->>'code' FROM engine.quarantine "
                                 "ORDER BY source_key::int")
    # upsert goes through a temporary table and a cast, where the engine refuses what varchar(5) would truncate
    too_long = "target string_data_right_truncation" if mode == "append" else "target value_does_not_fit"
    assert [(q[0], q[1]) for q in quarantined] == [
        ("10", "target check_violation"), ("20", too_long), ("30", "target not_null_violation"),
        ("41", "target unique_violation"), ("50", "target foreign_key_violation")]
    assert "t_qty_check" in quarantined[0][3] and quarantined[1][4] == "toolongcode"
    assert quarantined[1][2] == "code" and "character varying(5)" in quarantined[1][3]
    assert quarantined[2][2] == "note" and "t_email_key" in quarantined[3][3]
    loaded = [r[0] for r in pg_rows(pg_db, "SELECT id FROM public.t ORDER BY id")]
    assert loaded == sorted(set(range(1, 2001)) - {10, 20, 30, 41, 50})

    if mode == "append":
        with pytest.raises(ErrorBudgetExceeded, match="max_error_rate"):  # every row is a duplicate now
            run_job(load_config(job), fresh=True)
    else:  # upserting again changes nothing and refuses the same rows
        assert run_job(load_config(job), fresh=True).rows_quarantined == 5
    assert pg_rows(pg_db, "SELECT count(*) FROM public.t") == [(1995,)]


def test_content_verification_counts_refused_rows_out(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_source, "CREATE TABLE public.c (id bigint PRIMARY KEY, qty integer)",
            "INSERT INTO public.c SELECT g, CASE WHEN g = 7 THEN -1 ELSE g END FROM generate_series(1, 300) g")
    pg_exec(pg_db, "CREATE TABLE public.c (id bigint PRIMARY KEY, qty integer CHECK (qty > 0))")
    job = write_job(tmp_path, job_toml("refused_content", pg_source, "public.c", pg_db, "public.c",
                                       extra='verify = "content"\nbatch_rows = 1000').replace(
        "[source]", "[validate]\nmax_error_rate = 0.1\n\n[source]"))
    report = run_job(load_config(job))
    assert (report.status, report.rows_loaded, report.rows_quarantined) == ("succeeded", 299, 1), report.error
    assert pg_rows(pg_db, "SELECT source_key FROM engine.quarantine") == [("7",)]


@pytest.mark.parametrize(("bad", "passes"), [(5, True), (6, False)])
def test_error_budget_holds_exactly_at_the_limit(bad: int, passes: bool, pg_source: str, pg_db: str,
                                                 tmp_path: Path) -> None:
    """max_error_rate = 0.05 over 100 rows: 5 bad rows pass, 6 fail the job (exit 65)."""
    pg_exec(pg_source, "CREATE TABLE public.b (id bigint PRIMARY KEY, qty integer)",
            f"INSERT INTO public.b SELECT g, CASE WHEN g <= {bad} THEN -g ELSE g END FROM generate_series(1, 100) g")
    pg_exec(pg_db, "CREATE TABLE public.b (id bigint PRIMARY KEY, qty integer CHECK (qty > 0))")
    job = write_job(tmp_path, job_toml("budget_edge", pg_source, "public.b", pg_db, "public.b").replace(
        "[source]", "[validate]\nmax_error_rate = 0.05\n\n[source]"))
    result = run_cli("run", str(job))
    assert result.returncode == (0 if passes else 65), result.stdout + result.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.quarantine") == [(bad,)]
