"""The command line: argument handling that every command shares."""

import json

import pytest

from undo.cli import main


def test_overrides_after_an_option_are_applied(tmp_path, capsys):
    # `--which` sits between the config and the overrides (argparse alone rejects that).
    assert main(["pretrain", "configs/arithmetic/smoke.yaml", "--which", "base",
                 f"out_dir={tmp_path}", "pretrain.steps=2", "pretrain.eval_every=0"]) == 0
    summaries = list(tmp_path.glob("*/stages/pretrain-base-*/summary.json"))
    assert len(summaries) == 1
    assert json.loads(summaries[0].read_text())["steps"] == 2
    assert not list(tmp_path.glob("*/stages/pretrain-gold-*"))  # --which base was read
    capsys.readouterr()


def test_unknown_option_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", "configs/arithmetic/smoke.yaml", "--nope", "seed=7"])
    assert e.value.code == 2
    assert "--nope" in capsys.readouterr().err


def test_single_process_commands_refuse_a_multi_process_launch(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["run", "configs/arithmetic/smoke.yaml"]) == 2
    err = capsys.readouterr().err
    assert "`undo run` runs in one process" in err and "distill, pretrain, unlearn" in err


def test_help_does_not_import_torch():
    """`undo --help` must answer fast: neither the package nor the CLI module may pull in
    torch or transformers before a command runs (experiments/cli_startup.py times it)."""
    import subprocess
    import sys

    code = ("import sys, undo, undo.cli; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    help_run = subprocess.run([sys.executable, "-m", "undo.cli", "--help"],
                              capture_output=True, text=True)
    assert help_run.returncode == 0 and "attack" in help_run.stdout


# argparse's --help swallows its own write errors and exits 0: quiet too.
@pytest.mark.parametrize(("argv", "codes"), [(["configs"], {141}), (["--version"], {141}),
                                             (["--help"], {0, 141})])
def test_a_closed_pipe_ends_the_command_quietly(argv, codes):
    """`undo configs | head -3`: once the reader has gone, the command ends as `git log |
    head` does, status 141 (128 + SIGPIPE) and nothing on stderr, not "Broken pipe"."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first write: every write fails
    try:
        out = subprocess.run([sys.executable, "-m", "undo.cli", *argv], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert out.returncode in codes, out.stderr
    assert "Broken pipe" not in out.stderr and "Traceback" not in out.stderr
    assert "Exception ignored" not in out.stderr and "undo: error" not in out.stderr


def test_report_of_a_damaged_summary_is_one_error_line(tmp_path):
    """`undo report` checks summary.json against its manifest: a number changed after the
    run (still a valid summary) is refused with one line and status 2, no traceback, and
    nothing is drawn."""
    import subprocess
    import sys
    from pathlib import Path

    from undo import integrity

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "summary_example.json"
    run = tmp_path / "run"
    summary = run / "summary.json"
    run.mkdir()
    integrity.write_file(summary, fixture.read_bytes())  # as a study writes it
    assert integrity.read_file(summary) == fixture.read_bytes()  # intact
    tampered = json.loads(fixture.read_text())
    tampered["models"][0]["metrics"] = {k: 0.0 for k in tampered["models"][0]["metrics"]}
    summary.write_text(json.dumps(tampered))
    out = subprocess.run([sys.executable, "-m", "undo.cli", "report", str(run)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    (line,) = [x for x in out.stderr.splitlines() if x.strip()]
    assert line.startswith("undo: error: ") and str(summary) in line and "undo run" in line
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in run.iterdir()) == [".summary.json.manifest", "summary.json"]
