from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lvas.cli import main
from lvas.config import load_config
from lvas.flops import PARTS, count_macs, measure_config

ROOT = Path(__file__).resolve().parents[1]


def test_mac_count_of_one_convolution_is_exact():
    conv = nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1)
    x = torch.zeros(1, 16, 40, 40)
    # output 20 x 20 positions, each 32 outputs x (16 x 3 x 3) multiply-adds
    assert count_macs(conv, x) == 20 * 20 * 32 * 16 * 3 * 3
    conv3d = nn.Conv3d(4, 8, kernel_size=(3, 1, 1))
    assert count_macs(conv3d, torch.zeros(2, 4, 5, 6, 6)) == 2 * 3 * 6 * 6 * 8 * 4 * 3


def test_parts_add_up_to_the_total():
    r = measure_config(load_config(ROOT / "experiments" / "cpu_small.yaml"))
    assert sum(r.parts[p] for p in PARTS) == r.macs
    assert sum(r.part_params[p] for p in PARTS) == r.params
    assert r.spatial_part_params() > r.part_params["spatial encoder"]  # + its CMAMs and text encoder
    assert r.parts["spatial encoder"] > 0 and r.parts["temporal encoder"] > 0 and r.parts["CMAM"] > 0


def test_paper_model_is_within_the_papers_budget():
    """Table 4: CSTM costs 213.06 GMACs at 8x320x320 and 19.54 for its spatial part; with the
    released CMAM form the spatial part lands within 5 % of it (the Eq. 6 form would be ~6.4)."""
    r = measure_config(load_config(ROOT / "experiments" / "cstm_paper.yaml"), 8, 320)
    assert r.macs <= 213.06e9
    assert abs(r.spatial_part() / 19.54e9 - 1) < 0.05
    lean = measure_config(load_config(ROOT / "experiments" / "cstm_paper.yaml", ["model.cmam.name=cmam_eq6",
                                                                                 "model.cmam.channels=256"]), 8, 320)
    assert lean.spatial_part() < 8e9 < r.spatial_part()
    only_spatial = measure_config(load_config(ROOT / "experiments" / "table3" / "a1_spatial_only.yaml"), 8, 320)
    assert only_spatial.parts["temporal encoder"] == 0 and only_spatial.macs < r.macs


def test_cli_flops_and_table4(tmp_path, capsys):
    assert main(["flops", str(ROOT / "experiments" / "cpu_small.yaml"), "--size", "64"]) == 0
    out = capsys.readouterr().out
    for part in PARTS:
        assert part in out
    assert "GMACs" in out and "GFLOPs(2/MAC)" in out
    assert main(["flops", "--table", "--out", str(tmp_path), "--experiments", str(ROOT / "experiments"),
                 "--size", "96"]) == 0
    df = pd.read_csv(tmp_path / "table4_gflops.csv")
    assert {"ACGA ICCV2019", "CSTM (paper)"} <= set(df["method"])
    ours = df[df["source"] == "lvas"]
    # + ACGA, LBDT-4 and ReferFormer with Video-Swin-B, Video-Swin-T and ResNet-50
    assert len(ours) == 6 + len(list((ROOT / "experiments" / "table3").glob("*.yaml"))) + 5
    acga = df[df["method"].str.startswith("lvas ACGA")].iloc[0]
    assert acga["input"] == "16x512x512" and 300 < acga["GMACs (ours)"] < 370
    released = ours[ours["method"].str.startswith("lvas CSTM as released")]
    assert len(released) == 1 and released["GMACs (ours)"].iloc[0] > 0
    rf = ours[ours["method"].str.startswith("lvas ReferFormer")]
    assert len(rf) == 3 and (rf["input"] == "5x384x384").all()
    # frozen RoBERTa-base (124,645,632 parameters) is counted but not trained; with ResNet-50 also its
    # stem and res2 (0.22 M), frozen as released
    frozen = (rf["params (M)"] - rf["trained (M)"]).round(1).tolist()
    assert frozen == [124.6, 124.6, 124.9], frozen
    assert (ours["trained (M)"].fillna(0) <= ours["params (M)"]).all()  # spatial-part rows: no figure
    cstm = ~ours["method"].str.startswith(("lvas ACGA", "lvas LBDT", "lvas ReferFormer"))  # at their paper's input
    assert (ours[cstm]["input"] == "8x96x96").all() and (ours["GMACs (ours)"] > 0).all()
    tex = (tmp_path / "table4_gflops.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_released_model_costs_what_the_release_costs():
    """RyanHTR/CSTM at 1x8x320x320 (FlopCounterMode, halved): 424.47 GMACs, 184.38 M parameters."""
    r = measure_config(load_config(ROOT / "experiments" / "cstm_released.yaml"), 8, 320)
    assert abs(r.gmacs / 424.47 - 1) < 0.005
    assert abs(r.params / 184.38e6 - 1) < 0.005
    # its 3-D CMAMs (107) and decoder heads (161 of the decoder's 262) dominate; the encoders are 37
    assert 100e9 < r.parts["CMAM temporal"] < 110e9 and r.parts["fusion + decoder"] > 250e9
