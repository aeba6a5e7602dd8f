"""PostgreSQL → PostgreSQL, a whole database: everything carried, compared value by value and object by object;
orphans under each policy; naming; patterns; a kill at each kind of step, then a rerun."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import engine
from engine.config import load_config
from engine.errors import OrphanRows
from tests.conftest import ROOT, pg_exec, pg_rows, run_cli, write_job
from tests.database.compare import assert_same_catalog, assert_same_rows, next_values
from tests.database.schemas import PG_SCHEMA

DATA_TABLES = ["Order Lines", "audit_log", "countries", "customers", "employees", "empty_things",
               "measurements_2025", "measurements_2026", "members", "orders", "teams", "vehicles", "cars", 'we"ird',
               "countdown"]


@pytest.fixture
def source(pg_source: str) -> str:
    pg_exec(pg_source, *PG_SCHEMA)
    return pg_source


def job(tmp_path: Path, source: str, target: str, name: str = "db", tables: str = '["*", "!scratch"]',
        extra_target: str = "", extra: str = "") -> Path:
    return write_job(tmp_path, f"""
[job]
name = "{name}"

[source]
url = "{source}"
tables = {tables}

[target]
url = "{target}"
schema = "app"
mode = "replace"
{extra_target}

[pipeline]
staging_dir = "{ROOT / '.engine' / 'test-staging'}"
{extra}
""")


def test_a_whole_database_arrives_with_every_object_and_value(tmp_path: Path, source: str, pg_db: str) -> None:
    report = engine.run_job(load_config(job(tmp_path, source, pg_db)))
    assert report.status == "succeeded"
    assert_same_rows(source, pg_db, "app", DATA_TABLES)
    assert_same_catalog(source, pg_db, "app", skip_tables={"scratch"})
    assert pg_rows(pg_db, "SELECT to_regclass('app.scratch')") == [(None,)]  # "!scratch" left it out
    # identities and sequences continue from the source's own state, gaps and an empty table included
    src, dst = next_values(source, "public"), next_values(pg_db, "app")
    assert dst == src and dst["customers_id_seq"] == 351 and dst["empty_things_id_seq"] == 1
    assert pg_rows(pg_db, "INSERT INTO app.customers (email, name) VALUES ('n@x', 'n') RETURNING id") == [(351,)]
    assert pg_rows(pg_db, "INSERT INTO app.countdown (label) VALUES ('d') RETURNING id") == [(-7,)]  # descending
    # GENERATED ALWAYS stays so; an enum, a domain and a stored generated column work as in the source
    assert pg_rows(pg_db, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'app.orders'::regclass "
                          "AND attname = 'id'") == [("a",)]
    assert pg_rows(pg_db, "SELECT enum_range(NULL::app.mood)::text") == [("{sad,ok,happy}",)]
    with pytest.raises(Exception, match="posint_check"):
        pg_exec(pg_db, "INSERT INTO app.orders (customer_id, amount, qty) VALUES (1, 1, 0)")
    # the trigger was created after the rows: the load did not fire it, a new row does
    assert pg_rows(pg_db, "SELECT count(*) FROM app.audit_log") == pg_rows(source, "SELECT count(*) FROM audit_log")
    new_id = pg_rows(pg_db, "INSERT INTO app.orders (customer_id, amount, qty) VALUES (1, 1, 1) RETURNING id")[0][0]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.audit_log WHERE what = $1", (f"order {new_id}",)) == [(1,)]
    # the materialized view has its rows; the view on a view reads the new tables
    assert pg_rows(pg_db, "SELECT * FROM app.spend_by_country ORDER BY 1") == \
        pg_rows(source, "SELECT * FROM spend_by_country ORDER BY 1")
    assert pg_rows(pg_db, "SELECT count(*) FROM app.big_spenders") == pg_rows(source, "SELECT count(*) FROM big_spenders")
    steps = dict(pg_rows(pg_db, "SELECT step, outcome FROM engine.steps WHERE run_id = $1", (report.run_id,)))
    assert set(steps.values()) == {"done"} and "validate teams.teams_lead_fk" in steps
    # an inheritance parent was read with ONLY: its children's rows are not copied twice
    assert pg_rows(pg_db, "SELECT count(*) FROM app.vehicles") == [(4,)]
    assert pg_rows(pg_db, "SELECT count(*) FROM ONLY app.vehicles") == [(2,)]


COPIED = '["*", "!scratch"]\nreader = "copy"'  # rows server to server (engine.passthrough)


def test_a_whole_database_copied_server_to_server_arrives_the_same(tmp_path: Path, source: str, pg_db: str) -> None:
    """`reader = "copy"`: enums, domains, arrays, generated columns, partitions and inheritance (ONLY) as COPY."""
    report = engine.run_job(load_config(job(tmp_path, source, pg_db, tables=COPIED)))
    assert report.status == "succeeded", report.error
    assert_same_rows(source, pg_db, "app", DATA_TABLES)
    assert_same_catalog(source, pg_db, "app", skip_tables={"scratch"})
    assert next_values(pg_db, "app") == next_values(source, "public")
    assert pg_rows(pg_db, "SELECT count(*) FROM ONLY app.vehicles") == [(2,)]
    routes = {r for (r,) in pg_rows(pg_db, "SELECT metrics->>'route' FROM engine.checkpoints")}
    assert routes == {"copy binary", "copy text"}, routes  # text where a user type is in the row


@pytest.mark.parametrize("point", ["extract.batch@2", "load.before_commit@3", "load.after_commit@2"])
def test_a_database_copied_server_to_server_killed_mid_table_resumes_exactly(
        tmp_path: Path, source: str, pg_db: str, point: str) -> None:
    name, _, nth = point.partition("@")
    path = job(tmp_path, source, pg_db, tables=COPIED, extra="workers = 1")
    killed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": f"{name}=exit@{nth}"})
    assert killed.returncode == 137, killed.stderr + killed.stdout
    again = run_cli("run", str(path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming run" in again.stderr
    assert_same_rows(source, pg_db, "app", DATA_TABLES)
    assert next_values(pg_db, "app") == next_values(source, "public")


@pytest.mark.parametrize("point", ["run.after_commit", "run.after_finish"])
def test_a_table_whose_run_succeeded_unheard_is_not_copied_again(tmp_path: Path, source: str, pg_db: str,
                                                                 point: str) -> None:
    """A table's run whose success committed but whose answer was lost, or that failed after it, is retried as
    succeeded: run again, it would append its rows a second time."""
    path = job(tmp_path, source, pg_db, extra="workers = 1")
    result = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": f"{point}=raise@3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"failpoint {point}[^\n]*retry 1/", result.stderr), result.stderr[-3000:]
    assert_same_rows(source, pg_db, "app", DATA_TABLES)


def test_plan_lists_tables_views_sequences_and_check_names_a_pattern_that_matches_nothing(
        tmp_path: Path, source: str, pg_db: str) -> None:
    path = job(tmp_path, source, pg_db, tables='["*", "!scratch", "invoices*"]')
    result = run_cli("plan", str(path))
    assert result.returncode == 0, result.stderr
    for expected in ("customers -> customers", "[id continues at 351]", "views (4): big_spenders, customer_orders",
                     "ticket_no at", "enum mood", "orphan rows: none", "rows via its partitions"):
        assert expected in result.stdout
    assert "scratch" not in result.stdout
    checked = run_cli("check", str(path))
    assert checked.returncode == 2
    assert "pattern 'invoices*' matches no table or view in the source" in checked.stdout
    assert "server to server" not in result.stdout


def test_plan_says_which_tables_go_server_to_server(tmp_path: Path, source: str, pg_db: str) -> None:
    """Under `reader = "copy"`, each table's line says how its rows go, and why not where a table needs them."""
    path = job(tmp_path, source, pg_db, tables=COPIED)
    path.write_text(path.read_text() + '\n[tables.teams.transform]\nadd = { label = "id + 1" }\n')
    result = run_cli("plan", str(path))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if " -> " in line and "~" in line}
    assert "rows server to server" in lines["customers"], lines["customers"]
    assert "rows through batches: it has a transform" in lines["teams"], lines["teams"]


