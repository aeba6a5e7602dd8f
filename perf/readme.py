"""Rewrite the README's perf tables from perf/results/latest.json, wholedb-latest.json and manytables-latest.json
(`python -m perf.readme`).

The prose around the table quotes ratios from the same file; tests/unit/test_readme.py checks both, so after
`make perf` run this, then update the quoted figures the test names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["| case | `--cases` | median s | × COPY limit | peak RSS MB | CPU s |", "|---|---|---:|---:|---:|---:|"]


def table_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        if r["status"] != "ok":
            continue
        walls = r["wall_s_all"]
        label = r["label"].replace("->", "→").replace("|", "\\|")
        rows.append(f"| {label} | `{r['case']}` | {r['wall_s_median']:.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
                    f"{r['ratio_to_limit']:.2f} | {r['peak_rss_mb']:,.0f} | {r['cpu_s_median']:.2f} |")
    return rows


def wholedb_block(results: list[dict[str, Any]]) -> str:
    """The README's whole-database table: `make perf WHOLEDB=1`'s, as it prints it."""
    from perf.wholedb import table_db

    return table_db(results)


def _replace(text: str, name: str, block: str) -> str:
    start, end = text.index(f"<!-- {name}:start -->"), text.index(f"<!-- {name}:end -->")
    return text[:start] + f"<!-- {name}:start -->\n" + block + "\n" + text[end:]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    results = json.loads((ROOT / "perf" / "results" / "latest.json").read_text(encoding="utf-8"))
    text = _replace(text, "perf", "\n".join([*HEADER, *table_rows(results)]))
    wholedb = json.loads((ROOT / "perf" / "results" / "wholedb-latest.json").read_text(encoding="utf-8"))
    text = _replace(text, "wholedb", wholedb_block(wholedb))
    many = json.loads((ROOT / "perf" / "results" / "manytables-latest.json").read_text(encoding="utf-8"))
    text = _replace(text, "manytables", wholedb_block(many))
    readme.write_text(text, encoding="utf-8")
    print(f"README perf tables: {len(table_rows(results))} cases from perf/results/latest.json, "
          f"{len(wholedb)} from wholedb-latest.json, {len(many)} from manytables-latest.json")


if __name__ == "__main__":
    main()
