"""Contract tests parametrized over the registries (timm-style): declared shapes, finite
outputs, a gradient for every trainable parameter, on tiny CPU inputs."""

import math

import pytest
import torch

from lvas.config import from_dict
from lvas.models import build_model
from lvas.registry import CROSS_MODAL, DECODERS, FUSIONS, SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

# Smallest inputs each encoder accepts (Inception-v3's valid convolutions need >= 75 px).
SIZE = {"iv3": 96}


# Behind a ReLU on pooled features (BCA's stream mixer) a 2-clip batch may give an exact zero gradient:
# those parameters must be connected to the loss (a gradient exists), not necessarily non-zero.
RELU_GATED = (".mix.", ".stream_gate.")


def _assert_grads(module, loss):
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (
        p.grad is None or (not p.grad.abs().sum() > 0 and not any(g in n for g in RELU_GATED)))]
    assert not missing, f"parameters without gradient: {missing[:10]}"


@pytest.mark.parametrize("name", SPATIAL_ENCODERS.names())
def test_spatial_encoder_contract(name):
    torch.manual_seed(0)
    enc = SPATIAL_ENCODERS.build(name, pretrained="none")
    size = SIZE.get(name, 64)
    x = torch.rand(2, 3, size, size)
    feats = enc(x)
    specs = enc.output_shape()
    assert len(feats) == len(specs) == 5
    for i, (f, s) in enumerate(zip(feats, specs), start=1):
        assert s.stride == 2**i
        assert tuple(f.shape) == (2, s.channels, math.ceil(size / s.stride), math.ceil(size / s.stride))
        assert torch.isfinite(f).all()
    _assert_grads(enc, sum(f.mean() for f in feats))


