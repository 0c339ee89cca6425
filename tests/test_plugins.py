"""A researcher's components are files of theirs: named in a YAML's ``imports:``, registered by their
own decorators, imported by every process that runs a trial, and reported like lvas's own. Nothing
under lvas/ changes. Also: a model that predicts every frame of its clip."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lvas.cli import main

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''"""My components: a gated fusion with a temperature, a one-head decoder, a focal loss, a looser protocol."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvas import catalogue
from lvas.metrics import Protocol
from lvas.registry import DECODERS, EVALUATORS, FUSIONS, LOSSES, PROTOCOLS
from lvas.settings import PositiveFloat, PositiveInt


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    """A sigmoid gate from the sentence between the two streams, sharpened by a temperature."""

    def __init__(self, channels: int, text_channels: int, *, temperature: PositiveFloat = 1.0) -> None:
        super().__init__()
        self.gate = nn.Linear(text_channels, channels)
        self.temperature = temperature

    def forward(self, v_s, v_t, sentence):
        g = torch.sigmoid(self.gate(sentence) / self.temperature)[..., None, None]
        return g * v_s + (1 - g) * v_t


@DECODERS.register("one_head")
class OneHead(nn.Module):
    """Each stream's stride-2 map projected, fused, one 1x1 head, upsampled."""

    def __init__(self, branch_specs, text_channels, sentence_channels=None, fusion=None, modulated=(), *,
                 channels: PositiveInt = 8) -> None:
        super().__init__()
        self.branches = list(branch_specs)
        self.proj = nn.ModuleDict({b: nn.Conv2d(s[0].channels, channels, 1) for b, s in branch_specs.items()})
        self.fuse = fusion(channels, sentence_channels) if len(self.branches) == 2 else None
        self.head = nn.Conv2d(channels, 1, 1)

    def forward(self, feats, lang, out_size):
        maps = [self.proj[b](feats[b][0]) for b in self.branches]
        x = self.fuse(maps[0], maps[1], lang.joint) if self.fuse is not None else maps[0]
        return {"logits": F.interpolate(self.head(x), size=out_size, mode="bilinear"), "aux": []}


@LOSSES.register("focal")
def focal(*, gamma: float = 2.0):
    """Focal binary cross-entropy."""

    def loss(outputs, target):
        logits = outputs["logits"].float()
        p = torch.sigmoid(logits)
        pt = p * target + (1 - p) * (1 - target)
        return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (1 - pt) ** gamma).mean()

    return loss


def _loose(logits, gt, lb):
    h, w = lb.resized
    up = F.interpolate(logits[None, None, :h, :w].float(), size=lb.orig, mode="bilinear", align_corners=False)
    return torch.sigmoid(up[0, 0]) > 0.3, gt.bool()


PROTOCOLS.register("loose", "sigmoid > 0.3 at the original size")(Protocol("loose", _loose, 0.0, False))

catalogue.register(catalogue.Metric("vIoU", "mean over videos of the videos' mean IoU", evaluator="per_video"))


@EVALUATORS.register("per_video")
class PerVideo:
    """Mean IoU per video, then over videos (a new aggregation rule)."""

    def __init__(self, protocol):
        self.ious = {}

    def process(self, pred, truth, meta):
        inter, union = (pred & truth).sum().item(), (pred | truth).sum().item()
        self.ious.setdefault(meta["video"], []).append((inter + 1e-6) / (union + 1e-6))
        return {}

    def compute(self):
        means = [sum(v) / len(v) for v in self.ious.values()]
        return {"vIoU": 100 * sum(means) / len(means)} if means else {}
