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
