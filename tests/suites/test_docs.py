"""The documentation's references hold: every results file a doc cites exists, every results
file is cited by a doc, the experiments index lists every script and every results file,
every relative link resolves, and the docs site's pages link only to each other.

A doc cites a results file either by its path (`experiments/results/NAME.json`, which must
exist) or by its bare name (`NAME.json`, counted where such a file exists: docs also name
run-folder files such as `summary.json`). Globs (`precision_side_by_side*.json`), brace
lists (`eval_waste_same_{summary,stages}_smoke.json`) and the `sweeps/` folder count for
every file they match. The index (experiments/README.md) is checked like a doc but is not a
citation: each results file needs a doc that says what it shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
INDEX = ROOT / "experiments" / "README.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TOKEN = re.compile(r"[A-Za-z0-9_./*{},-]*[A-Za-z0-9_*}]\.json|experiments/results/sweeps/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def results_files() -> set[str]:
    return {p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*") if p.is_file()}


def expand(token: str) -> list[str]:
    """`a_{b,c}_d.json` -> [a_b_d.json, a_c_d.json] (one brace list at a time)."""
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [x for alt in m.group(1).split(",")
            for x in expand(token[:m.start()] + alt + token[m.end():])]


def cited(text: str) -> tuple[set[str], list[str]]:
    """(results files the text cites, the paths it gives that match no file)."""
    files, missing = set(), []
    for raw in TOKEN.findall(text):
        token = raw.lstrip("./,{")
        for name in expand(token):
            path = name.startswith(("experiments/results/", "benchmarks/results/"))
            rel = name.split("results/", 1)[1] if path else name
            if rel.endswith("/"):
                hits = list((RESULTS / rel).glob("*.json"))
            elif "/" in rel:
                hits = list(RESULTS.glob(rel))
            else:
                hits = list(RESULTS.rglob(rel))
            files |= {h.relative_to(RESULTS).as_posix() for h in hits}
            if (path and not hits) or name.startswith("benchmarks/results/"):
                missing.append(name)
    return files, missing


def test_every_cited_results_file_exists():
    bad = {}
    for doc in [*DOCS, INDEX]:
        _, missing = cited(doc.read_text())
        if missing:
            bad[doc.relative_to(ROOT).as_posix()] = missing
    assert not bad, f"docs cite results files that do not exist: {bad}"


def test_every_results_file_is_cited_by_a_doc():
    seen: set[str] = set()
    for doc in DOCS:
        seen |= cited(doc.read_text())[0]
    orphans = sorted(results_files() - seen)
    assert not orphans, (f"results files no doc cites (cite them where they are read, or "
                         f"delete them if a newer run replaced them): {orphans}")


def test_the_index_lists_every_script_and_results_file():
    text = INDEX.read_text()
    scripts = sorted(p.name for p in (ROOT / "experiments").glob("*.py"))
    assert not [s for s in scripts if f"`{s}`" not in text], "scripts missing from the index"
    listed = cited(text)[0]
    assert not sorted(results_files() - listed), "results files missing from the index"
    for doc in re.findall(r"docs/[\w.-]+\.md", text):
        assert (ROOT / doc).is_file(), doc


def test_relative_links_resolve():
    bad = []
    for doc in [*DOCS, INDEX]:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not bad, bad


def test_site_pages_link_only_to_site_pages():
    """mkdocs --strict warns on a link out of docs/: name such files as code paths."""
    bad = []
    for doc in (ROOT / "docs").glob("*.md"):
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to((ROOT / "docs").resolve()):
                bad.append(f"{doc.name}: {target}")
    assert not bad, bad


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav] if nav.endswith(".md") else []
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return []


def test_site_nav_holds_every_page():
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = _nav_pages(cfg["nav"])
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(pages) == on_disk, "add every docs/ page to mkdocs.yml's nav, and only those"


def test_api_page_documents_every_public_name_where_it_lives():
    """The API page names each public function by its module (`undo._EXPORTS`), so moving
    one fails here with its name rather than as an unresolved identifier in mkdocs."""
    import undo

    text = (ROOT / "docs" / "api.md").read_text()
    missing = [f"undo.{mod}.{name}" for name, mod in undo._EXPORTS.items()
               if f"::: undo.{mod}.{name}\n" not in text]
    assert not missing, f"docs/api.md: write these as '::: <path>': {missing}"


def test_results_page_tables_are_the_reports_own():
    """docs/results.md quotes the default study's table as `undo run` prints it: each quoted
    section must be what the report prints from the committed summary today."""
    import json

    from undo.report.table import format_table

    printed = format_table(json.loads((RESULTS / "study_faithful_summary.json").read_text()))
    blocks = re.findall(r"```\n(.*?)```", (ROOT / "docs" / "results.md").read_text(), re.S)
    sections = [s for b in blocks for s in b.strip("\n").split("\n\n")]
    assert sections
    assert not [s.splitlines()[0] for s in sections if s not in printed]
