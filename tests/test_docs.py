"""The docs: settings tables as their declarations generate them, and every link leading somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from configuration import REPO_ROOT
from configuration.declared import generated_block
from devstack import settings_docs

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(line.lstrip("#")) for line in outside_code.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("name", list(settings_docs.TABLES))
def test_each_settings_table_is_what_its_declaration_generates(name):
    page, table = settings_docs.TABLES[name]

    assert generated_block(page.read_text(), name) == table(), (
        f"{page.name}'s {name} table is stale: run `.venv/bin/python -m devstack.settings_docs`"
    )


def reaches(page: Path, target: str) -> bool:
    """Whether a relative link from `page` names a file that exists, and a heading it has."""
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    if not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in anchors(linked.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    links = [target for target in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", target)]

    assert [target for target in links if not reaches(page, target)] == []


def test_the_readme_stays_a_five_minute_read():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) < 250
