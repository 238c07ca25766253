"""Provenance: `undo --version`, and what every meta.json / summary.json records of the
undo commit, library versions and the model's hub commit; hub ids where a model folder
is expected (`undo eval` / `undo attack`), resolved offline from a real hub cache layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from hub_cache import micro_hub_model, offline_env
from undo.provenance import model_source

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "arithmetic" / "smoke.yaml")


def _undo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "undo.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)


def test_version_names_the_checkouts_commit():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    out = _undo("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("undo 0.1.0 (git ") and head[:12] in out.stdout


def test_hub_commit_is_read_from_the_hub_cache(tmp_path, monkeypatch):
    cache, commit = micro_hub_model(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert model_source("undo-test/micro")["hub_commit"] == commit
    assert model_source("undo-test/not-cached")["hub_commit"] is None
    local = model_source(str(tmp_path / "micro-model"))
    assert local["hub_commit"] is None and local["name_or_path"].endswith("micro-model")
    assert model_source(None) is None  # a preset built from config


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    cache, commit = micro_hub_model(tmp)
    return tmp, offline_env(cache), commit


def test_eval_takes_a_hub_id_and_refuses_an_uncached_one(hub):
    tmp, env, _ = hub
    ok = _undo("eval", SMOKE, "undo-test/micro", f"out_dir={tmp / 'runs'}", env=env)
    assert ok.returncode == 0, ok.stderr
    [rec] = list((tmp / "runs").glob("arithmetic-smoke/evals/undo-test--micro-*.json"))
    assert "retain/acc" in json.loads(rec.read_text())["metrics"]
    bad = _undo("eval", SMOKE, "undo-test/absent", f"out_dir={tmp / 'runs'}", env=env)
    assert bad.returncode == 2
    assert "not in the hub cache" in bad.stderr and "Traceback" not in bad.stderr
    assert "model folder not found" not in bad.stderr


def test_attack_on_a_hub_id_records_its_commit(hub):
    tmp, env, commit = hub
    out = _undo("attack", SMOKE, "undo-test/micro", f"out_dir={tmp / 'runs'}",
                "attack.lrs=[1e-3]", env=env)
    assert out.returncode == 0, out.stderr
    [meta] = list((tmp / "runs").glob("arithmetic-smoke/attacks/undo-test--micro-*/meta.json"))
    source = json.loads(meta.read_text())["model_source"]
    assert source == {"name_or_path": "undo-test/micro", "gguf_file": None, "revision": None,
                      "hub_commit": commit}


def test_imported_hub_model_stage_records_commit_versions_and_undo_git(hub):
    tmp, env, commit = hub
    out = _undo("pretrain", SMOKE, "--which", "base", "model.name_or_path=undo-test/micro",
                f"out_dir={tmp / 'runs'}", env=env)
    assert out.returncode == 0, out.stderr
    [meta] = list((tmp / "runs").glob("arithmetic-smoke/stages/import-base-*/meta.json"))
    env_rec = json.loads(meta.read_text())
    assert env_rec["model_source"]["hub_commit"] == commit
    assert env_rec["versions"]["transformers"] and env_rec["versions"]["torch"]
    assert len(env_rec["undo"]["git"]["commit"]) == 40
    assert env_rec["undo"]["version"] == "0.1.0"
