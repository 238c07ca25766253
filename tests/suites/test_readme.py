"""The README's Python API example runs as written (on the seconds-long smoke config)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    code = block.replace('"configs/arithmetic/tiny.yaml", [',
                         f'"{ROOT}/configs/arithmetic/smoke.yaml", '
                         f'["out_dir={tmp_path}", "study.seeds=[0]", ')
    assert code != block, "the README example no longer loads configs/arithmetic/tiny.yaml"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["summary"]["models"]
    for name in ("base", "teacher", "student"):
        assert (Path(scope[name]) / "model" / "config.json").is_file(), name
    assert (Path(scope["attacked"]) / "relearn.json").is_file()