@pytest.mark.parametrize("name", TEMPORAL_ENCODERS.names())
def test_temporal_encoder_contract(name):
    """Declared shapes are produced: 3D encoders over the clip, frame-difference ones as 2D maps;
    ACGA's I3D stops at stage 4 (Mixed_4f)."""
    torch.manual_seed(0)
    # (Video Swin's stochastic depth would skip whole blocks, leaving them without a gradient)
    enc = TEMPORAL_ENCODERS.build(name, {"pretrained": "none", **({"drop_path": 0.0} if "swin" in name else {})})
    clip = torch.rand(2, 3, 8, 64, 64)
    feats = enc(enc.view(clip))
    specs = enc.output_shape()
    assert len(feats) == len(specs) == len(enc.stages) and len(specs) in (4, 5)
    # stride 2^i for stage i (a transformer's patch embedding may start at 4: Video Swin)
    assert [s.stride for s in specs] == sorted(s.stride for s in specs) and specs[-1].stride in (16, 32)
    for i, (f, s) in enumerate(zip(feats, specs), start=1):
        assert s.stride == 2**i or (name.startswith("video_swin") and s.stride == max(4, 2**i))
        if enc.is_3d:
            assert tuple(f.shape) == (2, s.channels, math.ceil(8 / s.t_stride), 64 // s.stride, 64 // s.stride)
        else:
            assert tuple(f.shape) == (2, s.channels, 64 // s.stride, 64 // s.stride)
        assert torch.isfinite(f).all()
        assert enc.frame_feature(f, i, 4).shape == (2, s.channels, 64 // s.stride, 64 // s.stride)
    _assert_grads(enc, sum(f.mean() for f in feats))


@pytest.mark.parametrize("name", ["diff_tiny", "diff_r50"])
def test_difference_encoders_see_only_the_change(name):
    """|I_t - I_{t-1 step}|: a still clip and a black clip give the same features; motion changes them."""
    enc = TEMPORAL_ENCODERS.build(name).eval()
    still = torch.rand(1, 3, 1, 64, 64).expand(1, 3, 4, 64, 64).clone()
    with torch.no_grad():
        a = enc(enc.view(still))[-1]
        b = enc(enc.view(torch.zeros_like(still)))[-1]
        moved = still.clone()
        moved[:, :, 1] = torch.rand(1, 3, 64, 64)  # the frame one step before the target (index 2)
        c = enc(enc.view(moved))[-1]
    assert torch.allclose(a, b) and not torch.allclose(a, c)


def test_too_small_input_is_a_clear_error():
    enc = SPATIAL_ENCODERS.build("iv3")
    with pytest.raises(ValueError, match="at least 75 px"):
        enc(torch.rand(1, 3, 64, 64))


def test_hooks_feed_the_next_stage():
    enc = SPATIAL_ENCODERS.build("tiny2d")
    x = torch.rand(1, 3, 64, 64)
    plain = enc(x)
    hooked = enc(x, hooks={3: lambda v: v * 0})
    assert torch.equal(plain[1], hooked[1])
    assert hooked[2].abs().sum() == 0
    assert not torch.equal(plain[4], hooked[4])


# CPU-sized values of the settings components declare (each entry gets those it has)
SMALL = {"text": {"hidden": 16}, "cmam": {"channels": 8}, "decoder": {"channels": 8}}
SLOT_DEFAULT = {"text": ("text", "gru"), "cmam": ("cross_modal", "cmam_eq6"), "decoder": ("decoder", "eq9")}


def _tiny_cfg(**model):
    from lvas.registry import FAMILIES

    base = {"spatial": {"name": "tiny2d"}, "temporal": {"name": "tiny3d"}, "text": {"vocab_size": 12, "embed_dim": 8},
            "cmam": {}, "decoder": {}}
    for k, v in model.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    for slot, (family, default) in SLOT_DEFAULT.items():
        declared = FAMILIES[family].get(base[slot].get("name", default)).settings()
        base[slot] = {**{k: v for k, v in SMALL[slot].items() if k in declared}, **base[slot]}
    return from_dict({"model": base, "data": {"frames": 4, "size": 64}})


CASES = [("both", f, s) for f in FUSIONS.names() for s in ([], [5], [5, 4, 3, 2, 1])]
CASES += [("spatial", "lgfs", []), ("spatial", "lgfs", [5, 4, 3, 2, 1]),
          ("temporal", "lgfs", []), ("temporal", "lgfs", [5, 4, 3, 2, 1])]


@pytest.mark.parametrize("mode,fusion,stages", CASES)
def test_model_contract(mode, fusion, stages, tokens):
    torch.manual_seed(0)
    cfg = _tiny_cfg(mode=mode, fusion=fusion, cmam={"stages": stages})
    model = build_model(cfg)
    assert set(model.encoders()) == ({"spatial", "temporal"} if mode == "both" else {mode})
    clip = torch.rand(2, 3, 4, 64, 64)
    out = model(clip, *tokens)
    assert out["logits"].shape == (2, 1, 64, 64)
    assert [tuple(a.shape) for a in out["aux"]] == [(2, 1, 64 // 2**i, 64 // 2**i) for i in range(2, 6)]
    assert all(torch.isfinite(t).all() for t in [out["logits"], *out["aux"]])
    assert sum(len(m) for m in model.cmam.values()) == len(stages) * len(model.encoders())
    _assert_grads(model, out["logits"].mean() + sum(a.mean() for a in out["aux"]))


def test_spatial_only_ignores_other_frames(tokens):
    """The spatial-only model sees just the target (middle) frame."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="spatial")).eval()
    clip = torch.rand(2, 3, 4, 64, 64)
    other = clip.clone()
    other[:, :, 0] = torch.rand_like(other[:, :, 0])
    with torch.no_grad():
        assert torch.allclose(model(clip, *tokens)["logits"], model(other, *tokens)["logits"])
        other[:, :, 2] += 0.5
        assert not torch.allclose(model(clip, *tokens)["logits"], model(other, *tokens)["logits"])


def test_padding_words_do_not_change_the_output(tokens):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(cmam={"stages": [5, 4, 3, 2, 1]})).eval()
    ids, mask = tokens
    clip = torch.rand(2, 3, 4, 64, 64)
    junk = ids.clone()
    junk[~mask] = 11  # garbage where the mask says padding
    with torch.no_grad():
        assert torch.allclose(model(clip, ids, mask)["logits"], model(clip, junk, mask)["logits"], atol=1e-6)


def _grads_round_trip_flops(model, cfg, out, clip, tokens, tmp_path):
    """Every trainable parameter gets a gradient; a fresh model from the same config and the saved
    state dict reproduces the outputs; returns its FLOP report (and the fresh model)."""
    from lvas.flops import measure_model

    _assert_grads(model, out["logits"].mean() + sum(a.mean() for a in out["aux"]))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    again = build_model(cfg)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(clip, *tokens)["logits"], again(clip, *tokens)["logits"])
    return measure_model(again, frames=4, size=64), again


# Every cross-modal form x decoder x text encoder, mixed freely (a reading is a set of registry choices).
# (The query-based decoder and the pretrained language model have their own contract tests, with the
# folder of files RoBERTa is read from: tests/test_referformer.py.)
QUERY_BASED = {"referformer", "roberta"}
MIXES = [(cm, dec, txt, fusion) for cm in CROSS_MODAL.names() for dec in DECODERS.names() if dec not in QUERY_BASED
         for txt in TEXT_ENCODERS.names() if txt not in QUERY_BASED
         for fusion in {"released": ("concat", "lgfs"), "lbdt": ("bca", "lgfs")}.get(dec, ("lgfs",))]
N_AUX = {"eq9": 4, "released": 5, "lbdt": 0, "acga": 2}


@pytest.mark.parametrize("cross_modal,decoder,text,fusion", MIXES)
def test_registry_mix_contract(cross_modal, decoder, text, fusion, tokens, tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_cfg(cmam={"name": cross_modal, "stages": [5, 3, 1]}, decoder={"name": decoder},
                    text={"name": text}, fusion=fusion, mode="temporal" if decoder == "acga" else "both")
    model = build_model(cfg)
    for m in model.cmam.modules():  # the released CMAM starts as the identity (zero gate): open it
        if hasattr(m, "gate") and isinstance(m.gate, torch.nn.Linear):
            torch.nn.init.normal_(m.gate.weight, std=0.1)
    clip = torch.rand(2, 3, 4, 64, 64)
    out = model(clip, *tokens)
    assert out["logits"].shape == (2, 1, 64, 64)
    assert len(out["aux"]) == N_AUX[decoder] and all(torch.isfinite(t).all() for t in [out["logits"], *out["aux"]])
    r, again = _grads_round_trip_flops(model, cfg, out, clip, tokens, tmp_path)
    branches = list(again.encoders())
    assert all(r.parts[f"CMAM {b}"] > 0 for b in branches) and r.parts["fusion + decoder"] > 0
    assert r.parts[f"text {branches[0]}"] > 0


# The three methods and their cross-paper mixes, each a set of registry choices
METHODS = {
    "lbdt": dict(temporal={"name": "diff_tiny"}, text={"name": "lstm"}, bridge={"stages": [4, 5], "channels": 16, "heads": 4,
                 "layers": 2}, fusion="bca", decoder={"name": "lbdt"}),
    "lbdt+cmam": dict(temporal={"name": "diff_tiny"}, text={"name": "lstm"}, cmam={"stages": [5, 4]},
                      bridge={"stages": [4, 5], "channels": 16, "heads": 4, "layers": 1}, fusion="bca", decoder={"name": "lbdt"}),
    "bridge on 3D": dict(bridge={"stages": [3, 5], "channels": 16, "heads": 4, "layers": 1}),
    "acga": dict(mode="temporal", temporal={"name": "tiny3d_s16"}, text={"name": "conv1d"}, decoder={"name": "acga"}),
    "acga+cmam": dict(mode="temporal", temporal={"name": "tiny3d_s16"}, text={"name": "conv1d"}, cmam={"stages": [4, 2]},
                      decoder={"name": "acga"}),
    "cstm+bca": dict(fusion="bca"),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_contract(method, tokens, tmp_path):
    """Output shapes, finite values, a gradient for every trainable parameter, a state-dict round trip
    and FLOPs counted for every part, for each method and cross-paper mix."""
    torch.manual_seed(0)
    cfg = _tiny_cfg(**METHODS[method])
    model = build_model(cfg)
    clip = torch.rand(2, 3, 4, 64, 64)
    out = model(clip, *tokens)
    assert out["logits"].shape == (2, 1, 64, 64)
    assert len(out["aux"]) == N_AUX[cfg.model.decoder.name]
    assert len(model.bridge) == len(cfg.model.bridge.stages)
    r, _ = _grads_round_trip_flops(model, cfg, out, clip, tokens, tmp_path)
    assert all(v >= 0 for v in r.parts.values()) and r.parts["fusion + decoder"] > 0 and r.parts["text"] > 0
    if cfg.model.bridge.stages:
        assert r.parts["bridge"] > 0
    pieces = [r.parts[k] for k in ("spatial encoder", "temporal encoder", "text", "CMAM", "bridge", "fusion + decoder")]
    assert sum(pieces) == r.macs  # the parts cover the whole model, each MAC once
