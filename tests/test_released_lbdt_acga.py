"""The released LBDT and ACGA checkpoint layouts load strictly into the models their YAML files build,
from state dicts these tests write themselves (tests/released_layout.py), and the loaded parts compute
what the released keys say (independent transcriptions of BCA and of ACGA's attention). The whole
forward against the released code is benchmarks/oracle_released_lbdt_acga.py (max difference 1.7e-6
for LBDT at 320 px, 1.5e-8 for ACGA at 128 px)."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lvas.config import load_config
from lvas.models import build_model
from lvas.models.coords import with_coords
from lvas.models.model import Language
from lvas.models.layouts.base import find_layout, load_layout
from released_layout import acga_state_dict, lbdt_state_dict

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [f"w{i}" for i in range(30)]


def paper_model(yaml: str):
    cfg = load_config(ROOT / "experiments" / yaml)
    c = copy.deepcopy(cfg)
    c.model.text.embedding = "glove_frozen"
    return c, build_model(c, vocab=VOCAB, load_weights=False)


def loaded(yaml: str, state: dict):
    """(state, the model of ``yaml`` with ``state`` loaded strictly through its detected layout, in eval mode)."""
    _, model = paper_model(yaml)
    load_layout(model, state, find_layout(state), f"{yaml} test file")
    return state, model.eval()


@pytest.fixture(scope="module")
def lbdt():
    return loaded("lbdt4_paper.yaml", lbdt_state_dict())


@pytest.fixture(scope="module")
def acga():
    return loaded("acga_paper.yaml", acga_state_dict())


def test_lbdt_layout_loads_strictly_and_every_used_tensor_lands(lbdt):
    state, model = lbdt
    assert find_layout(state).name == "LBDT"
    ours = model.state_dict()
    unused = [k for k in state if k.startswith(("decoder.spa_tower.", "decoder.tem_tower.", "decoder.mask_head."))]
    assert len(unused) == 2 * (4 * 6 + 2) + 2
    converted = find_layout(state).convert(state)
    assert all(torch.equal(ours[k], v) for k, v in converted.items())  # loaded as converted
    # ... and the conversion puts these released tensors where the paper's parts are (by hand)
    assert torch.equal(ours["bridge.5.layers.3.target_from_words.in_proj_weight"],
                       state["transformer.stage5.layers.3.cross_attn_flo.in_proj_weight"])
    assert torch.equal(ours["temporal.stages.3.5.conv3.weight"], state["res4_2.5.conv3.weight"])
    assert torch.equal(ours["decoder.fusion.text_gate.temporal.weight"], state["decoder.fusion.flo_txt_fc.weight"])
    assert torch.equal(ours["text.lstm.weight_hh_l0"], state["text_encoder.lstm.weight_hh_l0"])
    assert len(ours) - 1 == len(state) - len(unused)  # all of ours but the GloVe table


def test_lbdt_layout_refuses_what_does_not_fit():
    state = lbdt_state_dict()
    _, model = paper_model("lbdt4_paper.yaml")
    with pytest.raises(ValueError, match="not in its layout"):
        load_layout(model, {**state, "decoder.extra.weight": torch.zeros(1)}, find_layout(state))
    broken = dict(state)
    del broken["transformer.stage4.layers.0.linear1.weight"]
    with pytest.raises(ValueError, match="missing .*bridge.4.layers.0.ffn_in.weight"):
        load_layout(model, broken, find_layout(state))
    _, small = paper_model("lbdt_cpu.yaml")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_layout(small, state, find_layout(state))


def test_bca_computes_the_released_fusion(lbdt):
    """Bilateral channel activation transcribed from the released keys."""
    state, model = lbdt
    torch.manual_seed(0)
    img, flo, txt = torch.randn(2, 128, 10, 10), torch.randn(2, 128, 10, 10), torch.randn(2, 512)
    p = "decoder.fusion."
    lin = lambda x, n: F.linear(x, state[p + n + ".weight"], state[p + n + ".bias"])  # noqa: E731
    ia, fa = img.mean((2, 3)), flo.mean((2, 3))
    mix = F.relu(F.relu(lin(torch.cat([ia, fa], 1), "img_flo_fc.0")))
    gi = torch.sigmoid(lin(torch.cat([ia, txt], 1), "img_txt_fc")) * torch.sigmoid(lin(mix, "img_enhance_fc"))
    gf = torch.sigmoid(lin(torch.cat([fa, txt], 1), "flo_txt_fc")) * torch.sigmoid(lin(mix, "flo_enhance_fc"))
    x = F.conv2d(torch.cat([img * gi[..., None, None], flo * gf[..., None, None]], 1),
                 state[p + "fusion_cat_conv.0.weight"], padding=1)
    b = p + "fusion_cat_conv.1."
    ref = F.relu(F.batch_norm(x, state[b + "running_mean"], state[b + "running_var"], state[b + "weight"],
                              state[b + "bias"], False, 0.0, 1e-5))
    with torch.no_grad():
        assert torch.allclose(model.decoder.fusion(img, flo, txt), ref, atol=1e-5)


def test_lbdt_model_runs_on_a_two_frame_clip(lbdt):
    _, model = lbdt
    torch.manual_seed(0)
    tokens = torch.randint(1, 30, (1, 25))
    tokens[:, 5:] = 0
    with torch.no_grad():
        out = model(torch.rand(1, 3, 2, 64, 64), tokens, tokens > 0)
    assert out["logits"].shape == (1, 1, 64, 64) and torch.isfinite(out["logits"]).all() and out["aux"] == []


def test_acga_layout_loads_strictly(acga):
    state, model = acga
    assert find_layout(state).name == "ACGA"
    ours = model.state_dict()
    assert torch.equal(ours["temporal.stages.3.Mixed_4f.b1b.conv3d.weight"],
                       state["video_model.model.mixed_4f.branch_1.1.conv3d.weight"])
    assert torch.equal(ours["decoder.attention.gate.weight"], state["attention_layer.txt_increase.weight"])
    assert torch.equal(ours["text.conv.weight"], state["txt_model.0.weight"])
    assert not any(k.startswith("temporal.stages.4") for k in ours)  # the I3D stops at Mixed_4f
    dropped = [k for k in state if k.startswith(("video_model.model.mixed_5", "video_model.model.conv3d_0c"))]
    # every released tensor but Mixed_5b/5c, the classifier and BN step counters lands on one of ours
    counters = [k for k in state if k.endswith("num_batches_tracked") and not k.startswith(tuple(dropped))]
    assert len(ours) - 1 == len(state) - len(dropped) - len(counters) + len(
        [k for k in ours if k.endswith("num_batches_tracked")])


def test_acga_attention_computes_the_released_one(acga):
    """ACGA's two attentions transcribed from the released keys (video 832 + 8 coordinates, words 300)."""
    state, model = acga
    torch.manual_seed(0)
    v = F.normalize(torch.randn(2, 832, 4, 4), dim=1)
    words = torch.tanh(torch.randn(2, 20, 300))
    lin = lambda x, n: F.linear(x, state[f"attention_layer.{n}.weight"], state[f"attention_layer.{n}.bias"])  # noqa: E731
    vs = with_coords(v).permute(0, 2, 3, 1).reshape(2, 16, 840)
    score = torch.softmax(lin(vs, "video_reduce") @ words.transpose(1, 2) / 300 ** 0.5, -1)
    text = (score @ words).reshape(2, 4, 4, 300).permute(0, 3, 1, 2)
    g = lin(words.max(1).values, "txt_increase")[:, None]
    k, q, val = lin(vs, "video_linearK") * g, lin(vs, "video_linearQ") * g, lin(vs, "video_linearV")
    vis = (torch.softmax(k @ q.transpose(1, 2) / 840 ** 0.5, -1) @ val).reshape(2, 4, 4, 840).permute(0, 3, 1, 2)
    with torch.no_grad():
        t2, v2 = model.decoder.attention(v, words, words.amax(1))
    assert torch.allclose(t2, text, atol=1e-5) and torch.allclose(v2, vis[:, :832], atol=1e-5)


