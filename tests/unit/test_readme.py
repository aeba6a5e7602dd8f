"""The README's type map is the one the code produces, and its first lines give the two commands."""

from __future__ import annotations

import re

from engine.cli import EXAMPLE
from engine.config import SourceSection
from engine.typemap import type_map_markdown
from tests.conftest import ROOT


def test_readme_type_map_matches_the_code() -> None:
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- type-map:start -->"), text.index("<!-- type-map:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == type_map_markdown().strip()


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any("make demo" in line for line in head) and any("make test" in line for line in head)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_and_help_state_the_default_partition_size() -> None:
    default = SourceSection.model_fields["rows_per_partition"].default
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"default is one partition per ([\d,]+) rows", readme) == [f"{default:,}"]
    assert re.findall(r"default is one per ([\d,]+) rows", EXAMPLE) == [f"{default:,}"]
