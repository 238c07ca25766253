"""The Debian-documentation corpora (undo.benchmarks.text.debian) on small stand-ins written
here: a few RST files and LibreOffice-style help pages; the packages themselves are never
needed (CI does not install them)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from undo.benchmarks.text import debian
from undo.benchmarks.text.benchmark import Source
from undo.benchmarks.text.corpus import read_source
from undo.configlib import ConfigError

PROSE = ("The driver registers one interrupt handler per queue and wakes the waiting task "
         "once the device reports that the transfer is complete.")
RST = f"""\
.. SPDX-License-Identifier: GPL-2.0

=====================
The Example Driver
=====================

{PROSE}

  indented literal block: echo 1 > /sys/bus/pci/devices/0000:00:1c.0/remove and more text here

:Author: Someone <someone@example.org> who wrote this driver in the year two thousand and six

Short line.

+------+------+
| a    | b    |
+------+------+
"""
KOREAN = "선택한 항목을 색인에서 삭제합니다. 문서의 항목 텍스트는 삭제되지 않습니다."
HTML = f"""<!DOCTYPE html><html lang="ko"><head><title>동의</title>
<script>var x = "스크립트 안의 한국어 문장은 문서가 아닙니다 절대로";</script></head><body>
<header><p>LibreOffice 7.4 Help 도움말 머리글입니다 머리글입니다</p></header>
<div id="DisplayArea"><h1>동의</h1><p>{KOREAN}</p>
<p>This paragraph is English only and long enough to pass the length check.</p>
<ul><li>표 <b>셀</b> 안의 글자도 한 문서가 됩니다 목록 항목입니다</li></ul></div></body></html>
"""


@pytest.fixture
def roots(tmp_path: Path, monkeypatch) -> Path:
    """Stand-in package trees in place of /usr/share/...; CORPORA pointed at them."""
    doc = tmp_path / "Documentation"
    (doc / "pci").mkdir(parents=True)
    (doc / "pci" / "driver.rst.gz").write_bytes(gzip.compress(RST.encode()))
    (doc / "translations" / "ko_KR").mkdir(parents=True)
    (doc / "translations" / "ko_KR" / "x.rst.gz").write_bytes(gzip.compress(
        f"{PROSE} (a translation, left out)".encode()))
    help_ = tmp_path / "help" / "ko" / "text"
    help_.mkdir(parents=True)
    (help_ / "a.html").write_text(HTML, encoding="utf-8")
    (help_ / "b.html").write_text(HTML, encoding="utf-8")  # duplicates are written once
    monkeypatch.setattr(debian, "CORPORA", {
        "linux-doc": ("linux-doc-6.1", doc, lambda: debian.linux_doc(doc)),
        "korean-help": ("libreoffice-help-ko", tmp_path / "help" / "ko",
                        lambda: debian.korean_help(tmp_path / "help" / "ko"))})
    return tmp_path


def test_english_keeps_prose_and_drops_markup_and_translations(roots):
    docs, n_files = debian.linux_doc(roots / "Documentation")
    assert n_files == 1  # translations/ is not read
    assert docs == [PROSE]  # heading, comment, literal block, field list, table all dropped


def test_korean_keeps_hangul_blocks_outside_scripts_and_headers(roots):
    docs, n_files = debian.korean_help(roots / "help" / "ko")
    assert n_files == 2
    assert docs == [KOREAN, "표 셀 안의 글자도 한 문서가 됩니다 목록 항목입니다"] * 2


def test_build_writes_hash_ordered_unique_jsonl_and_a_manifest(roots, tmp_path):
    out = tmp_path / "corpora"
    manifest = debian.build(out)
    korean = [json.loads(line)["text"] for line in (out / "korean-help.jsonl").open()]
    assert sorted(korean) == sorted({KOREAN, "표 셀 안의 글자도 한 문서가 됩니다 목록 항목입니다"})
    assert korean == debian._hash_order(korean)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["korean-help"]["documents"] == 2
    assert manifest["korean-help"]["files"] == 2
    assert manifest["linux-doc"]["characters"] == len(PROSE)
    assert not list(out.glob("*.tmp"))


def test_build_without_the_package_names_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setattr(debian, "CORPORA", {
        "linux-doc": ("linux-doc-6.1", tmp_path / "absent", lambda: ([], 0))})
    with pytest.raises(SystemExit, match="linux-doc-6.1 is not installed.*scripts/corpora.sh"):
        debian.build(tmp_path / "out")
    assert not (tmp_path / "out" / "linux-doc.jsonl").exists()


def test_a_config_reads_the_built_corpus_by_its_shipped_name(roots, tmp_path, monkeypatch):
    monkeypatch.setenv("UNDO_CORPORA", str(tmp_path / "built"))
    debian.build(debian.corpora_dir())
    src = Source(shipped="korean-help", max_documents=1)
    assert read_source(src, "data.forget[0]") == [debian._hash_order(
        [KOREAN, "표 셀 안의 글자도 한 문서가 됩니다 목록 항목입니다"])[0]]


def test_a_missing_corpus_is_one_error_naming_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("UNDO_CORPORA", str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="corpus 'linux-doc' is not built.*scripts/corpora.sh"):
        read_source(Source(shipped="linux-doc"), "data.retain[0]")


def test_the_setup_script_installs_the_packages_the_builder_reads():
    script = (Path(__file__).resolve().parents[2] / debian.SETUP_COMMAND).read_text()
    assert all(package in script for package, _, _ in debian.CORPORA.values())
    assert "python -m undo.benchmarks.text.debian" in script