def test_acga_model_runs_and_averages_over_time(acga):
    _, model = acga
    torch.manual_seed(0)
    tokens = torch.randint(1, 30, (1, 20))
    tokens[:, 4:] = 0
    clip = torch.rand(1, 3, 8, 64, 64)
    with torch.no_grad():
        out = model(clip, tokens, tokens > 0)
        lang = model.language(tokens, tokens > 0)
        feats = model.encode(clip, lang)
        raw = model.temporal(clip)[-1]
    assert out["logits"].shape == (1, 1, 64, 64) and [a.shape[-1] for a in out["aux"]] == [4, 16]
    assert len(feats["temporal"]) == 4 and torch.allclose(feats["temporal"][-1], raw.mean(2), atol=1e-6)
    assert isinstance(lang, Language) and torch.equal(lang.joint, lang.words["temporal"].amax(1))


def test_acga_trains_mixed_4f_only():
    cfg = load_config(ROOT / "experiments" / "acga_paper.yaml")
    cfg.model.temporal.pretrained = "none"
    cfg.model.text.embedding = "learned"
    model = build_model(cfg, vocab=VOCAB)
    trained = {n.split(".")[2] for n, p in model.temporal.named_parameters() if p.requires_grad}
    assert trained == {"Mixed_4f"}
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_lbdt_loss_is_the_release_formula_with_its_clamped_sigmoid():
    """0.5 BCE(pos_weight 1.5) + 0.5 Dice, Dice on sigmoid clamped to [1e-4, 1 - 1e-4] (LBDT train.py)."""
    from lvas.models.losses.segmentation import build_loss

    cfg = load_config(ROOT / "experiments" / "lbdt4_paper.yaml")
    loss = build_loss(cfg)
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 6) * 4
    logits[0, 0, 0, :3] = torch.tensor([-30.0, 30.0, 12.0])  # beyond the clamp on both sides
    target = (torch.rand(2, 1, 6, 6) > 0.6).float()
    # by hand: the release's two terms
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(1.5))
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4).flatten(1)
    g = target.flatten(1)
    dice = (1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)).mean()
    x = logits.clone().requires_grad_(True)
    value = loss({"logits": x, "aux": []}, target)
    assert value.item() == pytest.approx((0.5 * bce + 0.5 * dice).item(), abs=1e-6)
    # unclamped, the -30 logit would change the value; clamped pixels pass no Dice gradient
    value.backward()
    xb = logits.clone().requires_grad_(True)
    (0.5 * F.binary_cross_entropy_with_logits(xb, target, pos_weight=torch.tensor(1.5))).backward()
    assert torch.allclose(x.grad[0, 0, 0, :3], xb.grad[0, 0, 0, :3], atol=1e-9)  # only BCE moves them
    assert not torch.allclose(x.grad[1], xb.grad[1])  # elsewhere Dice contributes
