"""Every finding id has its page in docs/findings, and every page documents a real id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doctor.checks import REGISTRY
from tests.factory import REPO

FINDINGS = REPO / "docs" / "findings"
SECTIONS = (
    "## What it means",
    "## How torch-doctor detects it",
    "## How to fix it",
    "## References",
)


def pages() -> list[Path]:
    return sorted(p for p in FINDINGS.glob("*.md") if p.name != "README.md")


def test_every_registered_finding_id_has_a_page() -> None:
    documented = {p.stem for p in pages()}
    assert set(REGISTRY) - documented == set()


def test_every_page_documents_a_registered_finding_id() -> None:
    assert {p.stem for p in pages()} - set(REGISTRY) == set()


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_page_has_the_four_sections_and_real_links(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {page.stem}\n")
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions, f"{page.name} lacks a section"
    assert positions == sorted(positions), f"{page.name}: sections out of order"
    references = text[positions[-1] :]
    assert re.search(r"https://\S+", references), f"{page.name}: no link in References"


def test_findings_index_links_every_page() -> None:
    index = (FINDINGS / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([a-z0-9-]+)\.md\)", index))
    assert linked == {p.stem for p in pages()}


def test_readme_links_every_finding_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\(docs/findings/([a-z0-9-]+)\.md\)", readme))
    assert linked == set(REGISTRY)


def test_readme_test_command_is_the_one_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_command = [line for line in ci.splitlines() if line.startswith("uv run")][-1]
    assert ci_command == "uv run --group dev pytest"
    assert f"```\n{ci_command}\n```" in readme
