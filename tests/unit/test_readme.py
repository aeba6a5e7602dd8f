"""The README's type map is the one the code produces, and its first lines give the two commands."""

from __future__ import annotations

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
