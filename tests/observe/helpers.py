"""A small orders job with one row in ten failing validation (amount < 0), in four partitions."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import job_toml, pg_exec, write_job


def make_orders(url: str, rows: int = 4000) -> None:
    pg_exec(url, f"""CREATE TABLE public.orders AS SELECT g AS id, 1 AS customer_id, 'paid' AS status,
        (CASE WHEN g % 10 = 0 THEN -1 ELSE 1 END)::numeric(12,2) AS amount, 'EUR' AS currency,
        'a@b.com' AS email, NULL::text AS note FROM generate_series(1, {rows}) g""")


def orders_job(tmp_path: Path, name: str, source: str, target: str, partitions: int = 4, extra: str = "",
               staging: Path | None = None) -> Path:
    body = job_toml(name, source, "public.orders", target, "public.orders",
                    extra_source=f'partition_on = "id"\npartitions = {partitions}',
                    extra=f"workers = 2\nbatch_rows = 1000\n{extra}")
    if staging is not None:
        body = body.replace('staging_dir = "', f'staging_dir = "{staging}"\n# was: staging_dir = "', 1)
    body += '\n[validate]\nschema = "orders.schema:Orders"\nmax_error_rate = 0.5\n'
    return write_job(tmp_path, body, f"{name}.toml")
