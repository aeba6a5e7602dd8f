"""Every example job in configs/ runs (the demo has its own test)."""

from __future__ import annotations

from tests.conftest import ROOT, pg_exec, pg_rows, run_cli


def test_orders_example_job_runs_and_upserts(pg_source: str, pg_db: str) -> None:
    pg_exec(pg_source, """CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id bigint, status text,
        amount numeric(12,2), currency char(3), email text, note text)""",
            """INSERT INTO public.orders SELECT g, g, 'paid', g / 10.0, 'EUR', 'c' || g || '@example.com', NULL
               FROM generate_series(1, 2000) g""")
    env = {"SOURCE_URL": pg_source, "TARGET_URL": pg_db}
    first = run_cli("run", str(ROOT / "configs" / "orders.toml"), env=env)
    assert first.returncode == 0, first.stderr
    pg_exec(pg_source, "UPDATE public.orders SET status = 'shipped' WHERE id <= 10")
    second = run_cli("run", str(ROOT / "configs" / "orders.toml"), env=env)
    assert second.returncode == 0, second.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'shipped'), MIN(email_domain) "
                          "FROM public.orders") == [(2000, 10, "example.com")]
