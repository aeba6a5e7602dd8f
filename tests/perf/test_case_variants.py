"""`--cases engine:section.key=value`: an engine case with settings of its job file changed (an A/B side by side)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from perf.cases import Case, setting, variant


def test_settings_are_toml_values_or_bare_words() -> None:
    assert setting("pipeline.batch_rows=32768") == ("pipeline", "batch_rows", 32768)
    assert setting("pipeline.checkpoints=false") == ("pipeline", "checkpoints", False)
    assert setting('source.reader="adbc"') == setting("source.reader=adbc") == ("source", "reader", "adbc")
    for bad in ("batch_rows=1", "pipeline.batch_rows", ".x=1"):
        with pytest.raises(ValueError, match="section.key=value"):
            setting(bad)


def test_a_variant_is_its_own_job_with_the_settings_applied(tmp_path: Path) -> None:
    job, report = tmp_path / "engine.toml", tmp_path / "engine.json"
    job.write_text('[job]\nname = "perf_engine"\n\n[source]\nurl = "postgresql://h/db"\ntable = "t"\n\n'
                   '[pipeline]\ncheckpoints = true\n', encoding="utf-8")
    base = Case("engine", "engine, defaults", ["engine", "run", str(job), "--fresh", "--json", str(report)],
                lambda: None, lambda: 1, 10, report_json=report)
    case = variant(base, ["pipeline.batch_rows=32768", "source.reader=adbc"])
    assert case.key == "engine:pipeline.batch_rows=32768:source.reader=adbc"
    assert case.report_json is not None and case.report_json != report and str(case.report_json) in case.argv
    data = tomllib.loads(Path(case.argv[2]).read_text(encoding="utf-8"))
    assert data["pipeline"] == {"checkpoints": True, "batch_rows": 32768}
    assert data["source"] == {"url": "postgresql://h/db", "table": "t", "reader": "adbc"}
    assert data["job"]["name"] != "perf_engine"  # its runs apart from the base case's
    assert tomllib.loads(job.read_text(encoding="utf-8"))["pipeline"] == {"checkpoints": True}  # base untouched
    with pytest.raises(ValueError, match="only engine cases"):
        variant(Case("copy-limit", "limit", ["bash"], lambda: None, lambda: 1, 10), ["pipeline.workers=1"])
