"""Configs ship inside the package: `undo configs` lists them, a name works wherever a
config path does, and a built wheel carries them (a `pip install` without -e)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from undo.cli import main
from undo.cli.common import split_config_args
from undo.config import load_config
from undo.configlib import SHIPPED_CONFIGS, ConfigError, shipped_configs, to_dict

ROOT = Path(__file__).resolve().parents[2]


def test_undo_configs_lists_every_shipped_config(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    files = sorted(SHIPPED_CONFIGS.rglob("*.yaml"))
    assert len(files) == len(shipped_configs()) >= 20
    for name in ("arithmetic/tiny", "text/tiny", "wmdp/gemma2-2b-rmu", "language/tiny"):
        assert f"  {name} " in out
    assert "The embedded default study" in out  # each with its description line


def test_a_name_works_where_a_path_does(tmp_path, monkeypatch, capsys):
    by_path = to_dict(load_config(ROOT / "configs" / "text" / "tiny.yaml"))
    monkeypatch.chdir(tmp_path)  # no configs/ folder here, as after `pip install undo`
    for name in ("text/tiny", "text/tiny.yaml", "configs/text/tiny.yaml"):
        assert to_dict(load_config(name)) == by_path
    assert main(["config", "text/tiny", "seed=4"]) == 0
    assert "name: text-tiny" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="shipped config name .*undo configs"):
        load_config("text/nope")


def test_a_name_is_a_config_only_when_no_such_path_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert split_config_args(["arithmetic/smoke", "MODEL", "k=1"]) == (
        "arithmetic/smoke", ["k=1"], ["MODEL"])
    (tmp_path / "arithmetic" / "smoke").mkdir(parents=True)  # a model folder of that name
    assert split_config_args(["arithmetic/smoke"]) == (None, [], ["arithmetic/smoke"])


def test_checkout_configs_folder_is_the_shipped_one():
    assert (ROOT / "configs").resolve() == SHIPPED_CONFIGS


@pytest.mark.slow
def test_the_wheel_carries_every_shipped_config(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True,
                   capture_output=True, cwd=tmp_path)
    [wheel] = tmp_path.glob("undo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, path in shipped_configs().items():
        assert f"undo/configs/{name}.yaml" in names, path