'''

MULTI = '''"""A decoder that predicts a mask for every frame of its clip (from the temporal stream's maps)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lvas.registry import DECODERS


@DECODERS.register("every_frame")
class EveryFrame(nn.Module):
    """Stride-2 3D maps of the one stream -> one mask per frame (B, T, H, W)."""

    temporal_maps = True  # the model hands over the maps with their time axis

    def __init__(self, branch_specs, text_channels, sentence_channels=None, fusion=None, modulated=(), *,
                 channels: int = 8, frames: int = 4) -> None:
        super().__init__()
        self.frames = frames
        self.branch = next(iter(branch_specs))
        self.proj = nn.Conv3d(branch_specs[self.branch][0].channels, channels, 1)
        self.head = nn.Conv3d(channels, 1, 1)

    def forward(self, feats, lang, out_size):
        x = feats[self.branch][0]  # (B, C, T', h, w)
        y = self.head(F.relu(self.proj(x)))  # (B, 1, T', h, w)
        y = F.interpolate(y, size=(self.frames, *out_size), mode="trilinear", align_corners=False)[:, 0]
        return {"logits": y, "frames": list(range(self.frames)), "aux": []}
'''


@pytest.fixture(autouse=True)
def _forget_plugins():
    """The user's components registered by a test in this process are gone after it (the other test
    modules see lvas's own registries only)."""
    from lvas import catalogue
    from lvas.registry import FAMILIES, all_families

    all_families()  # lvas's own entries, loaded before the snapshot
    entries = {k: dict(reg._entries) for k, reg in FAMILIES.items()}
    metrics = dict(catalogue.METRICS)
    modules = set(sys.modules)
    yield
    for k, reg in FAMILIES.items():
        reg._entries.clear()
        reg._entries.update(entries[k])
    catalogue.METRICS.clear()
    catalogue.METRICS.update(metrics)
    for name in set(sys.modules) - modules:
        if name.startswith("lvas_plugin_"):
            del sys.modules[name]


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def plugin_sweep(tmp_path, synth):
    (tmp_path / "my_parts.py").write_text(PLUGIN)
    sweep = tmp_path / "mine.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "mine", "base": str(ROOT / "experiments" / "cpu_small.yaml"), "imports": ["my_parts.py"],
        "metric": {"name": "vIoU"}, "seeds": 2, "report": {"table": "ablation", "baseline": "cold"},
        "overrides": {"data.root": str(synth), "data.frames": 4, "data.size": 48, "data.workers": 0,
                      "train.epochs": 2, "train.batch_size": 4, "tracking.system_metrics": False,
                      "tracking.overlays": 0, "model.text.hidden": 16, "model.text.embed_dim": 8,
                      "model.cmam.channels": 8, "model.fusion": "gated", "model.decoder": {"name": "one_head"},
                      "train.loss": {"name": "focal", "gamma": 1.5}, "train.protocol": "loose",
                      "data.evaluators": ["per_video"]},
        "variants": [{"label": "cold", "overrides": {"model.fusion.temperature": 0.5}},
                     {"label": "warm", "overrides": {"model.fusion.temperature": 4.0}}]}))
    return sweep


