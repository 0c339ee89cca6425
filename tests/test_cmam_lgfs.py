"""CMAM (Eq. 1-6) and LGFS (Eq. 7-8) against literal transcriptions of the equations."""

import pytest
import torch
import torch.nn.functional as F

from lvas.models.cross_modal.cmam import CMAM
from lvas.models.coords import coord_feature
from lvas.models.fusions.cstm import LGFS


def cmam_by_the_equations(m: CMAM, v, words, mask):
    """Eq. 1-6 written out one sample at a time, forming the N x P matrix A."""
    outs = []
    for b in range(v.shape[0]):
        n = int(mask[b].sum())
        L = words[b, :n]  # (N, C_L)
        vb = v[b]
        c = coord_feature(*vb.shape[-2:])
        if vb.dim() == 4:  # (C, T, H, W)
            c = c.unsqueeze(1).expand(-1, vb.shape[1], -1, -1)
        Vc = torch.cat([vb, c], 0).flatten(1)  # (C_V + 8, P)
        Wv = m.visual_key.weight.flatten(1)
        V_ = Wv @ Vc + m.visual_key.bias[:, None]  # Eq. 1: (K, P)
        L_ = (m.text_key.weight.squeeze(-1) @ L.t() + m.text_key.bias[:, None]).t()  # Eq. 2: (N, K)
        A = L_ @ V_  # Eq. 3: (N, P)
        w = A.sum(1)  # Eq. 4
        w_t = torch.softmax(w / torch.linalg.norm(w), 0)
        l = (w_t[:, None] * L).sum(0)  # Eq. 5
        l_t = torch.sigmoid(m.gate.weight @ l + m.gate.bias)
        shape = (-1,) + (1,) * (vb.dim() - 1)
        outs.append(vb + vb * l_t.view(shape))  # Eq. 6
    return torch.stack(outs)


@pytest.mark.parametrize("dims", [2, 3])
def test_cmam_matches_equations(dims):
    torch.manual_seed(0)
    m = CMAM(visual_channels=6, text_channels=5, dims=dims, channels=4).double()
    v = torch.randn(2, 6, *((3,) if dims == 3 else ()), 4, 5, dtype=torch.float64)
    words = torch.randn(2, 7, 5, dtype=torch.float64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, :7] = True
    mask[1, :3] = True
    words = words * mask[..., None]
    got = m(v, words, mask)
    want = cmam_by_the_equations(m, v, words, mask)
    assert torch.allclose(got, want, atol=1e-10)
    # word weights are a distribution over the real words only
    assert torch.allclose(m.last_word_weights.sum(1), torch.ones(2, dtype=torch.float64))
    assert (m.last_word_weights[1, 3:] == 0).all()


def test_lgfs_matches_equations():
    torch.manual_seed(0)
    f = LGFS(channels=4, text_channels=3)
    v_s, v_t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    sentence = torch.randn(2, 3)
    g_s = sentence @ f.to_spatial.weight.t() + f.to_spatial.bias  # Eq. 7
    g_t = sentence @ f.to_temporal.weight.t() + f.to_temporal.bias
    e_s, e_t = torch.exp(g_s), torch.exp(g_t)
    gs, gt = e_s / (e_s + e_t), e_t / (e_s + e_t)  # softmax over each pair
    want = v_s * gs[:, :, None, None] + v_t * gt[:, :, None, None]  # Eq. 8
    assert torch.allclose(f(v_s, v_t, sentence), want, atol=1e-6)


def test_coordinate_feature_values():
    c = coord_feature(2, 4)
    assert c.shape == (8, 2, 4)
    # cell (row 1, col 0): x in [-1, -0.5], y in [0, 1]
    assert torch.allclose(c[:, 1, 0], torch.tensor([-1.0, 0.0, -0.5, 1.0, -0.75, 0.5, 0.25, 0.5]))


def test_decoder_eq9_top_down_sum():
    """Without refinement, V_D^5 = V_F^5 and V_D^i = V_F^i + Upsample(V_D^{i+1}) (Eq. 9); a branch
    without CMAM gets the sentence as a per-sample bias, equal to a 1x1 conv over the tiled input."""
    from lvas.models.base import StageSpec
    from lvas.models.coords import with_coords
    from lvas.models.decoders.cstm import Decoder

    torch.manual_seed(0)
    specs = [StageSpec(3, 2**i) for i in range(1, 6)]
    dec = Decoder({"spatial": specs}, text_channels=2, channels=4, refine=False, deep_supervision=False,
                  tile="always")
    feats = [torch.randn(1, 3, 64 // 2**i, 64 // 2**i) for i in range(1, 6)]
    sentence = torch.randn(1, 2)
    captured = {}
    dec.head.register_forward_hook(lambda mod, inp, out: captured.update(vd1=inp[0]))
    from lvas.models.model import Language

    lang = Language({"spatial": torch.zeros(1, 1, 2)}, torch.ones(1, 1, dtype=torch.bool), {"spatial": sentence}, sentence)
    out = dec({"spatial": feats}, lang, (64, 64))
    v_f = []
    for i, v in enumerate(feats):
        # the tiled reading: one 1x1 conv over [V; coords; sentence tiled into every pixel]
        w = torch.cat([dec.proj["spatial"][i].weight, dec.text_proj["spatial"][i].weight[:, :, None, None]], 1)
        tiled = torch.cat([with_coords(v), sentence[:, :, None, None].expand(-1, -1, *v.shape[-2:])], 1)
        v_f.append(dec.proj_norm["spatial"][i](F.conv2d(tiled, w)))
    v_d = v_f[4]
    for i in range(3, -1, -1):
        v_d = v_f[i] + F.interpolate(v_d, size=v_f[i].shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(captured["vd1"], v_d, atol=1e-5)
    assert out["logits"].shape == (1, 1, 64, 64) and out["aux"] == []
