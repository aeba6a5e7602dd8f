"""Validation engines compared on the perf rule set, and job-wide uniqueness memory at 10M rows.

    python -m perf.rules_bench [--rows 1M] [--batch 8192] [--unique-rows 10M]

1. The row-level rules of the `engine-rules` perf case (perf/cases.py EVERY_KIND), run over perf-shaped
   batches three ways: Pandera (`pandera.polars`, lazy validation, as a user's schema would run), and the
   engine's compiled plain Polars expressions (`engine.rulesets`, one `select` per batch). Same verdicts.
2. Job-wide uniqueness: `engine.uniqueness.HashIndex` fed `--unique-rows` distinct keys batch by batch; the
   growth of this process's peak RSS and the time taken.
Results: perf/results/rules-bench.json (`--out` names another file).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl

from engine.config import parse_config
from engine.rulerun import key_hashes
from engine.rulesets import compile_checks
from engine.uniqueness import HashIndex
from perf.cases import EVERY_KIND
from perf.run import row_count

RESULTS = Path(__file__).resolve().parent / "results"
STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]


def perf_frame(rows: int) -> pl.DataFrame:
    """Rows shaped like the perf table's (perf/datasets.py), generated in Polars."""
    i = pl.int_range(1, rows + 1, eager=True, dtype=pl.Int64)
    return pl.DataFrame({"id": i}).with_columns(
        customer_id=(pl.col("id") * 48271) % 50000 + 1,
        status=pl.lit(pl.Series(STATUSES)).gather(pl.col("id") % 6),
        amount=(((pl.col("id") * 7919) % 1000000) / 100).cast(pl.Decimal(12, 2)),
        currency=pl.lit(pl.Series(["EUR", "USD", "GBP", "JPY", "CHF"])).gather(pl.col("id") % 5),
        email=pl.format("customer{}@example.com", (pl.col("id") * 48271) % 50000 + 1),
        note=pl.when(pl.col("id") % 20 == 0).then(None).otherwise(pl.format("order {}: {}", "id", pl.lit("x" * 300))),
    )


def row_rules() -> list[Any]:
    kinds = {"dtype", "not_null", "range", "allowed", "length", "expression", "format"}
    rules = [{"name": f"r{i}", **r} for i, r in enumerate(EVERY_KIND) if r["kind"] in kinds]
    data = {"job": {"name": "bench"}, "source": {"url": "sqlite:///x.db", "table": "t"},
            "target": {"url": "postgresql://localhost/x", "table": "t"}, "validate": {"rules": rules}}
    return list(parse_config(data, Path("bench.toml")).validate_.rules)


