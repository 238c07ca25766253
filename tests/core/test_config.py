import pytest

from undo.config import ConfigError, RunConfig, load_config, parse_override


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.data.retain_ops == ["add", "sub"] and cfg.data.forget_ops == ["mul", "div"]


def test_dotted_overrides_and_scientific_notation():
    cfg = load_config(None, ["pretrain.steps=200", "seed=3", "pretrain.lr=1e-3",
                             "data.forget_ops=[mul]"])
    assert cfg.pretrain.steps == 200 and cfg.seed == 3
    assert cfg.pretrain.lr == pytest.approx(1e-3)
    assert cfg.data.forget_ops == ["mul"]


def test_yaml_scientific_notation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("pretrain:\n  lr: 1e-3\n")
    assert load_config(p).pretrain.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("override, fragment", [
    ("pretrain.stepz=3", "unknown config key 'pretrain.stepz'; valid keys here:"),
    ("pretrain.steps=abc", "config key 'pretrain.steps': got 'abc'; valid: an integer"),
    ("pretrain.steps=-1", "config key 'pretrain.steps': got -1"),
    ("pretrain.lr=0", "config key 'pretrain.lr': got 0.0; valid: a positive number"),
    ("data.forget_ops=[add]", "disjoint from retain_ops"),
    ("data.retain_ops=[pow]", "valid: operations from add, sub, mul, div"),
    ("pretrain.schedule=step", "valid: one of 'cosine', 'constant', 'linear'"),
    ("progress=yes please", "valid: true or false"),
    ("seed", "not of the form key=value"),
])
def test_bad_values_name_key_value_and_valid(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_unknown_top_level_key_lists_valid(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("modle:\n  preset: tiny\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'; valid keys here: .*model"):
        load_config(p)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_parse_override_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("x=null") == ("x", None)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("attack.lrs=[1e-4, 5.0e-5]") == ("attack.lrs", [1e-4, 5e-5])
    assert load_config(None, ["attack.lrs=[1e-4]"]).attack.lrs == [1e-4]


def test_seed_override_runs_that_one_seed(tmp_path):
    assert load_config(None, []).study.seeds == [0, 1, 2]  # the default study: 3 seeds
    assert load_config(None, ["seed=7"]).study.seeds == [7]
    assert load_config(None, ["seed=7", "study.seeds=[1, 2]"]).study.seeds == [1, 2]
    y = tmp_path / "c.yaml"
    y.write_text("seed: 4\nstudy:\n  seeds: [0, 5]\n")
    assert load_config(y, ["seed=3"]).study.seeds == [0, 5]  # named in the file
    y.write_text("seed: 4\n")
    assert load_config(y, []).study.seeds == [0, 1, 2]  # a file's seed is the run seed


def test_flatten_one_level_per_key():
    from undo.configlib import flatten

    nested = {"a": {"b": 1, "c": {}}, "d": [1, {"e": 2}], "f": []}
    assert flatten(nested) == {"a.b": 1, "a.c": {}, "d": [1, {"e": 2}], "f": []}
    assert flatten(nested, lists=True) == {"a.b": 1, "a.c": {}, "d[0]": 1, "d[1].e": 2,
                                           "f": []}
    assert flatten({"x": {"y": 3}}, sep="/") == {"x/y": 3}


def test_differing_and_config_differences():
    from undo.configlib import ABSENT, differing
    from undo.study.run_folder import config_differences

    a = {"seed": 0, "study": {"workers": 2, "alphas": [0.8]}, "x": {"y": 1}}
    b = {"seed": 1, "study": {"workers": 4, "alphas": [0.8]}, "x": {"y": 1, "z": 2}}
    assert differing([a, b, a]) == {"seed": [0, 1, 0], "study.workers": [2, 4, 2],
                                    "x.z": [ABSENT, 2, ABSENT]}
    # study.workers is result-neutral; an ignored key covers the keys under it
    assert config_differences(a, b) == ["seed: 0 -> 1", "x.z: '(absent)' -> 2"]
    assert config_differences(a, b, ignore=frozenset({"x", "seed"})) == [
        "study.workers: 2 -> 4"]


def test_options_keyed_only_when_set_leave_existing_stage_folders_where_they_were(tmp_path):
    """The arithmetic benchmark's authors'-composition options (seq_len, english,
    english_share, loss_positions) enter a stage key only when set: the default study's
    pretraining folders keep the names they had before the options existed."""
    from undo.configlib import key_of, to_dict
    from undo.stages.pretrain import pretrain_dir

    cfg = load_config(None, [f"out_dir={tmp_path}"])
    assert set(to_dict(cfg.data)) - set(key_of(cfg.data)) == {
        "seq_len", "english", "english_share", "loss_positions"}
    # The names the default study's folders had before (committed summary, commit e665e09).
    assert pretrain_dir(cfg, "base").name == "pretrain-base-4a10d54fe4"
    assert pretrain_dir(cfg, "gold").name == "pretrain-gold-f7a2d0e48c"
    set_ = load_config(None, [f"out_dir={tmp_path}", "data.loss_positions=all"])
    assert key_of(set_.data)["loss_positions"] == "all"
    assert pretrain_dir(set_, "base") != pretrain_dir(cfg, "base")