def _orphans(source: str) -> None:
    pg_exec(source, "SET session_replication_role = replica",  # the source's keys are not checked: orphans
            "INSERT INTO orders (customer_id, amount, qty) VALUES (9001, 5, 1), (9002, 6, 1)",
            "INSERT INTO employees VALUES (50, 'Imp', 777)")


def test_orphans_fail_before_anything_is_loaded(tmp_path: Path, source: str, pg_db: str) -> None:
    _orphans(source)
    with pytest.raises(OrphanRows) as failed:
        engine.run_job(load_config(job(tmp_path, source, pg_db)))
    message = str(failed.value)
    assert "orders_customer_id_fkey: 2 row(s) of orders" in message and "[9001]" in message
    assert "employees_manager_id_fkey: 1 row(s)" in message and 'orphans = "quarantine"' in message
    assert pg_rows(pg_db, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'app%'") == []


def test_orphans_quarantined_with_the_keys_name(tmp_path: Path, source: str, pg_db: str) -> None:
    _orphans(source)
    report = engine.run_job(load_config(job(tmp_path, source, pg_db, extra_target='orphans = "quarantine"')))
    assert report.status == "succeeded" and report.rows_quarantined == 3
    checks = pg_rows(pg_db, "SELECT q.checks::text FROM engine.quarantine q ORDER BY 1")
    assert [c[0] for c in checks] == ["employees_manager_id_fkey", "orders_customer_id_fkey",
                                      "orders_customer_id_fkey"]
    assert pg_rows(pg_db, "SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f' "
                          "AND connamespace = 'app'::regnamespace") == [(True,)]


def test_orphans_loaded_and_the_key_left_not_valid(tmp_path: Path, source: str, pg_db: str) -> None:
    _orphans(source)
    report = engine.run_job(load_config(job(tmp_path, source, pg_db, extra_target='orphans = "not_valid"')))
    assert report.database["not_valid"] == ["employees.employees_manager_id_fkey", "orders.orders_customer_id_fkey"]
    assert "NOT VALID" in report.render()
    assert pg_rows(pg_db, "SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated "
                          "AND connamespace = 'app'::regnamespace ORDER BY 1") == \
        [("employees_manager_id_fkey",), ("orders_customer_id_fkey",)]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.orders WHERE customer_id > 9000") == [(2,)]


def test_snake_naming_renames_tables_columns_and_what_reads_them(tmp_path: Path, source: str, pg_db: str) -> None:
    pg_exec(source, 'CREATE TABLE "InvoiceLine" ("InvoiceLineId" int PRIMARY KEY, "UnitPrice" numeric(10,2) '
            'CHECK ("UnitPrice" >= 0), "CustomerId" int REFERENCES customers (id))',
            'CREATE INDEX "IFK_InvoiceLineCustomer" ON "InvoiceLine" ("CustomerId")',
            'CREATE INDEX "IX_PricyFirst" ON "InvoiceLine" ("UnitPrice" DESC NULLS LAST) INCLUDE ("CustomerId") '
            'WHERE "UnitPrice" > 1',
            'CREATE VIEW "PricyLines" AS SELECT "InvoiceLineId", "UnitPrice" FROM "InvoiceLine" WHERE "UnitPrice" > 1',
            'INSERT INTO "InvoiceLine" VALUES (1, 0.99, 1), (2, 1.99, 2), (3, 5, NULL)',
            'CREATE FUNCTION line_total(p_id int) RETURNS numeric LANGUAGE sql STABLE AS '
            '$$ SELECT "UnitPrice" * 2 FROM "InvoiceLine" WHERE "InvoiceLineId" = p_id $$',
            'CREATE FUNCTION check_price() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN '
            'IF NEW."UnitPrice" > 100 THEN RAISE EXCEPTION \'too pricy: %\', NEW."UnitPrice"; END IF; RETURN NEW; '
            'END $body$',
            'CREATE TRIGGER "PriceGuard" BEFORE INSERT OR UPDATE OF "UnitPrice" ON "InvoiceLine" FOR EACH ROW '
            'EXECUTE FUNCTION check_price()')
    report = engine.run_job(load_config(job(tmp_path, source, pg_db, tables='["InvoiceLine", "PricyLines", '
                                            '"customers"]', extra_target='naming = "snake"')))
    assert report.status == "succeeded"
    assert pg_rows(pg_db, "SELECT invoice_line_id, unit_price, customer_id FROM app.invoice_line ORDER BY 1")[2] == \
        (3, pg_rows(source, 'SELECT "UnitPrice" FROM "InvoiceLine" WHERE "InvoiceLineId" = 3')[0][0], None)
    assert pg_rows(pg_db, "SELECT * FROM app.pricy_lines ORDER BY 1") == \
        pg_rows(source, 'SELECT * FROM "PricyLines" ORDER BY 1')
    assert pg_rows(pg_db, "SELECT attname FROM pg_attribute WHERE attrelid = 'app.pricy_lines'::regclass "
                          "AND attnum > 0 ORDER BY attnum") == [("invoice_line_id",), ("unit_price",)]
    assert pg_rows(pg_db, "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'app.invoice_line'"
                          "::regclass ORDER BY 1") == [("app.ifk_invoice_line_customer",), ("app.invoice_line_pkey",),
                                                       ("app.ix_pricy_first",)]
    assert pg_rows(pg_db, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_pricy_first'")[0][0].endswith(
        "(unit_price DESC NULLS LAST) INCLUDE (customer_id) WHERE (unit_price > (1)::numeric)")
    with pytest.raises(Exception, match="check"):
        pg_exec(pg_db, "INSERT INTO app.invoice_line VALUES (9, -1, NULL)")
    # function bodies and triggers name the renamed tables and columns
    assert pg_rows(pg_db, "SELECT app.line_total(3)::int") == [(10,)]
    with pytest.raises(Exception, match="too pricy: 500"):
        pg_exec(pg_db, "INSERT INTO app.invoice_line VALUES (9, 500, NULL)")
    assert "UPDATE OF unit_price ON app.invoice_line" in pg_rows(
        pg_db, "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'PriceGuard'")[0][0]


def test_exclude_data_carries_the_table_without_rows(tmp_path: Path, source: str, pg_db: str) -> None:
    path = job(tmp_path, source, pg_db, tables='["audit_log", "countries"]')
    path.write_text(path.read_text().replace('tables = ["audit_log", "countries"]',
                                             'tables = ["audit_log", "countries"]\nexclude_data = ["audit*"]'))
    engine.run_job(load_config(path))
    assert pg_rows(pg_db, "SELECT count(*) FROM app.audit_log") == [(0,)]
    assert next_values(pg_db, "app")["audit_log_id_seq"] == next_values(source, "public")["audit_log_id_seq"]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.countries") == [(3,)]


def test_replace_swaps_the_new_schema_in_and_a_kill_before_the_swap_leaves_the_old(
        tmp_path: Path, source: str, pg_db: str) -> None:
    pg_exec(pg_db, "CREATE SCHEMA app", "CREATE TABLE app.old_table (x int)", "INSERT INTO app.old_table VALUES (1)")
    path = job(tmp_path, source, pg_db)
    killed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": "db.swap=exit"})
    assert killed.returncode == 137, killed.stderr
    assert pg_rows(pg_db, "SELECT count(*) FROM app.old_table") == [(1,)]  # readers still see the old database
    assert pg_rows(pg_db, "SELECT to_regclass('app.customers')") == [(None,)]
    again = run_cli("run", str(path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming run" in again.stderr
    assert pg_rows(pg_db, "SELECT to_regclass('app.old_table')") == [(None,)]
    assert_same_rows(source, pg_db, "app", DATA_TABLES)


@pytest.mark.parametrize("point", ["db.pre-data", "load.before_commit@3", "db.index@3", "db.indexes@2", "db.sequences",
                                   "db.fk", "db.validate@3", "db.view@2", "db.trigger"])
def test_a_kill_at_any_kind_of_step_resumes_without_replaying_or_skipping(
        tmp_path: Path, source: str, pg_db: str, point: str) -> None:
    name, _, nth = point.partition("@")
    # db.index: each index a step of its own, as for a large table; the resume, with the usual threshold, finishes
    # the way the killed run began (else it would build the indexes made already again)
    side_by_side = {"ENGINE_INDEXES_SIDE_BY_SIDE_FROM": "0"} if name == "db.index" else {}
    path = job(tmp_path, source, pg_db, extra="workers = 1")
    killed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": f"{name}=exit@{nth or 1}", **side_by_side})
    assert killed.returncode == 137, killed.stderr + killed.stdout
    again = run_cli("run", str(path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming run" in again.stderr and "already exists" not in again.stdout + again.stderr
    assert_same_rows(source, pg_db, "app", DATA_TABLES)
    assert_same_catalog(source, pg_db, "app", skip_tables={"scratch"})
    assert next_values(pg_db, "app") == next_values(source, "public")
    assert pg_rows(pg_db, "SELECT count(*) FROM engine.steps s JOIN engine.runs r USING (run_id) WHERE r.job = 'db' "
                          "AND s.outcome <> 'done'") == [(0,)]


def test_upsert_creates_what_is_missing_then_updates_rows_in_place(tmp_path: Path, source: str, pg_db: str) -> None:
    path = job(tmp_path, source, pg_db, tables='["customers", "countries"]')
    path.write_text(path.read_text().replace('mode = "replace"', 'mode = "upsert"'))
    first = engine.run_job(load_config(path))
    assert first.status == "succeeded"
    pg_exec(source, "UPDATE customers SET name = 'Renamed' WHERE id = 1",
            "INSERT INTO countries VALUES ('DE', 'Germany')")
    pg_exec(pg_db, "INSERT INTO app.countries VALUES ('JP', 'Japan')")  # a row only the target has stays
    second = engine.run_job(load_config(path))
    assert second.status == "succeeded"
    assert pg_rows(pg_db, "SELECT name FROM app.customers WHERE id = 1") == [("Renamed",)]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.customers") == pg_rows(source, "SELECT count(*) FROM customers")
    assert pg_rows(pg_db, "SELECT code FROM app.countries ORDER BY 1") == [("AU",), ("DE",), ("FR",), ("JP",), ("NZ",)]
    # the second run found the tables there and left their keys and indexes as they were
    assert pg_rows(pg_db, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app'") == [(4,)]
    steps = [s for (s,) in pg_rows(pg_db, "SELECT step FROM engine.steps WHERE run_id = $1", (second.run_id,))]
    assert not [s for s in steps if s.startswith("index")]


@pytest.mark.parametrize("tables", ['["*", "!scratch"]', COPIED], ids=["arrow", "copy"])
def test_every_table_is_read_as_of_one_snapshot(tmp_path: Path, source: str, pg_db: str, tables: str) -> None:
    from tests.reliability.harness import Paused

    before = pg_rows(source, "SELECT count(*) FROM customers")[0][0]
    run = Paused(job(tmp_path, source, pg_db, tables=tables, extra="workers = 1"), "load.after_commit=pause@1",
                 tmp_path / "points")
    # the largest table is in; a new customer and an order of theirs arrive in the source meanwhile
    pg_exec(source, "INSERT INTO customers (id, email, name) VALUES (5000, 'late@x', 'Late')",
            "INSERT INTO orders (customer_id, amount, qty) VALUES (5000, 1, 1)")
    run.release()
    code, _, err, _ = run.finish()
    assert code == 0, err[-3000:]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.customers") == [(before,)]
    assert pg_rows(pg_db, "SELECT count(*) FROM app.orders WHERE customer_id = 5000") == [(0,)]


def test_a_second_upsert_run_keeps_keys_and_identities_ahead_of_the_rows(tmp_path: Path, source: str,
                                                                          pg_db: str) -> None:
    path = job(tmp_path, source, pg_db, tables='["customers", "orders", "audit_log"]')
    path.write_text(path.read_text().replace('mode = "replace"', 'mode = "upsert"'))
    assert engine.run_job(load_config(path)).status == "succeeded"
    pg_exec(source, "INSERT INTO customers (email, name) VALUES ('c2@y', 'C2')",
            "UPDATE orders SET note = 'changed' WHERE id = 5")
    pg_exec(pg_db, "INSERT INTO app.customers (email, name) VALUES ('target-only@y', 'T')")  # takes id 351 there
    second = engine.run_job(load_config(path))  # keys there already: kept, not added again
    assert second.status == "succeeded" and second.rows_quarantined == 0
    assert pg_rows(pg_db, "SELECT note FROM app.orders WHERE id = 5") == [("changed",)]
    assert pg_rows(pg_db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = "
                          "'app'::regnamespace") == [(1,)]
    made = pg_rows(pg_db, "INSERT INTO app.customers (email, name) VALUES ('n@y', 'N') RETURNING id")[0][0]
    assert made > pg_rows(pg_db, "SELECT max(id) FROM app.customers WHERE email <> 'n@y'")[0][0]


def test_fresh_after_an_unfinished_append_run_is_refused_while_its_tables_stand(tmp_path: Path, source: str,
                                                                                pg_db: str) -> None:
    path = job(tmp_path, source, pg_db, tables='["countries", "customers"]')
    path.write_text(path.read_text().replace('mode = "replace"', 'mode = "append"'))
    killed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": "db.indexes=exit"})
    assert killed.returncode == 137, killed.stderr
    refused = run_cli("run", str(path), "--fresh")
    assert refused.returncode == 2, refused.stderr
    assert "made table(s) customers, countries" in refused.stderr or "made table(s) countries, customers" in \
        refused.stderr, refused.stderr
    resumed = run_cli("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    assert pg_rows(pg_db, "SELECT count(*) FROM app.customers") == pg_rows(source, "SELECT count(*) FROM customers")


def test_schemas_named_with_capitals_and_spaces(tmp_path: Path, pg_source: str, pg_db: str) -> None:
    pg_exec(pg_source, 'CREATE SCHEMA "Sales"', 'CREATE TABLE "Sales"."Deal" (id int PRIMARY KEY, "Amount" int)',
            'INSERT INTO "Sales"."Deal" VALUES (1, 10), (2, 20)', "CREATE TABLE public.other (id int)")
    path = job(tmp_path, pg_source, pg_db, tables='["Sales.*"]')
    path.write_text(path.read_text().replace('schema = "app"', 'schema = "Sales Copy"'))
    for mode in ("replace", "upsert"):
        path.write_text(re.sub(r'mode = "\w+"', f'mode = "{mode}"', path.read_text()))
        assert engine.run_job(load_config(path)).status == "succeeded"
    assert pg_rows(pg_db, 'SELECT count(*), sum("Amount") FROM "Sales Copy"."Deal"') == [(2, 30)]
    assert pg_rows(pg_db, "SELECT count(*) FROM pg_class WHERE relname = 'other'") == [(0,)]
