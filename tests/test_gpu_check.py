"""benchmarks/gpu_check.py, the first-GPU-day command, in its CPU version (--tiny), so it cannot rot:
it trains, counts, loads real JPEGs, runs DDP (gloo, 2 processes) and checks determinism, and writes
the JSON and the table a person reads."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["tiny"] and [m["precision"] for m in r["models"]] == ["bf16 + channels_last", "fp32"]
    for m in r["models"]:
        assert m["finite"] and m["clips_per_s"] > 0 and m["gmacs_per_clip"] > 0 and m["tflops"] > 0
        assert m["mfu"] is None  # no peak known for a CPU: not made up
    assert [d["workers"] for d in r["data"]] == [0, 1] and all(d["clips_per_s"] > 0 for d in r["data"])
    assert r["ddp"]["world"] == 2 and 0 < r["ddp"]["scaling_efficiency"]
    assert r["determinism"]["max_loss_difference"] == 0.0  # the same steps from the same seed, on the CPU
    assert "| cpu_small | fp32 | 4x64x64 |" in p.stdout and "DDP: 2 x 2" in p.stdout
