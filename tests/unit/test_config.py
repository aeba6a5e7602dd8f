"""The job file: the public contract parses; every mistake is named with its key and fix, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config, parse_config
from engine.errors import ConfigError
from engine.sql import TableName, parse_table_name, quote_ident
from engine.urls import redact

MINIMAL = """
[job]
name = "orders_copy"

[source]
url = "postgresql://user@127.0.0.1:5432/src"   # also mysql://user@host:3306/db and sqlite:///path/to/file.db
table = "public.orders"
partition_on = "id"      # optional
partitions = 8           # optional

[target]
url = "postgresql://user@127.0.0.1:5432/dst"
table = "public.orders"
mode = "append"          # append | replace | upsert
key = ["id"]             # required for upsert
"""


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    return caught.value.problems


def test_the_documented_minimal_job_parses(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(MINIMAL)
    config = load_config(path)
    assert config.source.partitions == 8 and config.target.mode == "append" and config.target.key == ["id"]
    assert config.source_table == TableName("public", "orders")
    assert config.pipeline.workers >= 1 and config.validate_.max_error_rate == 0.01


def test_every_problem_is_reported_at_once_with_key_and_fix(tmp_path: Path) -> None:
    text = MINIMAL.replace('partition_on = "id"', 'partiton_on = "id"').replace("partitions = 8", 'partitions = "8x"')
    text = text.replace('mode = "append"', 'mode = "merge"') + "\n[pipline]\nworkers = 2\n"
    problems = problems_of(tmp_path, text)
    joined = "\n".join(problems)
    assert len(problems) == 4
    assert "`source.partiton_on`: unknown key. Did you mean `partition_on`?" in joined
    assert "`source.partitions`" in joined and "'8x'" in joined
    assert "`target.mode`" in joined and "'append', 'replace' or 'upsert'" in joined
    assert "`pipline`: unknown key. Did you mean `pipeline`?" in joined


def test_missing_section_and_values(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[job]\nname = "x"\n[source]\nurl = "sqlite:///tmp/x.db"\n')
    joined = "\n".join(problems)
    assert "missing section [target]" in joined and "url, table, mode" in joined
    assert "set exactly one of `source.table`, `source.query` or `source.tables`" in joined


def test_upsert_needs_key_and_target_must_be_postgres(tmp_path: Path) -> None:
    text = MINIMAL.replace('mode = "append"', 'mode = "upsert"').replace('key = ["id"]', "")
    text = text.replace("postgresql://user@127.0.0.1:5432/dst", "mysql://user@127.0.0.1/dst")
    joined = "\n".join(problems_of(tmp_path, text))
    assert "`target.key` is required when mode = \"upsert\"" in joined
    assert "`target.url`: the target must be PostgreSQL" in joined


def test_env_interpolation_and_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_PW", "canary-Pa55word")
    text = MINIMAL.replace("user@127.0.0.1:5432/src", "user:${ENGINE_TEST_PW}@127.0.0.1:5432/src")
    path = tmp_path / "job.toml"
    path.write_text(text)
    config = load_config(path)
    assert "canary-Pa55word" in config.source_url.raw
    assert "canary-Pa55word" not in str(config.source_url) and "canary-Pa55word" not in repr(config.source_url)
    assert redact("failed: could not connect as canary-Pa55word") == "failed: could not connect as ***"
    monkeypatch.delenv("ENGINE_TEST_PW")
    joined = "\n".join(problems_of(tmp_path, text))
    assert "`source.url`: environment variable ENGINE_TEST_PW is not set" in joined


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems_of(tmp_path, "[job\nname=")[0]
    with pytest.raises(ConfigError, match="cannot read the job file"):
        load_config(tmp_path / "nope.toml")


def test_bad_urls_and_table_names(tmp_path: Path) -> None:
    text = MINIMAL.replace("postgresql://user@127.0.0.1:5432/src", "oracle://x/y").replace(
        'table = "public.orders"\npartition_on', 'table = "a.b.c"\npartition_on')
    joined = "\n".join(problems_of(tmp_path, text))
    assert "unsupported URL scheme 'oracle'" in joined and "`source.table`" in joined


def test_parse_config_accepts_a_dict() -> None:
    data = {"job": {"name": "j"}, "source": {"url": "sqlite:///tmp/a.db", "table": "t"},
            "target": {"url": "postgresql://u@h/d", "table": "t"}}
    assert parse_config(data, Path("x.toml")).target_table == TableName("public", "t")


@pytest.mark.parametrize(("text", "expected"), [
    ("orders", TableName(None, "orders")),
    ("public.orders", TableName("public", "orders")),
    ('"My Schema"."Odd ""Name"" Table"', TableName("My Schema", 'Odd "Name" Table')),
    ('"a.b".c', TableName("a.b", "c")),
])
def test_table_names(text: str, expected: TableName) -> None:
    assert parse_table_name(text) == expected


def test_quoting_doubles_quotes_and_suffixes_fit_63_bytes() -> None:
    assert quote_ident('x"; DROP TABLE t;--') == '"x""; DROP TABLE t;--"'
    assert quote_ident("a`b", "mysql") == "`a``b`"
    long = TableName("public", "é" * 40)
    assert len(long.with_suffix("__engine_new").name.encode()) <= 63


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1:3306/db", "sqlite:////tmp/x.db"])
def test_the_adbc_reader_is_refused_for_other_sources(tmp_path: Path, url: str) -> None:
    text = MINIMAL.replace("postgresql://user@127.0.0.1:5432/src", url).replace(
        'partitions = 8', 'partitions = 8\nreader = "adbc"')
    problems = problems_of(tmp_path, text)
    assert any('reader = "adbc"` reads PostgreSQL sources only' in p for p in problems), problems


def test_the_adbc_reader_is_accepted_for_postgresql(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(MINIMAL.replace('partitions = 8', 'partitions = 8\nreader = "adbc"'))
    assert load_config(path).source.reader == "adbc"
    path.write_text(MINIMAL)
    assert load_config(path).source.reader == "connectorx"
