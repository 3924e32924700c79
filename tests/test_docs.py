"""The repository stands on its own: its README, docs, recipes and code cite only what is in the repository
(or public papers and repositories), every section of docs/imm.md and docs/peers.md that the code cites
exists, and the README says what was measured and on what, not how the project was made."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "recipes").glob("*.yaml"),
                *(REPO / "bench").glob("*"), *(REPO / "fewstep").rglob("*.py"), *(REPO / "plugins").rglob("*.py")])


@pytest.mark.parametrize("path", [p for p in TEXTS if p.is_file()], ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_points_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "research/imm.md" not in text and "research/peers.md" not in text
    assert "/work/" not in text


def test_every_cited_section_of_the_docs_exists():
    cited = set()
    for path in TEXTS:
        if path.is_file():
            for doc, sections in re.findall(r"docs/(imm|peers)\.md (§[\d.\-, §]+\d)", path.read_text(encoding="utf-8")):
                for sec in re.findall(r"\d+(?:\.\d+)?", sections):
                    cited.add((doc, sec))
    assert ("imm", "4.8") in cited and ("peers", "3.4") in cited  # the scan finds citations
    for doc, sec in sorted(cited):
        text = (REPO / "docs" / f"{doc}.md").read_text(encoding="utf-8")
        major, _, minor = sec.partition(".")
        heading = rf"^#+ {re.escape(sec)}[ .]" if minor else rf"^## {major}\. "
        if not re.search(heading, text, flags=re.M):  # peers.md §11.2: item 2 of section 11's list
            assert re.search(rf"^## {major}\. ", text, flags=re.M) and re.search(rf"^{minor}\. ", text, flags=re.M), \
                (doc, sec)


def test_the_readme_says_what_was_measured_not_how_the_project_was_made():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for phrase in (r"\blent\b", r"\bsessions?\b", r"\bissue \d"):
        assert not re.search(phrase, text, flags=re.I), phrase
