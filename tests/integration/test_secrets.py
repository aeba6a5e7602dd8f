"""A password given through `${VAR}` never leaves the process: the secret canary, end to end.

The job's source and target URLs carry the password of a real role (the server may use trust auth, so it is
accepted without being checked; it is still in every connection string). Runs that succeed, write JSON, and
fail (inside a library, with the secret in the library's own message; and on the error budget) must leave it in
no line of stdout or stderr, no --json file, no file under the staging folder and no column of the engine's
tables.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq
import pytest

from engine.localpg import PostgresServer
from tests.conftest import pg_exec, pg_rows, run_cli, write_job

SECRET_VAR = "ENGINE_CANARY_PASSWORD"

# A transform that fails inside Polars, on the rows past the first partition only (so planning, which tries
# the transform on the source's columns, passes), with the secret in Polars' own message: it uses the secret as
# a value and reads it as a number.
LEAKY_RULES = f'''
import os

import polars as pl


def leak(frame: pl.LazyFrame) -> pl.LazyFrame:
    secret = pl.lit(os.environ["{SECRET_VAR}"])
    return frame.with_columns(pl.when(pl.col("id") > 1500).then(secret).otherwise(pl.col("grp").cast(pl.String))
                              .cast(pl.Int64, strict=True).alias("grp"))
'''


@pytest.fixture
def canary_role(pg_server: PostgresServer, pg_source: str, pg_db: str) -> Iterator[tuple[str, str]]:
    """A login role with a password, owning the source and target databases; dropped afterwards."""
    role, password = f"engine_canary_{uuid.uuid4().hex[:10]}", f"Canary{uuid.uuid4().hex}"
    pg_exec(pg_server.url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    databases = [urlsplit(url).path.lstrip("/") for url in (pg_source, pg_db)]
    for name in databases:
        pg_exec(pg_server.url, f'ALTER DATABASE "{name}" OWNER TO {role}')
    try:
        yield role, password
    finally:
        pg_exec(pg_server.url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        for name, url in zip(databases, (pg_source, pg_db), strict=True):
            pg_exec(pg_server.url, f'ALTER DATABASE "{name}" OWNER TO CURRENT_USER')
            pg_exec(url, f"REASSIGN OWNED BY {role} TO CURRENT_USER", f"DROP OWNED BY {role}")
        pg_exec(pg_server.url, f"DROP ROLE {role}")


def as_role(url: str, role: str) -> str:
    """`url` connecting as `role` with the password from the environment (`${VAR}`, as a job file writes it)."""
    parts = urlsplit(url)
    server = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}:${{{SECRET_VAR}}}@{server}", parts.path, parts.query, parts.fragment))


def canary_job(tmp_path: Path, name: str, source: str, target: str, table: str, extra: str = "",
               transform: str = "") -> Path:
    return write_job(tmp_path, f"""
[job]
name = "{name}"
rules_dir = "{tmp_path / 'rules'}"

[source]
url = "{source}"
table = "public.items"
partitions = 3

[target]
url = "{target}"
table = "{table}"
mode = "append"
{transform}
[validate]
{extra}

[pipeline]
staging_dir = "{tmp_path / 'staging'}"
stage_batches = true
workers = 2
retries = 1
""", f"{name}.toml")


def assert_no_secret(secret: str, what: str, text: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        assert secret not in line, f"the password is in {what}, line {number}: {line[:300]}"


def test_a_password_from_the_environment_appears_nowhere(canary_role: tuple[str, str], pg_source: str,
                                                         pg_db: str, tmp_path: Path) -> None:
    role, secret = canary_role
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "canary.py").write_text(LEAKY_RULES, encoding="utf-8")
    pg_exec(pg_source, "CREATE TABLE public.items (id bigint PRIMARY KEY, grp integer NOT NULL, label text)",
            "INSERT INTO public.items SELECT g, g % 7, 'row ' || g FROM generate_series(1, 3000) g",
            f"ALTER TABLE public.items OWNER TO {role}")
    for table in ("items_text", "items_json", "items_budget", "items_failed"):  # the target refuses 1 row in 100
        pg_exec(pg_db, f"CREATE TABLE public.{table} (id bigint PRIMARY KEY, grp integer NOT NULL, label text, "
                       "CHECK (id % 100 <> 0))", f"ALTER TABLE public.{table} OWNER TO {role}")
    source, target = as_role(pg_source, role), as_role(pg_db, role)
    env = {SECRET_VAR: secret}
    outputs: list[tuple[str, str]] = []

    def run(name: str, table: str, expected_exit: int, *options: str, extra: str = "max_error_rate = 0.05",
            transform: str = "") -> None:
        job = canary_job(tmp_path, name, source, target, f"public.{table}", extra, transform)
        assert secret not in job.read_text()  # the job file names the variable only
        result = run_cli("run", str(job), *options, env=env)
        assert result.returncode == expected_exit, result.stderr[-3000:]
        outputs.extend([(f"{name} stdout", result.stdout), (f"{name} stderr", result.stderr)])

    run("canary_text", "items_text", 0)
    json_path = tmp_path / "report.json"
    run("canary_json", "items_json", 0, "--json", str(json_path), "--quiet")
    budget_json = tmp_path / "budget.json"
    run("canary_budget", "items_budget", 65, "--json", str(budget_json), extra="max_error_rate = 0")
    run("canary_failed", "items_failed", 1, "--json", str(tmp_path / "failed.json"),
        transform='[transform]\nfunction = "canary:leak"\n')

    for what, text in outputs:
        assert_no_secret(secret, what, text)
    failed_stderr = dict(outputs)["canary_failed stderr"]
    assert "InvalidOperationError" in failed_stderr and "***" in failed_stderr  # the library's message, masked
    for path in (json_path, budget_json):
        report = json.loads(path.read_text())
        assert report["source"].startswith(f"postgresql://{role}:***@")  # the URL is there, its password is not
        assert_no_secret(secret, str(path), path.read_text())
    assert json.loads(budget_json.read_text())["status"] == "failed"

    staged = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert any(p.parent.name == "rejected" for p in staged), staged  # the refused rows were staged
    for path in staged:
        assert secret.encode() not in path.read_bytes(), path
        if path.suffix == ".parquet":  # compressed pages would hide the bytes: read the values too
            assert_no_secret(secret, str(path), json.dumps(pq.read_table(path).to_pylist(), default=str))

    tables = [r[0] for r in pg_rows(pg_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'engine'")]
    assert {"runs", "checkpoints", "quarantine"} <= set(tables)
    for table in tables:
        assert_no_secret(secret, f"engine.{table}", "\n".join(r[0] for r in pg_rows(
            pg_db, f"SELECT t::text FROM engine.{table} t")))
    errors = dict(pg_rows(pg_db, "SELECT job, error FROM engine.runs WHERE status = 'failed'"))
    assert "InvalidOperationError" in errors["canary_failed"] and "***" in errors["canary_failed"]
    assert "failed validation" in errors["canary_budget"]
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.quarantine") >= [(60,)]
