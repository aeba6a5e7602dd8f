"""[[validate.rules]] end to end, PostgreSQL -> PostgreSQL: each kind passing and failing, severities, budgets,
one quarantine record per row with every reason, the reference cache, uniqueness across partitions and against
the target, reconciliation, completeness, schema, `engine check` and the validation report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import pytest

from engine import uniqueness
from engine.config import load_config
from engine.errors import ErrorBudgetExceeded, RuleFailed
from engine.explain import check
from engine.pipeline import run_job
from tests.conftest import job_toml, pg_exec, pg_rows, run_cli, write_job

ORDERS = """CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id integer, status text,
    amount numeric(12,2), email text, code text)"""
ROWS = """INSERT INTO public.orders VALUES
    (1, 1, 'new', 10.00, 'a@x.com', 'ABC'),
    (2, 2, 'paid', -5.00, 'bad', 'abc'),
    (3, NULL, 'shipped', 20.00, NULL, NULL),
    (4, 99, 'weird', 30000.00, 'c@y.org', 'EUR'),
    (5, 3, 'new', 1.50, 'd@z.net', 'USD'),
    (6, 1, 'new', -1.00, 'e@z.net', 'GBP'),
    (7, 2, 'paid', 7.00, 'a@x.com', 'CHF'),
    (8, 3, 'shipped', NULL, 'f@z.net', 'JPY')"""
CUSTOMERS = ["CREATE TABLE public.customers (id integer PRIMARY KEY, region text)",
             "INSERT INTO public.customers VALUES (1, 'eu'), (2, 'eu'), (3, 'us')"]


@pytest.fixture
def source(pg_source: str) -> str:
    pg_exec(pg_source, ORDERS, ROWS, *CUSTOMERS)
    return pg_source


def _job(tmp_path: Path, src: str, dst: str, rules: str, *, partitions: int = 1, validate: str = "",
         workers: int = 2, transform: str = "", name: str = "rules") -> Path:
    body = job_toml(name, src, "public.orders", dst, "public.orders", extra_source=f"partitions = {partitions}",
                    extra=f"workers = {workers}")
    body += transform + "\n[validate]\nmax_error_rate = 1.0\n" + validate + "\n" + rules
    return write_job(tmp_path, body)


def _rule(**keys: object) -> str:
    return "[[validate.rules]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items()) + "\n"


def _quarantined(dst: str) -> dict[int, tuple[str, str]]:
    rows = pg_rows(dst, "SELECT (row->>'id')::int, checks, reason FROM engine.quarantine")
    return {int(r[0]): (r[1], r[2]) for r in rows}


def _loaded(dst: str) -> list[int]:
    return [int(r[0]) for r in pg_rows(dst, "SELECT id FROM public.orders ORDER BY id")]


KINDS = [
    ({"kind": "not_null", "column": "customer_id"}, {3}),
    ({"kind": "range", "column": "amount", "min": 0, "max": 1000}, {2, 4, 6}),
    ({"kind": "range", "column": "amount", "min": 0, "max": 10, "inclusive": False}, {1, 2, 3, 4, 6}),
    ({"kind": "allowed", "column": "status", "values": ["new", "paid", "shipped"]}, {4}),
    ({"kind": "length", "column": "email", "min": 4}, {2}),
    ({"kind": "references", "column": "customer_id", "table": "public.customers", "key": "id"}, {4}),
    ({"kind": "expression", "expr": "amount >= 0 OR status = 'paid'"}, {6}),
    ({"kind": "unique", "columns": ["email"], "scope": "batch"}, {7}),
    ({"kind": "unique", "columns": ["email"], "scope": "job"}, {7}),
    ({"kind": "format", "column": "email", "format": "email"}, {2}),
    ({"kind": "format", "column": "code", "format": "currency"}, {2}),
    ({"kind": "format", "column": "code", "regex": "^[A-Z]{3}$"}, {2}),
    ({"kind": "dtype", "column": "amount", "type": "integer"}, {5}),
    ({"kind": "dtype", "column": "status", "type": "varchar(5)"}, {3, 8}),
]


@pytest.mark.parametrize(("rule", "failing"), KINDS, ids=[f"{r['kind']}-{i}" for i, (r, _) in enumerate(KINDS)])
def test_each_kind_rejects_exactly_its_failing_rows(source: str, pg_db: str, tmp_path: Path,
                                                     rule: dict[str, object], failing: set[int]) -> None:
    report = run_job(load_config(_job(tmp_path, source, pg_db, _rule(name="r1", **rule))))
    assert report.status == "succeeded"
    assert set(_quarantined(pg_db)) == failing
    assert _loaded(pg_db) == [i for i in range(1, 9) if i not in failing]
    [entry] = report.rules
    assert entry["failures"] == len(failing) and entry["rows_checked"] == 8


def test_a_row_failing_three_rules_is_quarantined_once_with_three_reasons(source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    rules = (_rule(name="amount_range", kind="range", column="amount", min=0)
             + _rule(name="email_format", kind="format", column="email", format="email")
             + _rule(name="code_currency", kind="format", column="code", format="currency"))
    run_job(load_config(_job(tmp_path, source, pg_db, rules)))
    bad = _quarantined(pg_db)
    assert set(bad) == {2, 6}
    checks, reason = bad[2]
    assert checks == "amount_range, email_format, code_currency"
    assert reason.count(" failed for value ") == 3 and "email: email_format failed for value bad" in reason
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.quarantine WHERE (row->>'id')::int = 2") == [(1,)]
    # the whole source row is recorded, not only the columns the rules read
    assert pg_rows(pg_db, "SELECT row->>'status', row->>'customer_id' FROM engine.quarantine "
                          "WHERE (row->>'id')::int = 2") == [("paid", "2")]


def test_warn_loads_the_row_counts_it_and_lists_it(source: str, pg_db: str, tmp_path: Path) -> None:
    """A warn rule never blocks a row: it is loaded, counted, and recorded in engine.warnings (with every warn
    rule it failed), where the report's SQL lists it; a reject rule on the same row still quarantines it."""
    rules = (_rule(name="amount_range", kind="range", column="amount", min=0, severity="warn")
             + _rule(name="known_status", kind="allowed", column="status", values=["new", "paid"], severity="warn")
             + _rule(name="email_format", kind="format", column="email", format="email"))
    report = run_job(load_config(_job(tmp_path, source, pg_db, rules)))
    assert _loaded(pg_db) == [1, 3, 4, 5, 6, 7, 8] and set(_quarantined(pg_db)) == {2}  # 'bad' e-mail
    by_rule = {r["rule"]: r for r in report.rules}
    assert by_rule["amount_range"]["failures"] == 2
    assert {v["value"] for v in by_rule["amount_range"]["top_values"]} == {"-5.00", "-1.00"}
    listed = pg_rows(pg_db, f"SELECT (row->>'id')::int, checks, outcome FROM ({by_rule['amount_range']['sql']}) r")
    assert sorted(listed) == [(2, "email_format, amount_range", "quarantined"), (6, "amount_range", "loaded")]
    listed = pg_rows(pg_db, f"SELECT (row->>'id')::int, checks FROM ({by_rule['known_status']['sql']}) r")
    assert sorted(listed) == [(3, "known_status"), (4, "known_status"), (8, "known_status")]
    assert pg_rows(pg_db, "SELECT count(*) FROM engine.warnings WHERE (row->>'id')::int = 2") == [(0,)]
    assert pg_rows(pg_db, by_rule["email_format"]["sql"].replace("SELECT *", "SELECT (row->>'id')::int")) == [(2,)]


