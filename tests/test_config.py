from pathlib import Path

import pytest

from lvas.cli import main
from lvas.config import (ConfigError, ExperimentConfig, config_hash, from_dict, load_config, to_dict)
from lvas.models import build_model

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_experiment_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


@pytest.mark.parametrize("text,where,expected", [
    ("model: {spatail: {name: r50}}", "model.spatail", "unknown key; allowed keys here: mode, spatial"),
    ("model: {spatial: {name: r51}}", "model.spatial.name", "unknown spatial encoder 'r51'; registered: iv3, r50, tiny2d"),
    ("model: {fusion: concatenate}", "model.fusion",
     "unknown fusion 'concatenate'; registered: add, bca, concat, lgfs, max. Did you mean 'concat'?"),
    ("model: {cmam: {name: cmam_paper}}", "model.cmam.name",
     "unknown cross-modal 'cmam_paper'; registered: cmam_eq6, cmam_released"),
    ("model: {input: squash}", "model.input", "unknown input 'squash'; registered: letterbox, released, stretch"),
    ("model: {mode: all}", "model.mode", "expected one of 'spatial', 'temporal', 'both'"),
    ("model: {cmam: {stages: [6]}}", "model.cmam.stages", "distinct stage numbers in 1..5"),
    ("model: {cmam: {stages: 5}}", "model.cmam.stages", "expected a list of int"),
    ("model: {decoder: {channels: 2.5}}", "model.decoder.channels", "expected an integer"),
    ("model: {decoder: {refine: 'yes'}}", "model.decoder.refine", "expected true or false"),
    ("data: {frames: 0}", "data.frames", "expected an integer from 1 to 4096"),
    ("train: {batch_size: 10000000000000000000}", "train.batch_size", "out of range"),
    ("seed: 1000000000000000000000000000000", "seed", "out of range"),
    ("train: {optimizer: {name: adam, weight_decay: -0.1}}", "train.optimizer.weight_decay", "a number >= 0"),
    ("model: {decoder: {name: released, refine: true}}", "model.decoder.refine",
     "unknown key for decoder 'released'; allowed keys here: name, channels, deep_supervision"),
    ("{model: {temporal: {name: s3d}}, data: {frames: 4}}", "data.frames",
     "4 is too few for the s3d temporal encoder; it needs at least 5"),
    ("{model: {input: letterbox}, train: {protocol: paper}}", "train.protocol",
     "'paper' reproduces a released evaluation, whose frames are stretched"),
    ("model: [1, 2]", "model", "expected a mapping"),
    ("train: {precision: float16}", "train.precision", "expected one of 'float32', 'float64'"),
    ("train: {precision: float64, amp: bf16}", "train.precision", "float64 cannot run under train.amp: bf16"),
    ("data: {evaluators: [video_j]}", "data.evaluators[0]",
     "unknown evaluator 'video_j'; registered: coco, coco_top1, davis17, segmentation, video_jf. Did you mean 'video_jf'?"),
])
def test_config_errors_name_the_key(tmp_path, text, where, expected):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    msg = str(e.value)
    assert msg.startswith(where + ":"), msg
    assert expected in msg, msg


