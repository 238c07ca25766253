"""`undo report RUN_A RUN_B --out DIR` (report/compare.py): two real studies on one page.

The committed summaries of the arithmetic study before and after issue 21 (noise.norms
keep -> toward_init, the paper's attack) stand in for the paper's MaxEnt-vs-RMU pair."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from undo.cli import main
from undo.report import SummaryError
from undo.report.compare import Run, config_differences, load_runs, shared_budgets, titles

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
FIGS = ("relearning", "frontier", "frontier_flops", "pareto")


def _run(root: Path, name: str, summary: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    shutil.copy(RESULTS / summary, d / "summary.json")
    return d


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return (_run(root, "toward-init", "study_faithful_summary.json"),
            _run(root, "keep", "study_summary.json"))


@pytest.fixture(scope="module")
def compared(two_runs, tmp_path_factory):
    """The comparison, written once through the CLI: (its folder, what it printed)."""
    out = tmp_path_factory.mktemp("cmp") / "page"
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_comparison_labels_runs_by_name_and_difference(two_runs, compared):
    out, printed = compared
    runs = load_runs(two_runs)
    assert [r.label for r in runs] == ["toward-init", "keep"]
    assert config_differences(runs) == {  # the earlier summary predates several keys
        "out_dir": ["runs", "benchmarks/results/study-run"],  # experiments/ was then benchmarks/
        "precision": ["fp32", "(absent)"],
        "progress": [False, True],
        "report_to": [[], "(absent)"],
        "noise.norms": ["toward_init", "keep"],
        "distill.data_order": ["per_seed", "(absent)"],
        "distill.inputs": ["mix", "(absent)"],
        "attack.retain_fraction": [None, 0.0],
        "attack.precision": ["bf16-mixed", "(absent)"],
        "study.run_seeds": [[], "(absent)"],
        "study.oracles": [False, True],
        "study.attacks": [["paper", "forget_only"], "(absent)"]}
    # Panel titles name what changed results, keys both configs hold first: not
    # `progress` (how the run printed) nor `precision` (absent: the older run predates it).
    assert titles(runs, config_differences(runs)) == [
        "toward-init\nnoise.norms=toward_init\nattack.retain_fraction=null (+7 more)",
        "keep\nnoise.norms=keep\nattack.retain_fraction=0.0 (+7 more)"]
    assert shared_budgets(runs) == [0, 40, 100]
    assert printed.startswith("compared toward-init, keep at 100 attack steps; config keys "
                              "that differ: out_dir, precision, progress, report_to, "
                              "noise.norms, distill.data_order, distill.inputs, "
                              "attack.retain_fraction, attack.precision, study.run_seeds, "
                              "study.oracles, study.attacks\n")
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.html", "table.csv"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        f"{n}.{fmt}" for n in FIGS for fmt in ("png", "svg", "pdf"))
    page = (out / "report.html").read_text()
    assert "<h1>UNDO studies compared: toward-init, keep</h1>" in page
    assert "<td>noise.norms</td><td>toward_init</td><td>keep</td>" in page
    assert page.count("data:image/png;base64,") == len(FIGS)
    for name in FIGS:
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert f"base64,{base64.b64encode(png).decode()}" in page
        svg = (out / "plots" / f"{name}.svg").read_bytes()
        # Text in the SVG is drawn as paths, each preceded by a comment with the string:
        # every panel names its run and (but the pareto grid's) what sets it apart.
        for label in ("toward-init", "keep"):
            assert f"<!-- {label}".encode() in svg, (name, label)
        for key in ("noise.norms=toward_init", "noise.norms=keep"):
            assert (key.encode() in svg) == (name != "pareto"), (name, key)
        assert (out / "plots" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    # The side-by-side table: one line per arm, both runs' numbers, intervals where a run
    # has them (the earlier summary has none).
    assert "<th>arm</th>" in page and "toward-init (the paper&#x27;s attack)" in page
    assert "<td>UNDO α=0.8</td><td>0.170 [0.127, 0.220]</td><td>0.87 [0.80, 0.93]</td>" in page
    assert "http://" not in page and "https://" not in page


def test_comparison_csv_has_every_run(compared):
    with (compared[0] / "table.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == {"toward-init", "keep"}
    keep = [r for r in rows if r["run"] == "keep"]
    assert {r["interval"] for r in keep} == {"none (mean over seeds)"}
    s = json.loads((RESULTS / "study_faithful_summary.json").read_text())
    r = next(r for r in rows if r["run"] == "toward-init" and r["attack"] == "forget_only"
             and r["budget"] == "40" and r["row"] == "UNDO α=0.5")
    want = s["intervals"]["attacks"]["forget_only"]["40"]["robustness"]["UNDO α=0.5"]
    assert (float(r["robustness"]), float(r["robustness_lo"]), float(r["robustness_hi"])) == \
        (want["point"], want["lo"], want["hi"])


def _fails(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_cli_compare_bad_input_writes_nothing(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "out"
    _fails(["report", str(a), str(b)], capsys, "give the folder for it with --out DIR")
    text = _run(tmp_path, "text", "text_tiny_summary.json")
    _fails(["report", str(a), str(text), "--out", str(out)], capsys,
           "cannot compare runs that measure different things: toward-init (arithmetic: "
           "forget/acc, retain/acc) vs text (text: forget/ce, retain/ce)")
    _fails(["report", str(a), str(tmp_path / "missing"), "--out", str(out)], capsys,
           "missing: no such run folder")
    (tmp_path / "unfinished").mkdir()
    _fails(["report", str(a), str(tmp_path / "unfinished"), "--out", str(out)], capsys,
           "unfinished/summary.json: no such file")
    _fails(["report", str(a), f"{b}/", str(b), "--out", str(out)], capsys, "given twice")
    _fails(["report", str(a), str(b), "--out", str(a)], capsys,
           "is one of the runs' folders")
    (tmp_path / "file").write_text("x")
    _fails(["report", str(a), str(b), "--out", str(tmp_path / "file")], capsys,
           "exists and is not a folder")
    assert not out.exists() and not (a / "report.html").exists()
    assert not (tmp_path / "text" / "report.html").exists()


def test_runs_must_share_an_attack_budget(two_runs):
    a, b = (json.loads((d / "summary.json").read_text()) for d in two_runs)
    b["budgets"] = [0, 60]  # only the check reads this; the summary is not re-validated
    with pytest.raises(SummaryError, match=r"share no attack budget: a \[0, 40, 100\], "
                                           r"b \[0, 60\]"):
        shared_budgets([Run("a", Path("a"), a), Run("b", Path("b"), b)])
    b["budgets"] = [0, 40]
    assert shared_budgets([Run("a", Path("a"), a), Run("b", Path("b"), b)]) == [0, 40]
