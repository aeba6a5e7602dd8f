"""Rewrite the README's perf table from perf/results/latest.json (`python -m perf.readme`).

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


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.index("<!-- perf:start -->"), text.index("<!-- perf:end -->")
    results = json.loads((ROOT / "perf" / "results" / "latest.json").read_text(encoding="utf-8"))
    block = "\n".join(["<!-- perf:start -->", *HEADER, *table_rows(results)]) + "\n"
    readme.write_text(text[:start] + block + text[end:], encoding="utf-8")
    print(f"README perf table: {len(table_rows(results))} cases from perf/results/latest.json")


if __name__ == "__main__":
    main()