def pandera_schema() -> pa.DataFrameSchema:
    """The same rules as Pandera declares them (built-in checks; the expression and dtype as custom checks)."""
    return pa.DataFrameSchema({
        "customer_id": pa.Column(pl.Int64, pa.Check(lambda d: d.lazyframe.select(
            pl.col("customer_id").cast(pl.Int32, strict=False).is_not_null() | pl.col("customer_id").is_null()),
            name="dtype_integer")),
        "status": pa.Column(str, pa.Check.isin(STATUSES), nullable=False),
        "amount": pa.Column(pl.Decimal(12, 2), pa.Check.in_range(0, 1_000_000)),
        "note": pa.Column(str, pa.Check.str_length(max_value=2000), nullable=True),
        "email": pa.Column(str, pa.Check.str_matches(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")),
        "currency": pa.Column(str, pa.Check.str_matches(r"^[A-Z]{3}$")),
    }, checks=[pa.Check(lambda d: d.lazyframe.select(
        pl.sql_expr("amount >= 0 OR status = 'refunded'").fill_null(True)), name="expression")])


def _timed(batches: list[pl.DataFrame], check: Any) -> float:
    start = time.perf_counter()
    for batch in batches:
        check(batch)
    return time.perf_counter() - start


def compare(rows: int, batch_rows: int) -> dict[str, Any]:
    frame = perf_frame(rows)
    batches = [frame.slice(o, batch_rows) for o in range(0, rows, batch_rows)]
    checks = compile_checks(row_rules(), frame.schema, {})
    schema = pandera_schema()

    def polars_check(batch: pl.DataFrame) -> None:
        verdicts = batch.select(c.passes.alias(f"c{i}") for i, c in enumerate(checks))
        assert verdicts.select(pl.all_horizontal(pl.all())).to_series().all()

    def pandera_check(batch: pl.DataFrame) -> None:
        schema.validate(batch, lazy=True)

    bad = batches[0].with_columns(status=pl.lit("lost"))  # both must see a failing batch as failing
    try:
        schema.validate(bad, lazy=True)
        raise AssertionError("Pandera passed a failing batch")
    except pa.errors.SchemaErrors:
        pass
    assert not bad.select(pl.all_horizontal(c.passes for c in checks)).to_series().all()
    _timed(batches[:2], polars_check)
    _timed(batches[:2], pandera_check)  # warm both (imports, regex compilation)
    result = {"rows": rows, "batch_rows": batch_rows, "rules": len(checks),
              "polars_s": round(min(_timed(batches, polars_check) for _ in range(3)), 3),
              "pandera_s": round(min(_timed(batches, pandera_check) for _ in range(3)), 3)}
    result["pandera_over_polars"] = round(result["pandera_s"] / result["polars_s"], 2)
    return result


def unique_memory(rows: int, batch_rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rules-bench-") as folder:
        return _unique_memory(rows, batch_rows, Path(folder))


def _unique_memory(rows: int, batch_rows: int, folder: Path) -> dict[str, Any]:
    index = HashIndex(expected_keys=rows, spill_to=folder)  # as the engine makes it: sized by the plan's rows
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    for offset in range(0, rows, batch_rows):
        keys = pl.int_range(offset, min(offset + batch_rows, rows), eager=True)
        hashes = key_hashes(pl.DataFrame({"id": keys}), ["id"])
        partition = offset // 50_000  # the engine's default rows_per_partition: each commits when it ends
        index.check_and_add(hashes, partition)
        if (offset + batch_rows) // 50_000 != partition:
            index.committed_partition(partition)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held, on_disk, runs = len(index), sum(r.size for r in index.committed.spilled), len(index.committed.spilled)
    index.close()
    return {"rows": rows, "batch_rows": batch_rows, "seconds": round(seconds, 1), "keys": held,
            "keys_on_disk": on_disk, "runs_on_disk": runs, "peak_rss_growth_mb": round(after - before, 1),
            "peak_rss_mb": round(after, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.rules_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=row_count, default=1_000_000)
    p.add_argument("--batch", type=int, default=8192, help="rows per batch, as the engine's default batch_rows")
    p.add_argument("--unique-rows", type=row_count, default=10_000_000)
    p.add_argument("--no-unique", action="store_true", help="skip the uniqueness run")
    p.add_argument("--out", default="rules-bench", help="results file name in perf/results (without .json)")
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    if not args.no_unique:  # first: the process's peak is still the start-up's
        u = out["unique"] = unique_memory(args.unique_rows, args.batch)
        print(f"job-wide uniqueness, {u['rows']:,} keys in {args.batch:,}-row batches: {u['seconds']} s, peak RSS "
              f"+{u['peak_rss_growth_mb']} MB (process peak {u['peak_rss_mb']} MB), {u['keys_on_disk']:,} keys "
              f"in {u['runs_on_disk']} files by the end")
    e = out["engines"] = compare(args.rows, args.batch)
    print(f"{e['rules']} row rules over {e['rows']:,} rows in {e['batch_rows']:,}-row batches: plain Polars "
          f"{e['polars_s']} s, Pandera {e['pandera_s']} s ({e['pandera_over_polars']}x)")
    path = RESULTS / f"{args.out}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