def test_fail_severity_stops_the_job_with_exit_65_naming_the_rule(source: str, pg_db: str, tmp_path: Path) -> None:
    rule = _rule(name="no_negative_amounts", kind="range", column="amount", min=0, severity="fail")
    job = _job(tmp_path, source, pg_db, rule)
    with pytest.raises(RuleFailed, match="no_negative_amounts"):
        run_job(load_config(job))
    done = run_cli("run", str(job), "--fresh")
    assert done.returncode == 65, done.stderr
    assert "no_negative_amounts" in done.stdout + done.stderr


def test_rule_count_budget_fails_the_job_and_keeps_finished_partitions(source: str, pg_db: str,
                                                                       tmp_path: Path) -> None:
    rule = _rule(name="amount_range", kind="range", column="amount", min=0, max=1000, max_errors=1)
    job = _job(tmp_path, source, pg_db, rule, partitions=4, workers=1)
    with pytest.raises(RuleFailed, match="amount_range .*max_errors 1"):
        run_job(load_config(job))
    # ids 1-2 and 3-4 committed (failures 2 and 4 reach 2 > 1 there); ids 5-8 were never loaded
    assert _loaded(pg_db) == [1, 3]


def test_rule_rate_budget(source: str, pg_db: str, tmp_path: Path) -> None:
    over = _rule(name="amount_range", kind="range", column="amount", min=0, max=1000, max_error_rate=0.3)
    with pytest.raises(RuleFailed, match="amount_range .*max_error_rate 30.00%"):
        run_job(load_config(_job(tmp_path, source, pg_db, over)))
    within = _rule(name="amount_range", kind="range", column="amount", min=0, max=1000, max_error_rate=0.4)
    assert run_job(load_config(_job(tmp_path, source, pg_db, within, name="rules2"))).status == "succeeded"


