"""The report: schema validation, plots, HTML, text table and verdict, from JSON alone."""

from __future__ import annotations

import ast
import base64
import copy
import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from undo.cli import main
from undo.report import (
    SummaryError,
    compose_verdict,
    figures,
    format_table,
    load_summary,
    plots,
    validate_summary,
    views,
    write_report,
)
from undo.report.html import render_html
from undo.report.verdict import verdict

FIXTURE = Path(__file__).parents[1] / "fixtures" / "summary_example.json"
REPORT_PKG = Path(__file__).resolve().parents[2] / "src" / "undo" / "report"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def summary() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The fixture's report, written once for the tests that only read it."""
    d = tmp_path_factory.mktemp("run")
    shutil.copy(FIXTURE, d / "summary.json")
    return write_report(d)


def png_size_in(png: bytes) -> tuple[float, float]:
    assert png[:8] == PNG_MAGIC
    w, h = struct.unpack(">II", png[16:24])  # IHDR width, height in pixels
    return w / figures.DPI, h / figures.DPI


# ----------------------------------------------------------------------------- schema


def test_fixture_is_valid(summary):
    assert validate_summary(summary) is summary
    assert load_summary(FIXTURE)["study"] == "arithmetic-tiny"


def _set(path: list, value):
    def mutate(s):
        obj = s
        for k in path[:-1]:
            obj = obj[k]
        if value is _DELETE:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return mutate


_DELETE = object()

BROKEN = [
    (_set(["schema_version"], _DELETE), "schema_version: missing"),
    (_set(["schema_version"], 2), "schema_version: this report reads version 1, got 2"),
    (_set(["metric", "higher_is_worse"], "yes"), "metric.higher_is_worse: must be true or false"),
    (_set(["budgets"], [40, 0]), "budgets: must be a non-empty, strictly increasing"),
    (_set(["models", 2, "compute", "steps"], _DELETE), "models[2] ('unlearn-only').compute.steps: missing"),
    (_set(["models", 4, "kind"], "UNDO"), "models[4] ('undo-a0.2-s0').kind: unknown kind \"UNDO\"; valid kinds: base, gold"),
    (_set(["models", 4, "alpha"], None), "models[4] ('undo-a0.2-s0').alpha: an 'undo' model needs"),
    (_set(["models", 1, "metrics", "forget/acc"], "0.3"), ".metrics.forget/acc: must be a number or null"),
    (_set(["models", 3, "attack", "worst_case", "500"], _DELETE), "attack.worst_case: missing budget '500'"),
    (_set(["models", 3, "attack", "worst_case", "40", "lr"], 0.5), 'worst_case["40"].lr: 0.5 has no curve'),
    (_set(["models", 3, "attack", "curves", "0.001", "std"], [0.1]), 'curves["0.001"].std: has 1 values for 51 steps'),
    (_set(["models", 5, "robustness"], {"0": None, "40": 0.5}), "models[5] ('undo-a0.2-s1').robustness.500: missing"),
    (_set(["models", 5, "name"], "gold"), "models[5].name: duplicate model name 'gold'"),
    (_set(["models", 6, "wall_time_s"], True), "wall_time_s: must be a number, got true"),
]


@pytest.mark.parametrize("mutate,message", BROKEN, ids=[m for _, m in BROKEN])
def test_broken_summaries_name_the_field(summary, mutate, message):
    mutate(summary)
    with pytest.raises(SummaryError) as e:
        validate_summary(summary)
    assert message in str(e.value)


def test_needs_gold_and_unlearn_only(summary):
    summary["models"] = [m for m in summary["models"] if m["kind"] != "gold"]
    with pytest.raises(SummaryError, match="no model of kind 'gold'"):
        validate_summary(summary)


