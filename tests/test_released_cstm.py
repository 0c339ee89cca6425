"""CSTM as released: its checkpoint layout loads strictly into experiments/cstm_released.yaml, and
the loaded model computes what the released forward computes (checked here against the paper's
equations in the released form, term by term, on the loaded weights)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lvas.config import load_config
from lvas.models import build_model
from lvas.models.layouts.cstm import is_released_cstm, load_released
from released_layout import released_state_dict

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.text.hidden=32", "model.cmam.channels=32", "model.decoder.channels=16", "model.text.vocab_size=40",
         "data.size=64"]


@pytest.fixture(scope="module")
def released():
    return released_state_dict(dim=32, dec=16, seed=0)


@pytest.fixture(scope="module")
def model(released, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth.tar"
    # the release saves {'epoch', 'state_dict'}; DataParallel training adds 'module.'
    torch.save({"epoch": 12, "state_dict": {f"module.{k}": v for k, v in released.items()}}, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    m = build_model(load_config(ROOT / "experiments" / "cstm_released.yaml", SMALL), load_weights=False)
    assert is_released_cstm(state["state_dict"])
    load_released(m, state, str(path))
    return m.eval()


def test_every_released_key_lands_on_exactly_one_of_ours(model, released):
    ours = model.state_dict()
    assert len(ours) == len(released) + 1  # + the GloVe table the release keeps outside the model
    n_params = sum(v.numel() for k, v in released.items() if not k.endswith(("running_mean", "running_var",
                                                                            "num_batches_tracked")))
    assert sum(p.numel() for p in model.parameters()) == n_params
    for src, dst in [("t_layer4.3.branch_1.1.conv3d.weight", "temporal.stages.3.Mixed_4d.b1b.conv3d.weight"),
                     ("t_layer1.0.batch3d.running_var", "temporal.stages.0.Conv3d_1a_7x7.bn.running_var"),
                     ("s_layer2.1.0.conv2.weight", "spatial.stages.1.layer1.0.conv2.weight"),
                     ("s_layer1.1.running_mean", "spatial.stages.0.bn1.running_mean"),
                     ("cmam_t.2.vt.conv3d.weight", "cmam.temporal.3.visual.0.weight"),
                     ("cmam_s.4.gamma.0.bias", "cmam.spatial.5.gate.bias"),
                     ("cmam_s.0.l_query.1.running_var", "cmam.spatial.1.query.1.running_var"),
                     ("txt_encoder.weight_hh_l0", "text.gru.weight_hh_l0"),
                     ("vres_trans.3.0.weight", "decoder.trans.temporal.3.0.weight"),
                     ("conv_fuse1.4.0.weight", "decoder.fuse.4.conv.0.weight"),
                     ("conv_fuse2.0.1.bias", "decoder.merge.0.1.bias"),
                     ("conv_mask.5.4.weight", "decoder.heads.5.4.weight")]:
        assert torch.equal(ours[dst], released[src]), (src, dst)


def test_a_missing_or_foreign_key_is_refused_by_name(released):
    m = build_model(load_config(ROOT / "experiments" / "cstm_released.yaml", SMALL), load_weights=False)
    broken = dict(released)
    del broken["conv_mask.2.2.bias"]
    with pytest.raises(ValueError, match=r"missing \['decoder.heads.2.2.bias'\]"):
        load_released(m, broken)
    with pytest.raises(ValueError, match="not in the released CSTM layout"):
        load_released(m, {**released, "extra_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape mismatches"):
        load_released(build_model(load_config(ROOT / "experiments" / "cstm_released.yaml",
                                              [*SMALL, "model.decoder.channels=8"]), load_weights=False), released)


def test_the_loaded_model_computes_the_released_forward(model, released):
    """Independent transcription of the released decoder and one CMAM on the released weights."""
    torch.manual_seed(0)
    clip = torch.rand(1, 3, 8, 64, 64)
    tokens = torch.randint(2, 40, (1, 20))
    tokens[:, 5:] = 0
    mask = tokens > 0
    with torch.no_grad():
        out = model(clip, tokens, mask)
        feats = model.encode(clip, model.language(tokens, mask))

        def block(x, p, bias=False):  # conv (padding 1) + BN (eval) + ReLU, from released keys
            w = released[f"{p}.0.weight"]
            x = F.conv2d(x, w, released[f"{p}.0.bias"] if bias else None, padding=w.shape[-1] // 2)
            x = F.batch_norm(x, released[f"{p}.1.running_mean"], released[f"{p}.1.running_var"],
                             released[f"{p}.1.weight"], released[f"{p}.1.bias"], False, 0.0, 1e-5)
            return F.relu(x)

        s_res = [block(f, f"ires_trans.{i}") for i, f in enumerate(feats["spatial"])]
        t_res = [block(f, f"vres_trans.{i}") for i, f in enumerate(feats["temporal"])]
        x = block(torch.cat([s_res[4], t_res[4]], 1), "conv_fuse1.4", bias=True)
        maps = [x]
        for i in range(3, -1, -1):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            lateral = block(torch.cat([t_res[i], s_res[i]], 1), f"conv_fuse1.{i}", bias=True)
            x = block(torch.cat([x, lateral], 1), f"conv_fuse2.{i}", bias=True)
            maps.append(x)
        maps.append(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))

        def head(x, i):
            x = F.relu(F.conv2d(x, released[f"conv_mask.{i}.0.weight"], released[f"conv_mask.{i}.0.bias"], padding=1))
            x = F.relu(F.conv2d(x, released[f"conv_mask.{i}.2.weight"], released[f"conv_mask.{i}.2.bias"], padding=1))
            return F.conv2d(x, released[f"conv_mask.{i}.4.weight"], released[f"conv_mask.{i}.4.bias"])

        expected = [head(m, i) for i, m in enumerate(maps)]
    for got, exp in zip([*out["aux"], out["logits"]], expected):
        assert got.shape == exp.shape and exp.abs().max() > 1e-2 and torch.isfinite(exp).all()
        assert torch.allclose(got, exp, atol=1e-5, rtol=1e-4)


def test_released_cmam_term_by_term():
    """V~ = V + v * (sigmoid(Linear(l)) - 0.5), v = ReLU(BN(Conv3x3(V + coords))), keys BN(Conv1x1(v)),
    queries BN1d(Conv1d(L)), softmax over all N positions of the L2-normalised summed attention."""
    from lvas.models.cross_modal.cmam import ReleasedCMAM
    from lvas.models.coords import with_coords

    torch.manual_seed(0)
    m = ReleasedCMAM(6, 5, dims=2, channels=5)
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    m.eval()
    v, words = torch.randn(2, 6, 4, 4), torch.randn(2, 7, 5)
    with torch.no_grad():
        u = m.visual(with_coords(v))
        k = m.key(u).flatten(2)  # (B, K, P)
        q = m.query(words.transpose(1, 2))  # (B, K, N)
        a = torch.stack([k[b].t() @ q[b] for b in range(2)])  # (B, P, N), formed explicitly
        w = a.sum(1)
        w = torch.softmax(w / w.norm(dim=1, keepdim=True), dim=1)
        l = (w[:, :, None] * words).sum(1)
        expected = v + u * (torch.sigmoid(l @ m.gate.weight.t() + m.gate.bias) - 0.5)[:, :, None, None]
        got = m(v, words, torch.ones(2, 7, dtype=torch.bool))
    assert torch.allclose(got, expected, atol=1e-5)
    fresh = ReleasedCMAM(6, 5, channels=5)
    assert torch.equal(fresh(v, words, torch.ones(2, 7, dtype=torch.bool)), v)  # zero-initialised gate


def test_lvas_eval_scores_a_released_checkpoint(tmp_path, capsys):
    """`lvas eval <released .pth.tar> --config experiments/cstm_released.yaml` builds the released
    model (GloVe rows from the file, OOV = 0), loads the file strictly and scores it."""
    import json

    from lvas.cli import main
    from lvas.data.synthetic import generate
    from lvas.data.vocab import Vocabulary

    root = tmp_path / "synth"
    generate(root, videos=6, frames=8, size=64, progress=False)
    words = Vocabulary.build(["the red circle"]).itos[2:]
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(f"{w} " + " ".join(f"{0.01 * (i + j):.2f}" for j in range(300)) + "\n"
                             for i, w in enumerate(words)))
    ckpt = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 12, "state_dict": released_state_dict(dim=32, dec=16, seed=1)}, ckpt)
    over = [f"data.root={root}", "data.workers=0", "train.batch_size=2", f"model.text.glove_path={glove}",
            "model.text.hidden=32", "model.cmam.channels=32", "model.decoder.channels=16", "data.size=64"]
    out = tmp_path / "m.json"
    assert main(["eval", str(ckpt), *over, "--config", str(ROOT / "experiments" / "cstm_released.yaml"),
                 "--quiet", "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["protocol"] == "paper" and m["n"] > 0 and 0 <= m["mIoU"] <= 100
    # without --config the same file is refused in one line that says what to do
    assert main(["eval", str(ckpt), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--config experiments/cstm_released.yaml" in err and "Traceback" not in err


def test_a_crafted_checkpoint_cannot_run_code(tmp_path, capsys):
    from lvas.cli import main

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": {}, "x": Evil()}, path)
    assert main(["eval", str(path), "--quiet"]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "evil.pt" in err and "Traceback" not in err