def test_job_count_budget(source: str, pg_db: str, tmp_path: Path) -> None:
    rule = _rule(name="amount_range", kind="range", column="amount", min=0, max=1000)
    with pytest.raises(ErrorBudgetExceeded, match="max_errors 2"):
        run_job(load_config(_job(tmp_path, source, pg_db, rule, validate="max_errors = 2")))


def test_references_are_read_once_per_run(source: str, pg_db: str, tmp_path: Path) -> None:
    """The reference table is a view that bumps a sequence for every row it returns: the server counts reads."""
    pg_exec(source, "CREATE SEQUENCE reads", "CREATE VIEW public.customers_v AS SELECT id FROM public.customers "
                                             "WHERE nextval('reads') > 0")
    rule = _rule(name="customer_exists", kind="references", column="customer_id", table="public.customers_v",
                 key="id")
    report = run_job(load_config(_job(tmp_path, source, pg_db, rule, partitions=4)))
    assert set(_quarantined(pg_db)) == {4} and report.partitions_run == 4
    assert pg_rows(source, "SELECT last_value FROM reads") == [(3,)]  # 3 customers, read once


def test_references_in_the_target_with_a_composite_key(source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_db, "CREATE TABLE public.pairs (cust integer, st text)",
            "INSERT INTO public.pairs VALUES (1, 'new'), (2, 'paid'), (3, 'new'), (99, 'weird')")
    rule = _rule(name="pair_known", kind="references", columns=["customer_id", "status"], table="public.pairs",
                 keys=["cust", "st"], **{"in": "target"})
    run_job(load_config(_job(tmp_path, source, pg_db, rule)))
    assert set(_quarantined(pg_db)) == {8}  # (3, shipped); id 3 has a NULL customer and passes


def test_job_wide_uniqueness_across_partitions(source: str, pg_db: str, tmp_path: Path) -> None:
    rules = (_rule(name="email_unique", kind="unique", columns=["email"], scope="job")
             + _rule(name="email_batch", kind="unique", columns=["email"], scope="batch", severity="warn"))
    report = run_job(load_config(_job(tmp_path, source, pg_db, rules, partitions=4)))
    bad = _quarantined(pg_db)
    assert len(bad) == 1 and set(bad) <= {1, 7}  # a@x.com in partitions 0 and 3: whichever came second
    assert {r["rule"]: r["failures"] for r in report.rules} == {"email_unique": 1, "email_batch": 0}


EVENTS = ["CREATE TABLE public.events (id bigint, tag text)",
          "INSERT INTO public.events SELECT i, 't' || i FROM generate_series(1, 4000) i",
          "INSERT INTO public.events VALUES (5, 't5'), (20, 'other'), (33, 't33'), (NULL, 'a'), (NULL, 'a')"]


