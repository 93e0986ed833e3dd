"""The book's reference apparatus: every module on an API page, every citation in the bibliography, links that exist.

These read files only (no build, no execution): the ``-W -n`` book build checks the same links again, but a
test fails in seconds and names the file to fix.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pfbook"
BOOK = ROOT / "book"


def chapter_markdown() -> dict[str, str]:
    """The markdown of every chapter: the notebooks' markdown cells and the book's ``.md`` pages."""
    texts = {}
    for nb in sorted(BOOK.glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        texts[nb.name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for md in sorted(BOOK.glob("*.md")) + sorted((BOOK / "api").glob("*.md")):
        texts[str(md.relative_to(BOOK))] = md.read_text(encoding="utf-8")
    return texts


def package_modules() -> list[str]:
    mods = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def toc_files() -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8")))
    return found


def test_every_module_is_documented_on_an_api_page_in_the_toc():
    pages = sorted((BOOK / "api").glob("*.md"))
    documented = set()
    for page in pages:
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)$", page.read_text(encoding="utf-8"), re.M))
    missing = [m for m in package_modules() if m not in documented]
    assert not missing, (
        f"modules without an API page: {missing}; add an `.. automodule::` block for each to the "
        f"layer's page in book/api/ (and to the table in book/api.md)"
    )
    overview = (BOOK / "api.md").read_text(encoding="utf-8")
    unlisted = [m for m in package_modules() if not re.search(rf"^   {re.escape(m)}$", overview, re.M)]
    assert not unlisted, f"modules missing from the autosummary tables of book/api.md: {unlisted}"
    in_toc = set(toc_files())
    absent = [f"book/api/{p.stem}" for p in pages if f"book/api/{p.stem}" not in in_toc]
    assert not absent and "book/api" in in_toc and "book/references" in in_toc, (
        f"API pages or the bibliography missing from _toc.yml: {absent or ['book/api', 'book/references']}"
    )


def bib_keys() -> list[str]:
    return re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(encoding="utf-8"), re.M)


def test_bibliography_has_no_duplicates_and_every_entry_has_author_title_year():
    text = (ROOT / "references.bib").read_text(encoding="utf-8")
    keys = bib_keys()
    assert len(keys) == len(set(keys)), (
        f"duplicate keys in references.bib: {sorted({k for k in keys if keys.count(k) > 1})}"
    )
    for entry in re.split(r"^@", text, flags=re.M)[1:]:
        key = entry.split("{", 1)[1].split(",", 1)[0]
        for field in ("author", "title", "year"):
            assert re.search(rf"^\s*{field}\s*=", entry, re.M), f"references.bib entry {key} has no {field}"


CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def test_every_citation_is_in_the_bibliography_and_every_entry_is_cited():
    keys = set(bib_keys())
    cited: dict[str, set[str]] = {}
    for name, text in chapter_markdown().items():
        for group in CITE.findall(text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(name)
    unknown = {k: sorted(v) for k, v in cited.items() if k not in keys}
    assert not unknown, f"citations of keys that references.bib lacks (key: pages): {unknown}"
    uncited = sorted(keys - set(cited))
    assert not uncited, (
        f"references.bib entries no chapter cites: {uncited}; cite them where the work is named, "
        f"or remove them (book/references.md lists cited entries only)"
    )


def test_the_four_papers_are_cited_by_their_chapters():
    texts = chapter_markdown()
    for chapter, key in [
        ("04_constrained_diffusion.ipynb", "hoseinpour2025constrained"),
        ("05_diffopf.ipynb", "hoseinpour2025diffopf"),
        ("06_physics_informed_ddpm.ipynb", "wang2025physics"),
        ("07_tsdm_recovery.ipynb", "pei2024tsdm"),
    ]:
        keys = {k.strip() for group in CITE.findall(texts[chapter]) for k in group.split(",")}
        assert key in keys, f"{chapter} does not cite its paper ({key})"


PY_ROLE = re.compile(r"\{py:(mod|func|class|meth|data|attr)\}`([^`]+)`")


def resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_api_links_in_the_chapters_name_existing_objects():
    links = [
        (name, kind, target) for name, text in chapter_markdown().items() for kind, target in PY_ROLE.findall(text)
    ]
    assert links, "the chapters link no names of the package; the API reference is unused"
    broken = []
    for name, kind, target in links:
        target = target.rsplit("<", 1)[-1].rstrip(">").lstrip("~").strip()
        try:
            obj = resolve(target)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{name}: {{py:{kind}}}`{target}` ({exc!r})")
            continue
        if kind == "mod" and not hasattr(obj, "__path__") and not hasattr(obj, "__file__"):
            broken.append(f"{name}: {{py:mod}}`{target}` is not a module")
    assert not broken, "chapter links to names the package does not have:\n" + "\n".join(broken)


SEED_NAME = re.compile(r"\bseeds?[ _-]?0" + r"0\d", re.I)


@pytest.mark.parametrize(
    "where", ["pfbook", "tests", "benchmarks", "book", "README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
)
def test_papers_are_named_by_their_authors_not_by_a_file_number(where):
    path = ROOT / where
    files = (
        [path]
        if path.is_file()
        else [p for p in path.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".ipynb", ".yml", ".txt"}]
    )
    hits = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if SEED_NAME.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, "cite the paper's authors (e.g. 'Hoseinpour & Dvorkin, eq. 15') instead of:\n" + "\n".join(hits)


@pytest.mark.parametrize("notebook", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.name)
def test_chapters_are_committed_without_outputs(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    stale = [
        i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not stale, (
        f"{notebook.name}: cells {stale} carry outputs or execution counts; clear them "
        f"(jupyter nbconvert --clear-output --inplace {notebook.relative_to(ROOT)}): the book build "
        f"executes every chapter"
    )