def test_load_errors(tmp_path):
    with pytest.raises(SummaryError, match="no such file"):
        load_summary(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(SummaryError, match="not valid JSON"):
        load_summary(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text("[]")
    with pytest.raises(SummaryError, match="summary-schema.md.*top level must be a JSON object"):
        load_summary(tmp_path / "summary.json")


# ----------------------------------------------------------------------------- views


def test_group_curve_combines_seed_spreads():
    """Two seeds: mean of means; var = mean of within-variances + between-seed variance."""
    def model(mean, std, seed):
        return {"name": f"undo-s{seed}", "kind": "undo", "alpha": 0.5, "seed": seed,
                "attack": {"worst_case": {"10": {"lr": 1e-3}},
                           "curves": {"0.001": {"steps": [0, 10], "mean": mean, "std": std}}}}
    g = views.Group("UNDO", "undo", 0.5, [model([0.0, 0.2], [0.0, 0.3], 0),
                                          model([0.0, 0.4], [0.0, 0.4], 1)])
    c = views.group_curve(g, 10)
    assert c["mean"] == pytest.approx([0.0, 0.3])
    between = math.sqrt(((0.2 - 0.3) ** 2 + (0.4 - 0.3) ** 2) / 1)  # ddof = 1
    assert c["std"][1] == pytest.approx(math.sqrt((0.3**2 + 0.4**2) / 2 + between**2))


def test_relearning_uses_worst_lr_at_largest_budget(summary):
    m = next(m for m in summary["models"] if m["name"] == "unlearn-only")
    lr, curve = views.worst_lr_curve(m, 500)
    assert lr == m["attack"]["worst_case"]["500"]["lr"]
    assert curve is m["attack"]["curves"][f"{lr:g}"]


def test_frontier_points(summary):
    pts = {p.label: p for p in views.frontier(summary)}
    gold, uo = pts["gold standard"], pts["unlearn-only"]
    assert (gold.compute, gold.robustness) == (1.0, 1.0)  # null robustness -> definition
    assert uo.robustness == 0.0 and uo.compute < 0.01
    a8 = pts["UNDO α=0.8 (2 seeds)"]
    seeds = [m for m in summary["models"] if m["kind"] == "undo" and m["alpha"] == 0.8]
    assert a8.n == 2
    assert a8.robustness == pytest.approx(sum(m["robustness"]["500"] for m in seeds) / 2)
    assert not any(p.kind.startswith("oracle") for p in pts.values())


# ----------------------------------------------------------------------------- artifacts


def test_report_writes_pngs_and_self_contained_html(written):
    assert set(written.plots) == {"relearning", "frontier", "frontier_flops", "pareto"}
    page = written.html.read_text()
    for name, path in written.plots.items():
        png = path.read_bytes()
        w, h = png_size_in(png)
        assert 3.5 <= w <= 7.2 and 2 <= h <= 7, (name, w, h)
        # The page carries the very same image, inlined, and links its SVG and PDF twins.
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
        assert f'href="plots/{name}.svg"' in page and f'href="plots/{name}.pdf"' in page
        assert path.with_suffix(".svg").read_bytes().startswith(b"<?xml")
        assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert page.count("data:image/png;base64,") == 4
    assert 'href="table.csv"' in page and written.table.is_file()
    assert "<table>" in page and "R = (P<sub>model</sub>" in page
    assert "Compute = S<sub>model</sub> / S<sub>gold</sub>" in page
    for m in json.loads(FIXTURE.read_text())["models"]:
        assert f">{m['name']}</td>" in page
    assert "preset: tiny" in page  # the config, as YAML
    assert "torch_threads" in page  # the environment
    assert written.verdict_composed and "composed by <code>undo report</code>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched


def test_html_escapes_all_text(summary):
    summary["study"] = "<script>alert(1)</script>"
    summary["models"][0]["name"] = "a&b<i>"
    summary["config"]["note"] = "</pre><b>x"
    page = render_html(summary, {"relearning": PNG_MAGIC}, "1 < 2 & <b>", composed=False)
    assert "<script>" not in page and "<i>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b&lt;i&gt;" in page
    assert "1 &lt; 2 &amp; &lt;b&gt;" in page and "written by the study" in page


def test_every_format_is_deterministic_and_paper_ready(summary, written):
    """A second render of the summary gives the very bytes the report wrote, in PNG, SVG
    and PDF (no dates, SVG ids from a fixed salt rather than random ones); the PDF embeds
    TrueType, not Type 3 fonts."""
    again = plots.render_all(copy.deepcopy(summary))
    assert set(again) == set(written.plots)
    for name, by_fmt in again.items():
        assert set(by_fmt) == {"png", "svg", "pdf"}
        for fmt, data in by_fmt.items():
            assert data == written.plots[name].with_suffix(f".{fmt}").read_bytes(), \
                f"{name}.{fmt} differs between two renders"
        svg, pdf = by_fmt["svg"], by_fmt["pdf"]
        assert b"<dc:date>" not in svg and b"/CreationDate" not in pdf
        assert b"/Type3" not in pdf and b"/CIDFontType2" in pdf
    # The SVG salt is what makes the SVG stable: without it the ids are random per save.
    with figures.rc():
        import matplotlib

        matplotlib.rcParams["svg.hashsalt"] = None
        fig = plots.frontier_figure(summary)
        assert figures.save(fig, "svg") != figures.save(fig, "svg")


def test_text_table(summary):
    text = format_table(summary)
    lines = text.splitlines()
    header = lines[0].split()
    assert header == ["model", "retain", "forget", "wc@0", "wc@40", "wc@500", "R@40", "R@500",
                      "compute", "time"]  # R@0 is null everywhere: no column
    rows = {ln.split()[0]: ln.split() for ln in lines[2:2 + len(summary["models"])]}
    assert rows["unlearn-only"][4] == "0.848" and rows["unlearn-only"][-2] == "0.3%"
    assert rows["gold"][6:8] == ["-", "-"]  # robustness undefined for the references
    assert rows["undo-a0.8-s0"][7] == "0.91"
    assert max(len(ln) for ln in lines) <= 100


# ----------------------------------------------------------------------------- verdict


def _model(name, kind, wc, rob=None, alpha=None, seed=None, compute=0.5, retain=0.95):
    """A minimal model with the given worst-case forget value per budget."""
    budgets = sorted(wc)
    curve = {"steps": budgets, "mean": [wc[b] for b in budgets], "std": [0.0] * len(budgets)}
    return {"name": name, "kind": kind, "alpha": alpha, "seed": seed, "stage_dir": None,
            "metrics": {"retain/acc": retain, "forget/acc": wc[0]},
            "compute": {"steps": 100, "tokens": 1000, "flops": 1e9,
                        "fraction_of_gold_steps": compute, "fraction_of_gold_flops": None},
            "wall_time_s": 1.0,
            "attack": {"lrs": [1e-3], "seeds": [0], "curves": {"0.001": curve},
                       "worst_case": {str(b): {"value": wc[b], "std": 0.0, "lr": 1e-3}
                                      for b in budgets}},
            "robustness": {str(b): (rob or {}).get(b) for b in budgets}}


def _study(*extra, gold40=0.1, uo40=0.9):
    s = {"schema_version": 1, "study": "hand-made", "config": {}, "environment": {},
         "metric": {"name": "forget/acc", "higher_is_worse": True, "chance": 0.001},
         "retain_metric": {"name": "retain/acc", "chance": 0.001}, "budgets": [0, 40, 500],
         "models": [_model("gold", "gold", {0: 0.0, 40: gold40, 500: 0.4}, compute=1.0),
                    _model("unlearn-only", "unlearn_only", {0: 0.0, 40: uo40, 500: 0.9},
                           compute=0.004),
                    *extra]}
    return validate_summary(s)


def _undo(alpha, r500, compute, seed=0, retain=0.95):
    return _model(f"undo-a{alpha}-s{seed}", "undo", {0: 0.0, 40: 0.5, 500: 0.5},
                  rob={500: r500}, alpha=alpha, seed=seed, compute=compute, retain=retain)


def test_verdict_when_undo_matches_gold():
    s = _study(_undo(0.4, 0.5, 0.3), _undo(0.8, 0.97, 0.62))
    text = compose_verdict(s)
    assert ("UNDO with α = 0.8 matched the gold standard's robustness after 500 attack steps "
            "(robustness 0.97) at 62% of its compute.") in text
    assert "Robustness rose with α in 1/1 seed; compute rose with α in 1/1 seed (mean 0.50 " \
           "at α = 0.4 to 0.97 at α = 0.8; compute 30% to 62%)." in text
    assert "unlearn-only model reached forget/acc 0.90 against the gold standard's 0.10 " \
           "(9.0×)." in text


def test_verdict_picks_cheapest_match_and_averages_seeds():
    s = _study(_undo(0.6, 0.92, 0.5, seed=0), _undo(0.6, 0.96, 0.54, seed=1),
               _undo(0.8, 0.99, 0.7))
    assert "α = 0.6 matched the gold standard's robustness after 500 attack steps in every " \
           "seed (robustness 0.94 ± 0.03 over 2 seeds) at 52% of its compute" in compose_verdict(s)


def test_verdict_says_when_nothing_matched_and_trend_fails():
    s = _study(_undo(0.2, 0.3, 0.2), _undo(0.4, 0.55, 0.3), _undo(0.6, 0.4, 0.4))
    text = compose_verdict(s)
    assert "No UNDO setting matched the gold standard's robustness" in text
    assert "the most robust, α = 0.4, reached 0.55 (≥ 0.9 in 0/1) at 30% of the gold " \
           "standard's compute" in text
    assert "Robustness rose with α in 0/1 seed (not in seed 0: α = 0.2: 0.30, α = 0.4: 0.55, " \
           "α = 0.6: 0.40); compute rose with α in 1/1 seed" in text


def test_verdict_claims_only_what_holds_in_every_seed():
    # α = 0.8 matches in seeds 0 and 1 but not 2; seed 2's robustness falls with α.
    s = _study(*[_undo(0.4, r, 0.3, seed=k) for k, r in enumerate((0.5, 0.6, 0.93))],
               *[_undo(0.8, r, 0.6, seed=k) for k, r in enumerate((0.95, 0.97, 0.8))])
    text = compose_verdict(s)
    assert "No UNDO setting matched the gold standard's robustness after 500 attack steps " \
           "in every seed" in text
    assert "the most robust, α = 0.8, reached 0.91 ± 0.09 over 3 seeds (≥ 0.9 in 2/3)" in text
    assert "Robustness rose with α in 2/3 seeds (not in seed 2: α = 0.4: 0.93, " \
           "α = 0.8: 0.80)" in text


def test_verdict_unrecovered_seed_supports_no_claim():
    bad = _undo(0.8, 0.99, 0.9, seed=1, retain=0.5)
    bad["recovered"] = False
    s = _study(_undo(0.4, 0.5, 0.3, seed=0), _undo(0.4, 0.6, 0.3, seed=1),
               _undo(0.8, 0.97, 0.6, seed=0), bad)
    text = compose_verdict(s)
    assert "No UNDO setting matched" in text  # seed 1 of α = 0.8 did not recover
    assert "reached 0.97 over 1 of 2 seeds (the rest not counted) (≥ 0.9 in 1/2)" in text
    assert "Robustness rose with α in 1/2 seeds (not in seed 1: α = 0.4: 0.60, " \
           "α = 0.8: not counted)" in text
    assert "Not counted: undo-a0.8-s1 (retain/acc 0.500)" in text


def test_verdict_unlearning_not_fragile_and_oracle_order():
    ob = _model("oracle-base", "oracle_base", {0: 0.0, 40: 0.1, 500: 0.4})
    orand = _model("oracle-random", "oracle_random", {0: 0.0, 40: 0.3, 500: 0.4})
    s = _study(ob, orand, gold40=0.2, uo40=0.205)
    text = compose_verdict(s)
    assert "not measurably less robust than the gold standard" in text
    assert "Oracle matching into the base model relearned more slowly than oracle matching " \
           "into a random init (forget/acc 0.10 vs 0.30 after 40 steps)." in text
    assert "This study has no UNDO model." in text


def test_verdict_undefined_robustness():
    s = _study(_undo(0.5, None, 0.4))
    assert "robustness after 500 steps is undefined" in compose_verdict(s)


def test_own_verdict_wins(summary):
    summary["verdict"] = "Written by the study."
    assert verdict(summary) == ("Written by the study.", False)
    del summary["verdict"]
    assert verdict(summary)[1] is True


# ----------------------------------------------------------------------------- CLI


def test_cli_report(tmp_path, capsys):
    """One run: the table and verdict printed, every artifact written to --out (the run
    folder when it is not given: the `written` fixture's path)."""
    shutil.copy(FIXTURE, tmp_path / "summary.json")
    out_dir = tmp_path / "elsewhere"
    assert main(["report", str(tmp_path), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model ") and "undo-a0.8-s1" in out and "Verdict (composed" in out
    assert f"table:  {out_dir / 'table.csv'}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "summary.json"]
    assert (out_dir / "report.html").is_file()
    assert sorted(p.name for p in (out_dir / "plots").iterdir()) == sorted(
        f"{name}.{fmt}" for name in ("frontier", "frontier_flops", "pareto", "relearning")
        for fmt in ("png", "svg", "pdf"))  # no temp files left
    assert (out_dir / "table.csv").is_file()


def test_cli_report_errors_write_nothing(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["report"]) == 2
    assert "takes RUN_DIR" in capsys.readouterr().err

    s = json.loads(FIXTURE.read_text())
    del s["models"][3]["attack"]["worst_case"]["40"]
    (tmp_path / "summary.json").write_text(json.dumps(s))
    (tmp_path / "report.html").write_text("previous report")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models[3] ('unlearn-distill').attack.worst_case: " \
        "missing budget '40'" in err
    assert (tmp_path / "report.html").read_text() == "previous report"
    assert not (tmp_path / "plots").exists()


def test_report_package_needs_no_torch():
    """`undo report` runs from JSON alone: the package imports no torch and no model code;
    outside undo.report it uses only the pure analysis package (arms, budget keys,
    intervals) and the config machinery (configlib: flattening and comparing configs; config: which
    settings leave results alone)."""
    pure = {**{f"analysis.{p.stem}": p for p in (REPORT_PKG.parent / "analysis").glob("*.py")
               if p.stem != "__init__"},
            "configlib": REPORT_PKG.parent / "configlib.py",
            # manifests: load_summary checks a summary's before drawing it (xxhash, no torch)
            "integrity": REPORT_PKG.parent / "integrity.py",
            **{"config" if p.stem == "__init__" else f"config.{p.stem}": p
               for p in (REPORT_PKG.parent / "config").glob("*.py")}}
    config_pkg = REPORT_PKG.parent / "config"
    for path in [*REPORT_PKG.glob("*.py"), *pure.values()]:
        tree = ast.parse(path.read_text())
        # The config's checks import the registries lazily, inside validate(), which
        # loading a summary never calls: for the config package, module level counts.
        nodes = tree.body if path.parent == config_pkg else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1 or node.module in pure, \
                    f"{path.name} imports from outside undo.report"
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in {"torch", "transformers", "accelerate"}, \
                    f"{path.name} imports {n}"


def test_nan_robustness_counts_as_undefined():
    """A diverged seed (NaN) is left out of the α mean instead of making it NaN."""
    s = _study(_undo(0.5, 0.6, 0.4, seed=0), _undo(0.5, float("nan"), 0.45, seed=1))
    (p,) = [p for p in views.frontier(s) if p.kind == "undo"]
    assert (p.n, p.robustness, p.compute) == (1, 0.6, 0.4)
    assert "α = 0.5, reached 0.60 over 1 of 2 seeds (the rest not counted) (≥ 0.9 in 0/2) " \
           "at 40%" in compose_verdict(s)
    assert "nan" in format_table(s)  # the table still shows what the run produced


def test_unrecovered_student_is_never_counted_as_a_success():
    """α = 0.8 reaches robustness 1.18 but lost half its retain ability: it must not be
    the one that "matched the gold standard"; it is named, with its retain metric."""
    bad = _undo(0.8, 1.18, 0.6, retain=0.52)
    bad["recovered"] = False
    good = _undo(0.4, 0.5, 0.3)
    good["recovered"] = True
    s = _study(good, bad)
    text = compose_verdict(s)
    assert "α = 0.8 matched" not in text
    assert "No UNDO setting matched" in text and "α = 0.4, reached 0.50" in text
    assert "Not counted: undo-a0.8-s0 (retain/acc 0.520) did not recover" in text
    assert [p.alpha for p in views.frontier(s) if p.kind == "undo"] == [0.4]
    assert "undo-a0.8-s0 (not recovered)" in format_table(s)
    assert "undo-a0.8-s0 (not recovered)" in render_html(s, {}, text, True)


def test_arm_table_means_and_spreads_over_seeds():
    """The arm table: mean ± sample std over seeds; robustness over counted seeds only."""
    from undo.report.html import group_table
    from undo.report.table import format_groups, group_rows

    bad = _undo(0.8, 0.2, 0.9, seed=2, retain=0.5)
    bad["recovered"] = False
    s = _study(_undo(0.8, 0.9, 0.5, seed=0), _undo(0.8, 1.0, 0.7, seed=1), bad,
               _undo(0.4, 0.5, 0.3))
    (g,) = group_rows(s)  # α = 0.4 ran one seed: no arm row
    assert (g.n, g.recovered, g.counted) == (3, 2, 2)
    assert g.robustness == pytest.approx((0.95, math.sqrt(0.005)))  # seed 2 left out
    assert g.compute == pytest.approx((0.7, 0.2))  # compute of every seed
    assert g.retain == pytest.approx((0.8, math.sqrt(0.0675)))
    text = format_groups(s)
    assert "UNDO α=0.8 " in text and "2/3" in text and "0.95 ± 0.07 (2)" in text
    assert "70% ± 20%" in text
    assert "2/3" in group_table(s) and "(2 counted)" in group_table(s)
    one_seed = _study(_undo(0.8, 0.9, 0.5))
    assert format_groups(one_seed) == "" and group_table(one_seed) == ""


def test_load_summary_refuses_a_summary_that_does_not_match_its_manifest(tmp_path):
    """A number changed in a run's summary.json still parses as a valid summary: the
    library's load_summary, not only `undo report`, checks the manifest first; a summary
    without one (a fixture, a hand copy) is read as it is."""
    from undo.integrity import write_file

    path = tmp_path / "summary.json"
    write_file(path, FIXTURE.read_bytes())  # with its sidecar manifest, as a run writes it
    assert load_summary(path)["study"] == json.loads(FIXTURE.read_text())["study"]
    text = path.read_text()
    path.write_text(text.replace('"seed": 0', '"seed": 7', 1))
    assert path.read_text() != text
    with pytest.raises(SummaryError, match="summary.json"):
        load_summary(path)
    bare = tmp_path / "bare" / "summary.json"
    bare.parent.mkdir()
    shutil.copy(FIXTURE, bare)
    assert load_summary(bare)["study"] == json.loads(FIXTURE.read_text())["study"]