@pytest.mark.parametrize(("columns", "duplicates"), [(["id"], 3), (["id", "tag"], 2)])
def test_uniqueness_over_the_partition_key_is_checked_within_each_partition(
        pg_source: str, pg_db: str, tmp_path: Path, columns: list[str], duplicates: int) -> None:
    """Partitions split on the key never share one: each checks its own keys (as bits over its key range for
    one integer column, by hashes for a composite), and every duplicate is still found, in a later batch than
    its first copy (batches of 1,000 rows, copies stored last); NULL keys pass."""
    pg_exec(pg_source, *EVENTS)
    body = job_toml("events", pg_source, "public.events", pg_db, "public.events",
                    extra_source='partition_on = "id"\npartitions = 2', extra="workers = 2\nbatch_rows = 1000")
    body += "\n[validate]\nmax_error_rate = 1.0\n" + _rule(name="u", kind="unique", columns=columns, scope="job")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert {r["rule"]: r["failures"] for r in report.rules} == {"u": duplicates}
    assert pg_rows(pg_db, "SELECT count(*) FROM engine.quarantine") == [(duplicates,)]
    assert pg_rows(pg_db, "SELECT count(*), count(DISTINCT (id, tag)) FROM public.events") == [
        (4005 - duplicates, 4005 - duplicates - 1)]  # the two NULL-key rows are alike and both loaded


