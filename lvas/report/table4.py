"""Table 4 (computational overhead): the paper's rows beside ours, measured from the experiment YAMLs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lvas.config import load_config
from lvas.flops import measure_config
from lvas.report.paper import TABLE4
from lvas.report.tables import write_table

PAPER_MODEL = "cstm_paper.yaml"
RELEASED_MODEL = "cstm_released.yaml"


def table4(experiments_dir: str | Path = "experiments", frames: int = 8, size: int = 320) -> pd.DataFrame:
    """Published rows, then ours: the released, paper and lean readings with their spatial parts
    (MACs and parameters over the same modules), then every Table 3 variant."""
    exp = Path(experiments_dir)
    rows = [{"method": r["method"], "source": "published", "input": r["input"], "GFLOPs (published)": r["gflops"],
             "GMACs (ours)": None, "GFLOPs 2/MAC (ours)": None, "params (M)": None, "AP (paper)": r["AP"]}
            for r in TABLE4]
    inp = f"{frames}x{size}x{size}"

    def ours(label: str, macs: int, params: int | None) -> dict:
        return {"method": label, "source": "lvas", "input": inp, "GFLOPs (published)": None,
                "GMACs (ours)": round(macs / 1e9, 2), "GFLOPs 2/MAC (ours)": round(2 * macs / 1e9, 2),
                "params (M)": None if params is None else round(params / 1e6, 2), "AP (paper)": None}

    readings = [
        ("lvas CSTM as released (R50+I3D, released CMAM/decoder)", RELEASED_MODEL, []),
        ("lvas CSTM paper reading (IV3+I3D, released CMAM, LGFS, Eq. 9)", PAPER_MODEL, []),
        ("lvas CSTM lean reading (IV3+I3D, Eq. 6 CMAM, LGFS, Eq. 9)", PAPER_MODEL,
         ["model.cmam.name=cmam_eq6", "model.cmam.channels=256"]),
    ]
    for label, file, over in readings:
        r = measure_config(load_config(exp / file, over), frames, size)
        rows.append(ours(label, r.macs, r.params))
        rows.append(ours(f"  {label.split(' (')[0]}, spatial part (encoder + its CMAMs + its text encoder)",
                         r.spatial_part(), r.spatial_part_params()))
    for path in sorted((exp / "table3").glob("*.yaml")):
        cfg = load_config(path)
        r = measure_config(cfg, frames, size)
        rows.append(ours(f"lvas {cfg.name}", r.macs, r.params))
    return pd.DataFrame(rows)


def write_table4(out_dir: str | Path = "reports", experiments_dir: str | Path = "experiments",
                 frames: int = 8, size: int = 320) -> list[Path]:
    df = table4(experiments_dir, frames, size)
    notes = ("GMACs count one multiply-add as 1 (the convention of the papers' \"GFLOPs\"); "
             "\"GFLOPs 2/MAC\" counts 2. Ours are measured with torch.utils.flop_counter.FlopCounterMode "
             "(element-wise ops not counted) by `lvas flops --table`.")
    return write_table(df, out_dir, "table4_gflops", "Table 4: computational overhead", notes=notes, digits=2)
