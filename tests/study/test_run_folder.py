"""A run folder's bookkeeping (undo.study.run_folder): its config.yaml under a manifest, and
runs.jsonl written whole."""

from __future__ import annotations

import json

import pytest

from undo.cli import main
from undo.config import ConfigError, load_config
from undo.integrity import sidecar
from undo.study.run_folder import RUNS_FILE, record_run, write_run_config

SMOKE = "configs/arithmetic/smoke.yaml"


def test_a_damaged_run_config_is_named_as_damage_and_left_in_place(tmp_path, capsys):
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}"])
    path = write_run_config(cfg)
    assert sidecar(path).is_file()
    damaged = path.read_text().replace("seed: 0", "seed: 5", 1)
    assert damaged != path.read_text()
    path.write_text(damaged)
    with pytest.raises(ConfigError, match="config.yaml is damaged. Delete"):
        write_run_config(cfg)
    assert path.read_text() == damaged  # nothing overwritten
    assert main(["verify", str(tmp_path / cfg.name)]) != 0
    out = capsys.readouterr()
    assert "config.yaml" in out.out + out.err and "undo run refuses the folder" in out.out + out.err


def test_a_run_folder_of_an_older_undo_without_a_manifest_is_still_read(tmp_path):
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}"])
    path = write_run_config(cfg)
    sidecar(path).unlink()
    assert write_run_config(cfg) == path  # accepted, and now with its manifest
    assert sidecar(path).is_file()


def test_runs_file_is_rewritten_whole_and_keeps_every_record(tmp_path):
    cfg = load_config(SMOKE, [f"out_dir={tmp_path}"])
    write_run_config(cfg)
    record_run(cfg, {"wall_time_s": 1.0})
    record_run(load_config(SMOKE, [f"out_dir={tmp_path}", "seed=2"]))
    path = tmp_path / cfg.name / RUNS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 and records[0]["timing"] == {"wall_time_s": 1.0}
    assert records[1]["changed"] == ["seed: 0 -> 2"]
    assert not list(path.parent.glob(f"{RUNS_FILE}.*tmp*"))  # no temp file left beside it