def test_job_wide_uniqueness_finds_repeats_among_keys_written_to_disk(
        pg_source: str, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With runs this small, the keys of the partitions committed first are on disk by the time the last one
    repeats them: each repeat is found (one of the same partition too), and the files are gone after the run."""
    monkeypatch.setattr(uniqueness, "RUN_CAP", 256)
    monkeypatch.setattr(uniqueness, "BLOCK", 8)
    spilled: list[Path] = []
    write = uniqueness.SpilledRun.__init__

    def written(run: uniqueness.SpilledRun, folder: Path, pieces: Iterable[pl.Series]) -> None:
        write(run, folder, pieces)
        spilled.append(run.path)

    monkeypatch.setattr(uniqueness.SpilledRun, "__init__", written)
    pg_exec(pg_source, "CREATE TABLE public.tags (id bigint, tag text)",
            "INSERT INTO public.tags SELECT i, 't' || i FROM generate_series(1, 4000) i",
            "INSERT INTO public.tags VALUES (4001, 't5'), (4002, 't1500'), (4003, 't3999'), (4004, NULL), "
            "(4005, NULL)")
    body = job_toml("tags", pg_source, "public.tags", pg_db, "public.tags",
                    extra_source='partition_on = "id"\npartitions = 4', extra="workers = 1\nbatch_rows = 1000")
    body += "\n[validate]\nmax_error_rate = 1.0\n" + _rule(name="u", kind="unique", columns=["tag"], scope="job")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert {r["rule"]: r["failures"] for r in report.rules} == {"u": 3}
    assert set(_quarantined(pg_db)) == {4001, 4002, 4003}
    assert len(spilled) >= 4 and not any(path.exists() for path in spilled)


def test_target_scope_uniqueness_sees_rows_already_loaded(source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_db, "CREATE TABLE public.orders (id bigint, customer_id integer, status text, amount numeric(12,2), "
                   "email text, code text)", "INSERT INTO public.orders VALUES (100, 1, 'new', 1, 'e@z.net', 'EUR')")
    rule = _rule(name="email_unique", kind="unique", columns=["email"], scope="target")
    run_job(load_config(_job(tmp_path, source, pg_db, rule, partitions=2, workers=1)))
    assert set(_quarantined(pg_db)) == {6, 7}  # 6 is in the target already, 7 repeats 1


def test_target_scope_sizes_its_filter_for_the_rows_already_in_the_target(
        source: str, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter sized for the source's rows alone would be full of the target's keys, and let most new keys
    through to the runs: once seeded, it is made again for the target's rows as well, and learns them all (the
    target's 100 and 5,000 others, none analyzed: no statistics needed)."""
    monkeypatch.setattr(uniqueness, "FILTER_MIN_KEYS", 1)
    pg_exec(pg_db, "CREATE TABLE public.orders (id bigint, customer_id integer, status text, amount numeric(12,2), "
                   "email text, code text)",
            "INSERT INTO public.orders SELECT 1000 + i, 1, 'new', 1, 'x' || i || '@t.net', 'EUR' "
            "FROM generate_series(1, 5000) i", "INSERT INTO public.orders VALUES (100, 1, 'new', 1, 'e@z.net', 'EUR')")
    sized: list[tuple[int, int]] = []
    done = uniqueness.HashIndex.seeded_all

    def recorded(index: uniqueness.HashIndex, beyond_plan: bool = False) -> None:
        done(index, beyond_plan)
        assert index.filter is not None
        sized.append((index.planned_keys, len(index.filter.bits.bits)))

    monkeypatch.setattr(uniqueness.HashIndex, "seeded_all", recorded)
    rule = _rule(name="email_unique", kind="unique", columns=["email"], scope="target")
    run_job(load_config(_job(tmp_path, source, pg_db, rule, partitions=2, workers=1)))
    assert set(_quarantined(pg_db)) == {6, 7}  # 6 is in the target already, 7 repeats 1
    [(planned, bits)] = sized
    assert planned < 5000 and bits == (planned + 5001) * uniqueness.FILTER_BITS_PER_KEY


def test_reconcile_catches_a_transform_that_changes_amounts(source: str, pg_db: str, tmp_path: Path) -> None:
    rule = _rule(name="amount_total", kind="reconcile", column="amount", agg="sum")
    assert run_job(load_config(_job(tmp_path, source, pg_db, rule, partitions=2))).status == "succeeded"
    pg_exec(pg_db, "TRUNCATE public.orders")
    doubled = '\n[transform]\nadd = { amount = "CASE WHEN id = 5 THEN amount * 2 ELSE amount END" }\n'
    job = _job(tmp_path, source, pg_db, rule, partitions=2, transform=doubled, workers=1, name="rules2")
    mismatch = r"amount_total .*partition 1: source sum\(amount\) = 7.50, loaded \+ quarantined = 9.00"
    with pytest.raises(RuleFailed, match=mismatch):
        run_job(load_config(job))
    assert _loaded(pg_db) == [1, 2, 3, 4]  # the partition holding id 5 was not committed


@pytest.mark.parametrize("agg", ["count_distinct", "min", "max"])
def test_reconcile_other_aggregates_pass_on_unchanged_data(source: str, pg_db: str, tmp_path: Path,
                                                           agg: str) -> None:
    rule = _rule(name="r", kind="reconcile", column="amount", agg=agg)
    rule += _rule(name="range", kind="range", column="amount", min=0)  # quarantined rows count too
    report = run_job(load_config(_job(tmp_path, source, pg_db, rule, partitions=3)))
    assert report.status == "succeeded" and report.rules[0]["rows_checked"] == 3


def test_completeness_is_judged_over_the_job(source: str, pg_db: str, tmp_path: Path) -> None:
    ok = _rule(name="email_complete", kind="completeness", column="email", max_null_ratio=0.2)
    assert run_job(load_config(_job(tmp_path, source, pg_db, ok, partitions=2))).rules[0]["failures"] == 1
    strict = _rule(name="email_complete", kind="completeness", column="email", max_null_ratio=0.1)
    with pytest.raises(RuleFailed, match="email_complete .*12.50% > max_null_ratio 10.00%"):
        run_job(load_config(_job(tmp_path, source, pg_db, strict, partitions=2, name="rules2")))


def test_schema_rule_fails_the_job_when_planning(source: str, pg_db: str, tmp_path: Path) -> None:
    rule = _rule(name="shape", kind="schema", columns=["id", "customer_id", "status", "amount", "email"],
                 extra="forbid")
    with pytest.raises(RuleFailed, match=r"shape .*unexpected column\(s\) code"):
        run_job(load_config(_job(tmp_path, source, pg_db, rule)))
    assert pg_rows(pg_db, "SELECT to_regclass('public.orders') IS NULL") == [(True,)]
    allow = _rule(name="shape", kind="schema", columns=["id", "email"])
    assert run_job(load_config(_job(tmp_path, source, pg_db, allow, name="rules2"))).status == "succeeded"


def test_engine_check_names_every_bad_rule_key(source: str, pg_db: str, tmp_path: Path) -> None:
    rules = (_rule(name="a", kind="range", column="amout", min=0)
             + _rule(name="b", kind="expression", expr="amount > 0 OR stat = 'x'")
             + _rule(name="c", kind="references", column="customer_id", table="public.nope", key="id")
             + _rule(name="d", kind="references", column="customer_id", table="public.customers", key="ident")
             + _rule(name="e", kind="dtype", column="amount", type="money"))
    problems = check(load_config(_job(tmp_path, source, pg_db, rules)))
    joined = "\n".join(problems)
    for key in ("validate.rules[0].column", "validate.rules[1].expr", "validate.rules[2].table",
                "validate.rules[3].key", "validate.rules[4].type"):
        assert f"`{key}`" in joined, joined
    bad_shape = (_rule(name="f", kind="format", column="code", regex="(?=A)")
                 + _rule(name="g", kind="expression", expr="amount >")
                 + _rule(name="h", kind="checksum", column="code"))
    done = run_cli("check", str(_job(tmp_path, source, pg_db, bad_shape)))
    assert done.returncode == 2
    for key in ("validate.rules[0].regex", "validate.rules[1].expr", "validate.rules[2].kind"):
        assert f"`{key}`" in done.stdout + done.stderr, done.stdout + done.stderr


def test_validation_report_in_json_terminal_and_status(source: str, pg_db: str, tmp_path: Path) -> None:
    rules = (_rule(name="amount_range", kind="range", column="amount", min=0, max=1000)
             + _rule(name="status_known", kind="allowed", column="status", values=["new", "paid", "shipped"]))
    job = _job(tmp_path, source, pg_db, rules, partitions=2)
    out = tmp_path / "report.json"
    done = run_cli("run", str(job), "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    by_rule = {r["rule"]: r for r in report["rules"]}
    amount = by_rule["amount_range"]
    assert amount["kind"] == "range" and amount["severity"] == "reject" and amount["rows_checked"] == 8
    assert amount["failures"] == 3 and amount["share"] == pytest.approx(3 / 8)
    assert sorted(amount["sample_keys"]) == ["2", "4", "6"]
    assert {v["value"] for v in amount["top_values"]} == {"-5.00", "30000.00", "-1.00"}
    listed = pg_rows(pg_db, amount["sql"].replace("SELECT *", "SELECT (row->>'id')::int"))
    assert sorted(int(r[0]) for r in listed) == [2, 4, 6]
    assert "amount_range" in done.stdout and "all rows: SELECT * FROM engine.quarantine" in done.stdout
    status = run_cli("status", str(job))
    assert status.returncode == 0 and "amount_range" in status.stdout and "status_known" in status.stdout



def test_a_resumed_run_keeps_job_wide_uniqueness_and_rule_counts(source: str, pg_db: str, tmp_path: Path) -> None:
    unique = _rule(name="email_unique", kind="unique", columns=["email"], scope="job")
    range_ = _rule(name="amount_range", kind="range", column="amount", min=0)
    stop = _rule(name="stop_at_8", kind="expression", expr="id <> 8", severity="fail")
    with pytest.raises(RuleFailed, match="stop_at_8"):  # partitions 0-2 commit (ids 1-6), partition 3 fails
        run_job(load_config(_job(tmp_path, source, pg_db, unique + range_ + stop, partitions=4, workers=1)))
    assert _loaded(pg_db) == [1, 3, 4, 5]
    report = run_job(load_config(_job(tmp_path, source, pg_db, unique + range_, partitions=4, workers=1)))
    assert report.resumed and report.partitions_run == 1
    assert set(_quarantined(pg_db)) == {2, 6, 7}  # 7 repeats the e-mail of 1, loaded before the resume
    counts = {r["rule"]: (r["failures"], r["rows_checked"]) for r in report.rules}
    assert counts == {"email_unique": (1, 8), "amount_range": (2, 8)}
