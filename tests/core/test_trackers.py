"""`report_to`: every training stage's metrics also go to experiment trackers through
accelerate; TensorBoard's event files, written by a real stage, are read back here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from undo.cli import main
from undo.config import load_config
from undo.configlib import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "arithmetic" / "smoke.yaml")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    [run] = [p for p in (folder / "trackers").iterdir() if p.is_dir()]
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_pretrain_stage_writes_tensorboard_events_matching_metrics_jsonl(tmp_path, capsys):
    assert main(["pretrain", SMOKE, "--which", "base", f"out_dir={tmp_path}",
                 "report_to=[tensorboard]", "pretrain.steps=20", "pretrain.log_every=5",
                 "pretrain.eval_every=10"]) == 0
    capsys.readouterr()
    [stage] = tmp_path.glob("arithmetic-smoke/stages/pretrain-base-*")
    scalars = _scalars(stage)
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in train] == [5, 10, 15, 20]
    for (_, v), r in zip(scalars["loss"], train, strict=True):
        assert v == pytest.approx(r["loss"], rel=1e-6)  # float32 in the event file
    assert [s for s, _ in scalars["eval/retain/acc"]] == [r["step"] for r in evals]
    assert scalars["eval/retain/acc"][-1][1] == pytest.approx(evals[-1]["eval"]["retain/acc"])
    assert "tok_per_s" in scalars and "flops" in scalars


def test_tracker_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="report_to.*tensorboard, wandb, mlflow"):
        load_config(SMOKE, ["report_to=[tensorbord]"])
    # Which tracker runs is not part of any result: the folder takes the same study
    # with another report_to.
    from undo.study.run_folder import write_run_config

    write_run_config(load_config(SMOKE, [f"out_dir={tmp_path}"]))
    write_run_config(load_config(SMOKE, [f"out_dir={tmp_path}", "report_to=[tensorboard]"]))


def test_a_tracker_that_is_not_installed_stops_the_study_before_any_work(tmp_path, capsys):
    from accelerate.utils import is_mlflow_available

    if is_mlflow_available():
        pytest.skip("mlflow is installed here")
    assert main(["run", SMOKE, f"out_dir={tmp_path}", "report_to=[mlflow]"]) == 2
    assert "['mlflow'] not installed; valid: `pip install mlflow`" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
