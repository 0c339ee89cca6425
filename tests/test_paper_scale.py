"""Paper size on the CPU (issue 22 §1, issue 27 §2): one experiment per method trains one optimiser step
and evaluates the test split at its real input size (320^2 x 8 frames; ACGA 16 x 512^2; ReferFormer
5 x 384^2 with Video-Swin-B, -T and ResNet-50 and a RoBERTa-base of random weights) on synthetic frames
of that size, through ``lvas bench train`` (the real training path, the real GloVe reader on a tiny
file it writes, RoBERTa's real tokenizer on byte-level files it writes, no download). Timings are printed for the note, never asserted; the measured
table of every shipped YAML comes from benchmarks/paper_scale.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LVAS = str(Path(sys.executable).with_name("lvas"))
# one clip per step: the input size is the paper's; the batch is the CI machine's budget
SIZES = {"cstm_paper": "1x8x320x320", "cstm_released": "1x8x320x320", "lbdt4_paper": "1x2x320x320",
         "acga_paper": "1x16x512x512", "referformer_paper": "1x5x384x384", "referformer_swin_t": "1x5x384x384",
         "referformer_r50": "1x5x384x384"}


# In CI (2 cores, 20 minutes with installs) the cheapest paper model, LBDT-4 (37.88 GMACs a clip: its two
# real ResNet-50s through the whole training and evaluation path at 320^2). The other YAMLs (CSTM as written
# and as released, ACGA, ReferFormer with Video-Swin-B, -T and ResNet-50: 49-176 s each here) run with
# LVAS_SLOW=1 and in benchmarks/paper_scale.py; every YAML runs on the meta device at paper size in every run
# (tests/test_meta_device.py), and every method trains CPU-sized in its own tests.
SLOW = {"cstm_paper", "cstm_released", "acga_paper", "referformer_paper", "referformer_swin_t", "referformer_r50"}
slow = pytest.mark.skipif(not os.environ.get("LVAS_SLOW"), reason="paper-size CPU step kept out of the CI budget (on meta at paper size in every run); LVAS_SLOW=1 runs it")


@pytest.mark.parametrize("name", [pytest.param(n, marks=slow) if n in SLOW else n for n in SIZES])
def test_one_step_and_evaluation_at_paper_size(name, tmp_path):
    p = subprocess.run([LVAS, "bench", "train", str(ROOT / "experiments" / f"{name}.yaml"), "--batch", "1",
                        "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout[p.stdout.index("{"):])
    print(name, r)
    assert r["config"] == name and r["clip"] == SIZES[name]
    assert r["test_samples"] > 0 and 0 < r["loss"] < 100  # a finite loss, a scored test split
    assert not list(tmp_path.iterdir())  # nothing left behind (the synthetic set and run live in a temp folder)