def test_did_you_mean_for_keys_and_components(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'fusion'"):
        load_config(_write(tmp_path, "model: {fuson: add}"))
    with pytest.raises(ConfigError, match="Did you mean 'i3d'"):
        load_config(_write(tmp_path, "model: {temporal: {name: i3dd}}"))


def test_base_merge_and_overrides(tmp_path):
    _write(tmp_path, "name: base\nmodel: {fusion: max, cmam: {stages: [5], channels: 16}}\n", "base.yaml")
    child = _write(tmp_path, "base: base.yaml\nname: child\nmodel: {cmam: {stages: [5, 4]}}\n")
    cfg = load_config(child)
    assert (cfg.name, cfg.model.fusion.name, cfg.model.cmam.stages, cfg.model.cmam.channels) == \
        ("child", "max", [5, 4], 16)
    cfg = load_config(child, ["model.fusion=add", "model.cmam.stages=[1,2]", "data.size=64"])
    assert (cfg.model.fusion.name, cfg.model.cmam.stages, cfg.data.size) == ("add", [1, 2], 64)
    with pytest.raises(ConfigError, match="^model.decoder.widht: unknown key"):
        load_config(child, ["model.decoder.widht=3"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(child, ["model.fusion"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(_write(tmp_path, "model: {spatial: [", "broken.yaml"))
    _write(tmp_path, "base: a.yaml\n", "a.yaml")
    with pytest.raises(ConfigError, match="circular base"):
        load_config(tmp_path / "a.yaml")


def test_hash_is_stable_and_sensitive():
    a = from_dict({"model": {"fusion": "add", "cmam": {"stages": [5]}}, "seed": 1})
    b = from_dict({"seed": 1, "model": {"cmam": {"stages": [5]}, "fusion": "add"}})
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(a) != config_hash(from_dict({"model": {"fusion": "max", "cmam": {"stages": [5]}}, "seed": 1}))
    assert from_dict(to_dict(a)) == a  # round trip through plain data


def test_a_model_is_built_from_the_config_alone():
    cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", ["model.cmam.stages=[5,4]", "model.fusion=max"])
    model = build_model(cfg)
    assert model.mode == "both"
    assert sorted(model.cmam["spatial"]) == ["4", "5"]
    assert type(model.decoder.fusion[0]).__name__ == "MaxFusion"
    assert model.text.embedding["spatial"].num_embeddings == cfg.model.text.vocab_size
    assert model.text.embedding["spatial"] is not model.text.embedding["temporal"]  # one per branch


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    bad = _write(tmp_path, "model: {spatial: {name: resnet}}")
    assert main(["flops", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model.spatial.name: unknown spatial encoder 'resnet'" in err
    assert "Traceback" not in err


def test_missing_pretrained_weights_give_one_line(monkeypatch, tmp_path):
    """No network: torchvision's download fails; the error names the file and where to put it."""
    import urllib.error

    import torch.hub

    from lvas.registry import SPATIAL_ENCODERS

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError) as e:
        SPATIAL_ENCODERS.build("r50", pretrained="imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "resnet50-11ad3fa6.pth" in msg and str(tmp_path) in msg and "pretrained" in msg
    with pytest.raises(FileNotFoundError, match="weights/nowhere.pt not found"):
        SPATIAL_ENCODERS.build("r50", pretrained="weights/nowhere.pt")


# Resolved configs written by lvas 0.1 (one global schema; `lvas config` at commit 16db9e4), and the
# same experiments resolved by this version: an old checkpoint, trial record or YAML means the same
# experiment after the upgrade, with the same result hash (so its runs still count).
OLD_CONFIGS = {
    "cstm_paper": ("cstm_paper.yaml", []),
    "cstm_released": ("cstm_released.yaml", []),
    "lbdt4_paper": ("lbdt4_paper.yaml", []),
    "acga_paper": ("acga_paper.yaml", []),
    "cpu_two_stage": ("cpu_small.yaml", ["train.recipe={name: two_stage, stage2_epochs: 3}",
                                         "train.select={name: best_val, monitor: oIoU, val_fraction: 0.2}",
                                         "train.scheduler={name: multistep, milestones: [4, 6]}",
                                         "train.loss.pos_weight=2.0"]),
}


@pytest.mark.parametrize("name", sorted(OLD_CONFIGS))
def test_a_config_saved_by_lvas_0_1_is_the_same_experiment_after_the_upgrade(name):
    import yaml

    from lvas.config import result_hash

    old = yaml.safe_load((ROOT / "tests" / "fixtures" / "config_0_1" / f"{name}.yaml").read_text())
    assert "lvas_config" not in old and "pos_weight" in old["train"]  # the 0.1 layout
    path, overrides = OLD_CONFIGS[name]
    now = load_config(ROOT / "experiments" / path, overrides)
    upgraded = from_dict(old, run_imports=False)
    assert to_dict(upgraded) == to_dict(now)
    assert result_hash(old) == result_hash(now) == result_hash(upgraded)


def test_a_key_at_its_default_does_not_change_the_result_hash():
    """A key a newer lvas adds arrives at its default: the records of earlier runs, which lack it, keep
    their hash. The same key set away from its default is a different experiment."""
    from lvas.config import result_hash, saved_dict

    cfg = load_config(ROOT / "experiments" / "cpu_small.yaml")
    full = saved_dict(cfg)
    older = saved_dict(cfg)
    del older["train"]["drop_last"], older["train"]["loss"]["aux_weight"], older["data"]["skip_bad"]
    assert result_hash(older) == result_hash(full)
    full["train"]["drop_last"] = True
    assert result_hash(full) != result_hash(older)
    # where only how fast or where a run goes differs, it is the same result
    fast = saved_dict(cfg)
    fast["train"]["threads"], fast["data"]["workers"], fast["name"] = 2, 1, "elsewhere"
    assert result_hash(fast) == result_hash(cfg)
