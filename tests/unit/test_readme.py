"""The README's type map is the one the code produces, and its first lines give the two commands."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from typing import Any

import pytest

from engine.cli import EXAMPLE
from engine.config import SourceSection
from engine.typemap import type_map_markdown
from perf.run import engine_source
from tests.conftest import ROOT


def test_readme_type_map_matches_the_code() -> None:
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- type-map:start -->"), text.index("<!-- type-map:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == type_map_markdown().strip()


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any("make demo" in line for line in head) and any("make test" in line for line in head)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _results(name: str) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in json.loads((ROOT / "perf" / "results" / name).read_text())}


def _engine_sources(results: dict[str, dict[str, Any]]) -> set[str]:
    return {h for r in results.values() for h in r.get("extra", {}).get("engine_source", [])}


def test_readme_perf_table_is_latest_json() -> None:
    """Every row of the README's perf table is a case of perf/results/latest.json, figure for figure, and every
    case measured there is in the table."""
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- perf:start -->"), text.index("<!-- perf:end -->")
    lines = [line for line in text[start:end].splitlines() if line.startswith("| ")][1:]
    results = _results("latest.json")
    shown = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        shown[cells[1].strip("`")] = cells[2:]
    assert list(shown) == [k for k, r in results.items() if r["status"] == "ok"]
    for case, cells in shown.items():
        r = results[case]
        walls = r["wall_s_all"]
        assert cells == [f"{r['wall_s_median']:.2f} ({min(walls):.2f}–{max(walls):.2f})", f"{r['ratio_to_limit']:.2f}",
                         f"{r['peak_rss_mb']:,.0f}", f"{r['cpu_s_median']:.2f}"], case


def test_readme_perf_prose_quotes_the_saved_results() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    r = _results("latest.json")
    engine = r["engine"]["wall_s_median"]
    for peer, name in [("polars-pg", "Polars"), ("sling-pg", "Sling"), ("pgloader-pg", "pgloader"), ("dlt-pg", "dlt")]:
        assert f"{r[peer]['wall_s_median'] / engine:.2f}× faster than {name}" in text, peer
    assert f"{r['engine']['peak_rss_mb'] / r['polars-pg']['peak_rss_mb']:.0%} of Polars' peak memory" in text
    off = r["engine-novalidate"]
    assert (f"validation added {(engine - off['wall_s_median']) / off['wall_s_median']:.0%} to the wall time "
            f"({engine - off['wall_s_median']:.2f} s; {r['engine']['cpu_s_median'] - off['cpu_s_median']:.2f} CPU-s"
            in text)
    ratio = {k: v["ratio_to_limit"] for k, v in r.items()}
    for quoted in [f"ran at {ratio['engine-adbc']:.2f}× the COPY limit against {ratio['engine']:.2f}× for ConnectorX, "
                   f"with {r['engine-adbc']['cpu_s_median']:.2f} against {r['engine']['cpu_s_median']:.2f} CPU-s",
                   f"({r['engine-blocks']['wall_s_median']:.2f} against {r['engine-key']['wall_s_median']:.2f} s)",
                   f"({r['engine-blocks-shuffled']['wall_s_median']:.2f} against "
                   f"{r['engine-key-shuffled']['wall_s_median']:.2f} s)",
                   f"took {r['engine-rules']['wall_s_median'] / off['wall_s_median']:.2f}× the time without validation",
                   f"ran at {r['engine-mysql']['ratio_to_source_limit']:.2f}× its own source's limit",
                   f"SQLite → PG at {r['engine-sqlite']['ratio_to_source_limit']:.2f}× its own"]:
        assert quoted in text, quoted
    s = _results("scaling-latest.json")
    one, ten = s["engine@1000000"], s["engine@10000000"]
    workers = [s[f"engine-w{n}"] for n in (1, 2, 4)]
    for quoted in [f"10M rows took {ten['wall_s_median']:.1f} s",
                   f"{ten['wall_s_median'] / one['wall_s_median']:.1f}× the 1M time ({one['wall_s_median']:.2f} s)",
                   f"{ten['ratio_to_limit']:.2f}× the COPY limit at that size",
                   f"peak RSS {ten['peak_rss_mb']:.0f} MB vs {one['peak_rss_mb']:.0f} MB at 1M",
                   "workers 1 / 2 / 4 at 1M: " + " / ".join(f"{w['wall_s_median']:.2f}" for w in workers) + " s",
                   " / ".join(f"{w['peak_rss_mb']:.0f}" for w in workers) + " MB"]:
        assert quoted in text, quoted


def test_readme_says_which_engine_source_the_perf_figures_measured() -> None:
    """The results record the hash of engine/*.py they measured: the README names it and the commit it is, for
    the main table and for the scaling figures, and says plainly when the main table's is not the current one."""
    text = " ".join((ROOT / "README.md").read_text().split())
    (measured,) = _engine_sources(_results("latest.json"))
    found = re.search(r"measured on engine commit ([0-9a-f]{7,40}) \(engine source hash `([0-9a-f]{12})`([^)]*)\)", text)
    assert found, "the README must name the engine commit and source hash its perf figures were measured on"
    commit, quoted, note = found.groups()
    assert quoted == measured
    if engine_source() != measured:
        assert "**not the current engine source**" in note
    else:
        assert "not the current engine source" not in note
    _assert_commit_measured(commit, measured)
    (scaling,) = _engine_sources(_results("scaling-latest.json"))
    found = re.search(r"scaling-latest.json`, measured on engine commit ([0-9a-f]{7,40}) with engine source hash "
                      r"`([0-9a-f]{12})`", text)
    assert found and found.group(2) == scaling, "the scaling figures name the engine source they measured"
    _assert_commit_measured(found.group(1), scaling)


def _assert_commit_measured(commit: str, measured: str) -> None:
    """`commit`'s engine/*.py hash to `measured`."""
    shown = subprocess.run(["git", "ls-tree", "--name-only", commit, "engine/"], cwd=ROOT, capture_output=True,
                           text=True)
    if shown.returncode != 0:
        pytest.skip(f"no git history here to check commit {commit}: {shown.stderr.strip()}")
    digest = hashlib.sha256()
    for path in sorted(p for p in shown.stdout.split() if p.endswith(".py") and p.count("/") == 1):
        body = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
        digest.update(path.split("/")[1].encode() + b"\0" + body)
    assert digest.hexdigest()[:12] == measured, f"commit {commit}'s engine source is not the one measured"


def test_readme_and_help_state_the_default_partition_size() -> None:
    default = SourceSection.model_fields["rows_per_partition"].default
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"default is one partition per ([\d,]+) rows", readme) == [f"{default:,}"]
    assert re.findall(r"default is one per ([\d,]+) rows", EXAMPLE) == [f"{default:,}"]


def test_readme_lists_every_exit_code_the_engine_uses() -> None:
    from engine.errors import EXIT_CODES

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Exit codes"):].split("\n## ", 1)[0]
    listed = {int(line.split("|")[1]) for line in section.splitlines() if line.startswith("| ") and
              line.split("|")[1].strip().isdigit()}
    assert listed == set(EXIT_CODES)


@pytest.mark.parametrize("block", ["wholedb", "manytables"])
def test_readme_wholedb_tables_are_their_latest_json(block: str) -> None:
    """The README's whole-database tables (the star schema, many small tables) are those of
    `perf/results/<block>-latest.json`, and each names the engine source its engine cases measured."""
    from perf.readme import wholedb_block

    text = (ROOT / "README.md").read_text()
    start, end = text.index(f"<!-- {block}:start -->"), text.index(f"<!-- {block}:end -->")
    results = json.loads((ROOT / "perf" / "results" / f"{block}-latest.json").read_text())
    assert text[start:end].removeprefix(f"<!-- {block}:start -->").strip() == wholedb_block(results).strip()
    hashes = {h for r in results for h in r.get("extra", {}).get("engine_source", [])}
    assert len(hashes) == 1, hashes
    assert f"engine source hash `{hashes.pop()}`" in text[:start]


def test_readme_validation_figures_quote_the_saved_results() -> None:
    """The Validation section's figures are those of rules-bench.json, rules-bench-30m.json, rules-ab.json,
    rules-10m.json and rules-10m-unique.json."""
    text = " ".join((ROOT / "README.md").read_text().split())
    bench = json.loads((ROOT / "perf" / "results" / "rules-bench.json").read_text())
    unique, engines = bench["unique"], bench["engines"]
    wide = json.loads((ROOT / "perf" / "results" / "rules-bench-30m.json").read_text())["unique"]
    quoted = [f"took {unique['seconds']} s and +{unique['peak_rss_growth_mb']} MB of peak memory",
              f"{unique['keys_on_disk']:,} of the keys in {unique['runs_on_disk']} files by the end",
              f"took {wide['seconds']} s and +{wide['peak_rss_growth_mb']} MB of peak memory, "
              f"in {wide['runs_on_disk']} files",
              f"took {engines['pandera_over_polars']:.2f}x the time",
              f"{engines['pandera_s']} s vs {engines['polars_s']} s"]
    for name in ("rules-ab.json", "rules-10m.json"):
        r = _results(name)
        plain, rules, unique_job = r["engine-novalidate"], r["engine-rules"], r["engine-unique-job"]
        quoted += [f"`engine-rules` took {rules['wall_s_median'] / plain['wall_s_median']:.2f}× the wall time of "
                   f"`engine-novalidate` ({rules['wall_s_median']:.2f} s against {plain['wall_s_median']:.2f} s",
                   f"peak RSS {rules['peak_rss_mb']:.0f} MB against {plain['peak_rss_mb']:.0f} MB",
                   f"`engine-unique-job` {unique_job['wall_s_median'] / plain['wall_s_median']:.2f}× "
                   f"({unique_job['wall_s_median']:.2f} s), {unique_job['peak_rss_mb']:.0f} MB"]
        found = re.search(r"side by side on engine source hash `([0-9a-f]{12})` \(([^)]*)\)", text)
        assert found and _engine_sources(r) == {found.group(1)}, "the README names the engine source measured"
        current = "the current engine source" if engine_source() == found.group(1) else "**not the current engine source**"
        assert found.group(2) == current or current.startswith("**not") and found.group(2).startswith(current + ":")
    extra = _results("rules-10m-unique.json")["engine-unique-job"]
    assert found and _engine_sources({"engine-unique-job": extra}) == {found.group(1)}
    more = [f"{mb:.0f}" for mb in extra["peak_rss_mb_all"]]
    quoted.append(f"{', '.join(more[:-1])} and {more[-1]} MB in {len(more)} more runs of the same engine source")
    ab = _results("rules-ab.json")
    pairs = [r / p for r, p in zip(ab["engine-rules"]["wall_s_all"], ab["engine-novalidate"]["wall_s_all"], strict=True)]
    quoted.append(f"Run by run, the rules' ratio ranged from {min(pairs):.2f} to {max(pairs):.2f}")
    for quote in quoted:
        assert quote in text, quote


def test_readme_many_tables_prose_quotes_the_saved_results() -> None:
    """The many-tables paragraph's ratios and its before figure are those of manytables-latest.json and
    manytables-before.json."""
    text = " ".join((ROOT / "README.md").read_text().split())
    now = {r["case"]: r["wall_s_median"] for r in _results_list("manytables-latest.json")}
    before = _results_list("manytables-before.json")[0]["wall_s_median"]
    engine = now["engine-db-pg"]
    for quote in (f"it took {engine / now['pgdump-db-pg']:.2f}× the time of pg_dump + pg_restore",
                  f"{engine / now['pgcopydb-db-pg']:.2f}× pgcopydb's",
                  f"the same copy took {before:.2f} s, {before / engine:.1f}× as long"):
        assert quote in text, quote


def _results_list(name: str) -> list[dict[str, Any]]:
    return list(json.loads((ROOT / "perf" / "results" / name).read_text()))
