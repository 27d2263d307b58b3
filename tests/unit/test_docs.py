"""The docs cannot drift from the code: the options page is what its generator
writes from the command line now, every option --help lists is documented,
the README stays a front door, every relative link leads to a file, and the
module map names exactly the modules there are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts.options_page import COMMAND, PAGE, llm_entry_command, options_table, with_table

from repo_paths import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
ARCHITECTURE = DOCS / "architecture.md"
TESTING = DOCS / "testing.md"
PACKAGE = REPO / "entrypoint"
README_MOST_LINES = 220

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
MODULE_PATH = re.compile(r"\bentrypoint/[\w/]*\w\.py\b")
HELP_OPTION = re.compile(r"^\s{1,4}(?:-\w, )?(--[a-z][a-z-]*)", re.MULTILINE)
TEST_COUNT = re.compile(r"\b\d[\d,]*\s+tests\b")


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text())
            if not re.match(r"[a-z][a-z+.-]*:", target)]   # http:, https:, mailto:


def test_the_options_page_is_what_its_generator_writes_from_the_command_line_now() -> None:
    page = PAGE.read_text()
    assert page == with_table(page, options_table()), f"{name(PAGE)} is out of date: run `{COMMAND}`"


def test_every_option_llm_entry_help_lists_is_in_the_docs() -> None:
    shown = CliRunner().invoke(llm_entry_command(), ["--help"], prog_name="llm-entry")
    assert shown.exit_code == 0, shown.output
    options = HELP_OPTION.findall(shown.output.split("Options:", 1)[1])
    assert "--model" in options and "--dry-run" in options   # the pattern still reads --help
    docs = "\n".join(page.read_text() for page in PAGES)
    assert [option for option in options if option not in docs] == []


def test_the_readme_stays_a_front_door() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MOST_LINES, (f"README.md has {lines} lines, more than {README_MOST_LINES}: "
                                        "move the detail to a page of docs/ and link it")


def test_the_docs_index_links_every_page_of_docs() -> None:
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in relative_links(DOCS / "README.md")}
    pages = {page.resolve() for page in DOCS.glob("*.md") if page.name != "README.md"}
    assert sorted(name(page) for page in pages - linked) == [], "pages missing from docs/README.md"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md":
            if anchor not in {slug(heading) for heading in HEADING.findall(linked.read_text())}:
                broken.append(f"{target}: {name(linked)} has no heading with that anchor")
    assert broken == [], f"{name(page)} links to what is not there"


def test_the_module_map_names_every_module_of_the_package_and_no_other() -> None:
    modules = {str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    mapped = set(MODULE_PATH.findall(ARCHITECTURE.read_text()))
    assert sorted(modules - mapped) == [], "modules missing from the module map in docs/architecture.md"
    assert sorted(mapped - modules) == [], "the module map in docs/architecture.md names modules that are gone"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_the_docs_name_only_modules_that_exist(page: Path) -> None:
    assert [module for module in MODULE_PATH.findall(page.read_text()) if not (REPO / module).is_file()] == []


@pytest.mark.parametrize("page", [page for page in PAGES if page != TESTING], ids=name)
def test_test_counts_are_written_only_on_the_testing_page(page: Path) -> None:
    assert TEST_COUNT.findall(page.read_text()) == [], f"test counts belong in {name(TESTING)} alone"
