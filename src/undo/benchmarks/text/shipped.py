"""Real text that installed packages ship: corpora that need no download at run time.

A text source `shipped: NAME` reads one of these (`undo.benchmarks.text.benchmark.Source`):

- `python-docs`: English prose, the Python reference topics that CPython ships for
  `help()` (`pydoc_data.topics`), one document per paragraph (~460k characters).
- `python-source`: Python code, the standard library's own source files of a fixed list
  of pure-Python packages, one document per top-level block (def/class/statement run).
- `korean-law`, `korean-bills`: Korean, the constitution of the Republic of Korea and ten
  National Assembly bills that the `konlpy` wheel carries (`konlpy/data/corpus/kolaw`,
  `.../kobill`), one document per paragraph. `pip install "undo[language]"` brings them;
  konlpy itself (which needs Java) is never imported, only its data files are read.
- `linux-doc`, `korean-help`: English prose from the Linux kernel's documentation and
  Korean from LibreOffice's help, which Debian packages ship; `scripts/corpora.sh`
  apt-installs the packages and builds them into JSONL files (`undo.benchmarks.text.debian`,
  sizes in docs/benchmarks.md). Without them a config that names one fails with an error
  naming that command.
"""

from __future__ import annotations

import importlib.util
import re
import sysconfig
from collections.abc import Callable
from pathlib import Path

from ...configlib import ConfigError

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
# Pure-Python standard-library packages whose source is always installed with CPython.
STDLIB_PACKAGES = ("json", "email", "http", "logging", "xml/dom", "urllib", "importlib",
                   "concurrent/futures", "asyncio", "unittest")


def _paragraphs(text: str, min_chars: int = 40) -> list[str]:
    return [p.strip() for p in _PARAGRAPH.split(text) if len(p.strip()) >= min_chars]


def python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [p for name in sorted(topics) for p in _paragraphs(topics[name])]


def python_source() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for pkg in STDLIB_PACKAGES:
        for f in sorted((root / pkg).glob("*.py")):
            # Top-level blocks: a new block starts at a line that is not indented.
            blocks = re.split(r"\n(?=\S)", f.read_text(encoding="utf-8"))
            docs += [b.strip() for b in blocks if len(b.strip()) >= 80]
    return docs


def _konlpy(folder: str) -> Callable[[], list[str]]:
    def read() -> list[str]:
        spec = importlib.util.find_spec("konlpy")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("the shipped Korean corpora need the konlpy package; install "
                              "them with: pip install \"undo[language]\"")
        d = Path(list(spec.submodule_search_locations)[0]) / "data" / "corpus" / folder
        return [p for f in sorted(d.glob("*.txt"))
                for p in _paragraphs(f.read_text(encoding="utf-8"), min_chars=20)]

    return read


def _built(name: str) -> Callable[[], list[str]]:
    def read() -> list[str]:
        from .debian import SETUP_COMMAND, corpora_dir
        from .jsonl import read_jsonl

        path = corpora_dir() / f"{name}.jsonl"
        if not path.is_file():
            raise ConfigError(f"the corpus '{name}' is not built ({path} not found); build it "
                              f"with: {SETUP_COMMAND} (apt-installs the Debian packages that "
                              f"ship its text; $UNDO_CORPORA picks another folder)")
        return read_jsonl(path, "text", f"shipped:{name}")

    return read


SHIPPED: dict[str, Callable[[], list[str]]] = {
    "python-docs": python_docs,
    "python-source": python_source,
    "korean-law": _konlpy("kolaw"),
    "korean-bills": _konlpy("kobill"),
    "linux-doc": _built("linux-doc"),
    "korean-help": _built("korean-help"),
}


def shipped_documents(name: str, key: str) -> list[str]:
    if name not in SHIPPED:
        raise ConfigError(f"config key '{key}.shipped': got {name!r}; valid: "
                          f"{', '.join(SHIPPED)}")
    return SHIPPED[name]()
