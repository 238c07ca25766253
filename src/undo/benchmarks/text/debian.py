"""Real-text corpora built from documentation that Debian packages ship (issue 21, item 7).

    scripts/corpora.sh            # apt-installs the packages, then runs this module
    python -m undo.benchmarks.text.debian [OUT_DIR]   # only the build (packages installed)

Two corpora, one JSONL file each (`{"text": ...}` a line) in `corpora_dir()`:

- `linux-doc`: English prose, the Linux kernel's documentation (package linux-doc-6.1,
  `Documentation/**/*.rst.gz`, the `translations/` folder left out), one document per
  paragraph; literal blocks, tables, directives and heading rules are dropped so that what
  remains is running English text.
- `korean-help`: Korean, LibreOffice's help (package libreoffice-help-ko, the HTML pages
  under `/usr/share/libreoffice/help/ko`), one document per paragraph, heading, list item
  or table cell whose letters are mostly Hangul.

Documents are written in the order of their text's sha256, so any prefix (a config's
`max_documents`) is a uniform sample of the whole corpus rather than its first folders;
exact duplicates are written once. `manifest.json` beside them records, per corpus, the
package, the files read, documents, characters and megabytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path

SETUP_COMMAND = "scripts/corpora.sh"
LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/Documentation")
KOREAN_HELP = Path("/usr/share/libreoffice/help/ko")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_RULE = re.compile(r"^([=\-~^*#+`'\"_.:])\1{2,}\s*$")  # an RST heading over/underline
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def corpora_dir() -> Path:
    """Where the built corpora live: $UNDO_CORPORA, else ~/.cache/undo/corpora."""
    env = os.environ.get("UNDO_CORPORA")
    return Path(env) if env else Path.home() / ".cache" / "undo" / "corpora"


# ----------------------------------------------------------------------- English


def _prose(paragraph: str) -> str | None:
    """The paragraph as one line of running text, or None if it is not prose: an indented
    (literal) block, a directive or comment, a table, a list of fields, or too short."""
    lines = [ln for ln in paragraph.splitlines() if not _RULE.match(ln.strip())]
    if not lines or lines[0][:1].isspace():
        return None
    first = lines[0].lstrip()
    if first.startswith(("..", ":", "|", "+-", "=", "$", "#")):
        return None
    text = " ".join(ln.strip() for ln in lines)
    letters = sum(c.isalpha() or c == " " for c in text)
    if len(text) < 80 or letters < 0.8 * len(text):
        return None
    return text


def linux_doc(root: Path = LINUX_DOC) -> tuple[list[str], int]:
    """English paragraphs of the kernel documentation, and the number of files read."""
    files = sorted(f for f in root.rglob("*.rst.gz")
                   if "translations" not in f.relative_to(root).parts)
    docs = []
    for f in files:
        text = gzip.decompress(f.read_bytes()).decode("utf-8", errors="replace")
        docs += [p for p in map(_prose, _PARAGRAPH.split(text)) if p is not None]
    return docs, len(files)


# ----------------------------------------------------------------------- Korean


class _HelpText(HTMLParser):
    """The text of a LibreOffice help page's blocks (p, h1-h6, li, td), one per block."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td"}
    SKIP = {"script", "style", "header", "aside", "nav"}

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._buf: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buf.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if text:
            self.blocks.append(text)


def _korean(block: str) -> bool:
    letters = sum(c.isalpha() for c in block)
    return len(block) >= 20 and letters > 0 and len(_HANGUL.findall(block)) >= 0.5 * letters


def korean_help(root: Path = KOREAN_HELP) -> tuple[list[str], int]:
    """Korean blocks of the LibreOffice help pages, and the number of files read."""
    files = sorted(root.rglob("*.html"))
    docs = []
    for f in files:
        parser = _HelpText()
        parser.feed(f.read_text(encoding="utf-8", errors="replace"))
        parser.close()
        parser._flush()
        docs += [b for b in parser.blocks if _korean(b)]
    return docs, len(files)


# ----------------------------------------------------------------------- build

CORPORA: dict[str, tuple[str, Path, Callable[[], tuple[list[str], int]]]] = {
    "linux-doc": ("linux-doc-6.1", LINUX_DOC, linux_doc),
    "korean-help": ("libreoffice-help-ko", KOREAN_HELP, korean_help),
}


def _hash_order(docs: Iterable[str]) -> list[str]:
    unique = {hashlib.sha256(d.encode()).digest(): d for d in docs}
    return [unique[h] for h in sorted(unique)]


def build(out: Path) -> dict:
    """Write every corpus's JSONL and manifest.json into `out`; the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (package, root, read) in CORPORA.items():
        if not root.is_dir():
            raise SystemExit(f"error: {root} not found: the Debian package {package} is not "
                             f"installed; install it with: {SETUP_COMMAND}")
        docs, n_files = read()
        docs = _hash_order(docs)
        tmp = out / f"{name}.jsonl.tmp"  # renamed when whole: no half-written corpus
        with tmp.open("w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{name}.jsonl")
        chars = sum(map(len, docs))
        manifest[name] = {"package": package, "source": str(root), "files": n_files,
                          "documents": len(docs), "characters": chars,
                          "mb_utf8": round(sum(len(d.encode()) for d in docs) / 1e6, 2)}
        print(f"{name}: {n_files} files -> {len(docs)} documents, "
              f"{manifest[name]['mb_utf8']} MB", file=sys.stderr)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else corpora_dir())