def test_a_users_components_run_in_a_sweep_and_its_report_with_no_edit_of_lvas(plugin_sweep, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    before = _tree_digest(ROOT / "lvas")
    # two worker processes: each imports the user's file itself, from the sweep file's imports:
    assert main(["sweep", str(plugin_sweep), "--workers", "2", "-q"]) == 0
    assert main(["report", str(plugin_sweep), "--no-figures", "-q"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "mine" / "ablation.csv")
    ours = csv[csv["source"] == "lvas"].set_index("row")
    assert list(ours.index) == ["cold", "warm"] and list(ours["n"]) == [2, 2]
    assert ours.loc["warm", "p (seeds)"] == ours.loc["warm", "p (seeds)"]  # a test over the two seeds was made
    configs = [yaml.safe_load(p.read_text()) for p in (tmp_path / "runs").rglob("trials/*/config.yaml")]
    assert sorted(c["model"]["fusion"]["temperature"] for c in configs) == [0.5, 0.5, 4.0, 4.0]
    assert {c["train"]["loss"]["name"] for c in configs} == {"focal"} and all(c["train"]["loss"]["gamma"] == 1.5
                                                                                for c in configs)
    # the user's protocol scored every run and is a line of the every-protocol table
    protocols = pd.read_csv(tmp_path / "reports" / "mine" / "ablation_protocols.csv")
    assert {"loose", "paper", "coco"} <= set(protocols["protocol"]) and "mIoU" in protocols.columns
    assert set(protocols[protocols["scored with"]]["protocol"]) == {"loose"}
    samples = json.loads(next((tmp_path / "runs").rglob("test_samples.json")).read_text())
    assert samples["protocol"] == "loose"
    # the user's evaluator scored every run, its metric is the sweep's metric and the table's Δ column
    for m in (tmp_path / "runs").rglob("trials/*/test_metrics.json"):
        assert 0 <= json.loads(m.read_text())["vIoU"] <= 100
    assert "Δ vIoU vs baseline" in csv.columns and ours.loc["cold", "Δ vIoU vs baseline"] == 0
    assert _tree_digest(ROOT / "lvas") == before  # nothing under lvas/ was written

    # The user's fusion gains a setting with a default (as lvas's own components do between
    # versions): the finished trials stay current -- a rerun has nothing to do, no trial is stale.
    (tmp_path / "my_parts.py").write_text(PLUGIN.replace(
        "*, temperature: PositiveFloat = 1.0) -> None:", "*, temperature: PositiveFloat = 1.0, bias: float = 0.0) -> None:"))
    rerun = subprocess.run([sys.executable, "-m", "lvas.cli", "sweep", str(plugin_sweep), "-q"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(list((tmp_path / "runs").rglob("trials/*/test_metrics.json"))) == 4
    # ... while setting it away from its default is a change the sweep refuses to call current
    spec = yaml.safe_load(plugin_sweep.read_text())
    spec["overrides"]["model.fusion.bias"] = 0.5
    plugin_sweep.write_text(yaml.safe_dump(spec))
    changed = subprocess.run([sys.executable, "-m", "lvas.cli", "sweep", str(plugin_sweep), "-q"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert changed.returncode != 0 and "model.fusion.bias" in changed.stderr, changed.stderr[-2000:]


def test_list_names_a_plugins_components_and_where_they_came_from(tmp_path):
    (tmp_path / "my_parts.py").write_text(PLUGIN)
    code = ("import sys\nfrom lvas.cli import main\n"
            f"sys.exit(main(['list', 'fusion', '--import', {str(tmp_path / 'my_parts.py')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    gated = next(line for line in out.stdout.splitlines() if line.strip().startswith("gated"))
    assert "temperature=1.0" in gated and f"[from {tmp_path / 'my_parts.py'}]" in gated
    assert any(line.strip().startswith("lgfs") and "[from" not in line for line in out.stdout.splitlines())


def test_a_stored_config_never_imports_the_code_it_names(tmp_path):
    """A config read back from a checkpoint or a record that names a plugin is refused until the user
    imports it (``--import``); the same config written by the user in a YAML imports it."""
    from lvas.config import ConfigError, from_dict

    (tmp_path / "elsewhere.py").write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\n")
    cfg = {"imports": [str(tmp_path / "elsewhere.py")], "model": {"fusion": "lgfs"}}
    with pytest.raises(ConfigError, match="lvas runs no code a stored config names"):
        from_dict(cfg, run_imports=False)
    assert not (tmp_path / "RAN").exists()
    from_dict(cfg)  # what load_config does with the user's own YAML
    assert (tmp_path / "RAN").exists()
    from_dict(cfg, run_imports=False)  # imported now: a stored config naming it is read


def test_a_model_may_predict_every_frame_of_its_clip(tmp_path, monkeypatch):
    """Clip in, a mask per frame out: the dataset supplies targets for every annotated frame of the
    clip, the loss sees them all, and evaluation scores every annotated frame the model predicted."""
    from lvas.data.synthetic import generate

    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "synth", videos=10, frames=4, size=48, progress=False, annotate="all")
    (tmp_path / "every_frame.py").write_text(MULTI)
    exp = tmp_path / "multi.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "cpu_small.yaml"), "imports": ["every_frame.py"],
        "model": {"mode": "temporal", "decoder": {"name": "every_frame", "frames": 4}, "cmam": {"stages": []},
                  "text": {"hidden": 16, "embed_dim": 8}},
        "data": {"dataset": {"name": "synth", "targets": "clip"}, "root": str(tmp_path / "synth"), "frames": 4,
                 "size": 48, "workers": 0, "frame_stride": 1},
        "train": {"epochs": 1, "batch_size": 4, "protocol": "strict"},
        "tracking": {"system_metrics": False, "overlays": 1}}))
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "run"), "-q"]) == 0
    samples = json.loads((tmp_path / "run" / "test_samples.json").read_text())["samples"]
    from lvas.data.a2d import A2DSentences

    test = A2DSentences(tmp_path / "synth", "test", frames=4, frame_stride=1, size=48, targets="clip")
    annotated = sum(len(test[i]["target_frames"]) for i in range(len(test)))
    assert len(test) * 2 <= annotated == len(samples)  # several scored frames per sample, every one once
    ids = [s["id"] for s in samples]
    assert len({i.split("/")[1] for i in ids}) == 4  # frames 1..4 of the clips were all scored
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["n"] == len(samples) and 0 <= metrics["mIoU"] <= 100


def test_the_example_query_decoder_is_one_file_that_trains_and_is_scored(tmp_path, synth, monkeypatch):
    """examples/plugins/query_decoder.py (the README's example of a query-based decoder) named on the
    command line, trained one epoch on both streams with LGFS, scored; its extra outputs have the
    declared shapes."""
    import torch

    monkeypatch.chdir(tmp_path)
    example = ROOT / "examples" / "plugins" / "query_decoder.py"
    over = [f"imports=[{example}]", "model.decoder={name: queries, queries: 3, channels: 16, heads: 2}",
            f"data.root={synth}", "data.frames=4", "data.size=48", "data.workers=0", "train.epochs=1",
            "train.batch_size=4", "tracking.system_metrics=false", "tracking.overlays=0", "model.text.hidden=16",
            "model.text.embed_dim=8", "model.cmam.channels=8"]
    assert main(["train", str(ROOT / "experiments" / "cpu_small.yaml"), *over, "--run-dir", str(tmp_path / "run"),
                 "-q"]) == 0
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["n"] > 0 and 0 <= metrics["AP"] <= 100
    from lvas.config import load_config
    from lvas.models import build_model

    cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", over)
    model = build_model(cfg)
    out = model(torch.rand(2, 3, 4, 48, 48), torch.randint(1, 20, (2, 6)), torch.ones(2, 6, dtype=torch.bool))
    assert out["logits"].shape == (2, 1, 48, 48) and out["query_logits"].shape == (2, 3, 12, 12)
    assert out["scores"].shape == (2, 3) and out["aux"] == []
