"""No selection on the test split; the two-stage recipe's stage 2 keeps each branch exactly as trained."""

import json
from pathlib import Path

import pytest
import torch

from lvas.config import ConfigError, load_config
from lvas.engine.checkpoint import load_checkpoint
from lvas.engine.recipes import assemble_stage2, stage1_config
from lvas.engine.selection import build_selector
from lvas.engine.setup import make_splits
from lvas.engine.trainer import TrackOptions, train_experiment
from lvas.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(synth, *over):
    base = [f"data.root={synth}", "data.frames=4", "data.size=48", "data.workers=0", "train.batch_size=4",
            "train.epochs=2", "train.lr=0.003", "tracking.system_metrics=false", "tracking.overlays=0",
            "model.text.hidden=16", "model.text.embed_dim=8", "model.cmam.channels=8", "model.decoder.channels=8"]
    return load_config(ROOT / "experiments" / "cpu_small.yaml", base + list(over))


def _record_loads(monkeypatch):
    """Every sample the A2D-layout dataset reads, in order: (split, video)."""
    from lvas.data.a2d import A2DSentences

    seen = []
    original = A2DSentences.load

    def load(self, i):
        seen.append((self.split, self.index.iloc[i]["video"]))
        return original(self, i)

    monkeypatch.setattr(A2DSentences, "load", load)
    return seen


@pytest.mark.parametrize("select", ["last", "best_val"])
def test_the_test_split_is_read_only_after_training(synth, tmp_path, monkeypatch, select):
    seen = _record_loads(monkeypatch)
    cfg = tiny_cfg(synth, f"train.select={select}", "train.epochs=3")
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    splits = [s for s, _ in seen]
    assert "test" in splits
    first_test = splits.index("test")
    assert set(splits[first_test:]) == {"test"}, "a training/validation sample was read after the test split"
    assert result.test["n"] == splits.count("test")  # every test sample scored once, after training
    if select == "last":
        assert result.selected["epoch"] == 3 and not any(k.startswith("val/") for k in result.selected)
    else:
        held = json.loads((tmp_path / "run" / "val_videos.json").read_text())
        assert held and set(held) <= {v for s, v in seen if s == "train"}  # validated on training videos
        history = result.history
        best_epoch = max(history, key=lambda h: h["val/mIoU"])["epoch"]
        assert result.selected["epoch"] == best_epoch
        assert load_checkpoint(result.checkpoint)["selected"]["epoch"] == best_epoch


def test_validation_videos_are_held_out_of_training(synth):
    cfg = tiny_cfg(synth, "train.select={name: best_val, val_fraction: 0.3}")
    s = make_splits(cfg, build_selector(cfg))
    train, val, test, held = s.train, s.val, s.test, s.held
    full = train.dataset
    videos = full.videos()
    train_videos = {videos[i] for i in train.indices}
    val_videos = {videos[i] for i in val.indices}
    assert val_videos == set(held) and len(held) == round(0.3 * len(set(videos))) >= 1
    assert not train_videos & val_videos
    assert test.split == "test" and full.split == "train"
    # the choice does not depend on the seed (every seed of a row validates on the same videos)
    again = tiny_cfg(synth, "train.select={name: best_val, val_fraction: 0.3}", "seed=7")
    assert make_splits(again, build_selector(again)).held == held


def test_stage2_branches_reproduce_their_stage1_networks_bit_for_bit(synth):
    """Each frozen branch keeps its own embedding, GRU, CMAMs and encoder (the stage-2 bug: the
    temporal branch used to get the spatial network's word embedding)."""
    cfg = tiny_cfg(synth, "train.recipe=two_stage", "model.text.vocab_size=30")
    nets = {}
    for i, branch in enumerate(("spatial", "temporal")):
        torch.manual_seed(10 + i)  # different init, so a swapped part would show
        nets[branch] = build_model(stage1_config(cfg, branch)).eval()
        for p in nets[branch].parameters():
            p.data.add_(torch.randn_like(p) * 0.1)
    torch.manual_seed(99)
    both = build_model(cfg)
    frozen = assemble_stage2(both, {b: n.state_dict() for b, n in nets.items()})
    both.eval()
    assert frozen and all(not p.requires_grad for m in frozen for p in m.parameters())
    assert any(p.requires_grad for p in both.decoder.parameters())
    clip = torch.rand(2, 3, 4, 48, 48)
    tokens = torch.randint(2, 30, (2, 20))
    tokens[:, 6:] = 0
    mask = tokens > 0
    with torch.no_grad():
        lang = both.language(tokens, mask)
        feats, sentences = both.encode(clip, lang), lang.sentences
        for branch, net in nets.items():
            # PyTorch's CPU GRU takes another kernel when its weights require grad (last-bit
            # differences), so the stage-1 network is compared frozen, as the branch is in stage 2
            net.requires_grad_(False)
            lang1 = net.language(tokens, mask)
            f1, s1 = net.encode(clip, lang1), lang1.sentences
            assert torch.equal(sentences[branch], s1[branch]), branch
            for a, b in zip(feats[branch], f1[branch]):
                assert torch.equal(a, b), branch


def test_a_shared_text_encoder_cannot_come_from_two_stage1_networks(synth):
    cfg = tiny_cfg(synth, "train.recipe=two_stage", "model.text.name=gru_released", "model.text.vocab_size=30")
    nets = {b: build_model(stage1_config(cfg, b)) for b in ("spatial", "temporal")}
    with pytest.raises(ConfigError, match="shared by the spatial and temporal branches"):
        assemble_stage2(build_model(cfg), {b: n.state_dict() for b, n in nets.items()})


def test_searches_must_select_on_validation(tmp_path):
    from lvas.sweepspec import load_sweep

    bad = tmp_path / "s.yaml"
    bad.write_text(f"name: s\nbase: {ROOT / 'experiments' / 'cpu_small.yaml'}\nmetric: {{name: AP}}\nmethod: random\n"
                   "run_cap: 2\nparameters:\n  train.lr: {values: [0.001, 0.002]}\n")
    with pytest.raises(ConfigError, match="train.select: best_val"):
        load_sweep(bad)
    assert load_sweep(ROOT / "sweeps" / "hparams.yaml").method == "bayes"
