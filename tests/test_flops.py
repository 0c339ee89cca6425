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
    assert sum(r.part_params.values()) == r.params
    assert r.parts["spatial encoder"] > 0 and r.parts["temporal encoder"] > 0 and r.parts["CMAM"] > 0


def test_paper_model_is_within_the_papers_budget():
    """Table 4: CSTM costs 213.06 GMACs at 8x320x320 and 19.54 for its spatial part."""
    r = measure_config(load_config(ROOT / "experiments" / "cstm_paper.yaml"), 8, 320)
    assert r.macs <= 213.06e9
    assert r.spatial_part() <= 19.54e9
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
    assert len(ours) == 2 + len(list((ROOT / "experiments" / "table3").glob("*.yaml")))
    assert (ours["input"] == "8x96x96").all() and (ours["GMACs (ours)"] > 0).all()
    tex = (tmp_path / "table4_gflops.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
