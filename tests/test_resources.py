"""Small hostile files that would take gigabytes or minutes: each is refused from its header or size,
with one line naming the key or file and the limit, in seconds, under a 6 GiB address-space cap and
well below it (the child's peak resident memory: importing torch alone takes about 1 GiB)."""

import shutil
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.data_writers import write_a2d

ROOT = Path(__file__).resolve().parents[1]
CAP = 6 * 2**30
# the child's own peak: VmHWM of its address space (ru_maxrss would keep the forking pytest's)
RUNNER = textwrap.dedent("""
    import re, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from lvas.cli import main
    rc = main(sys.argv[1:])
    peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
    print("PEAK_MB", peak, file=sys.stderr)
    sys.exit(rc)
""")


def capped(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str, float, int]:
    """(exit status, stderr without the peak line, seconds, peak RSS in MiB) of ``lvas ARGS`` under the cap."""
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", RUNNER.format(cap=CAP), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.monotonic() - t
    lines = proc.stderr.strip().splitlines()
    peak = int(lines[-1].split()[-1]) if lines and lines[-1].startswith("PEAK_MB") else -1
    return proc.returncode, "\n".join(lines[:-1] if peak >= 0 else lines), seconds, peak


def assert_refused(result, *needles: str, seconds: float = 60, peak_mb: int = 1800) -> None:
    rc, err, took, peak = result
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert took < seconds, f"took {took:.1f} s"
    assert 0 < peak < peak_mb, f"peak RSS {peak} MiB"


def _png(path: Path, side: int) -> None:
    """A grey PNG of side x side zeros, written row by row (a few hundred KB on disk)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny_exp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("res")
    exp = folder / "e.yaml"
    exp.write_text(yaml.safe_dump({"base": str(ROOT / "experiments" / "cpu_small.yaml"),
                                   "data": {"frames": 4, "size": 48, "workers": 0},
                                   "train": {"epochs": 1, "batch_size": 4},
                                   "tracking": {"system_metrics": False, "overlays": 0}}))
    return folder, exp


def test_a_yaml_alias_tree_is_refused_by_its_expanded_size(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\nname: *a8\n")  # 10^9 values from 700 bytes
    assert_refused(capped(["config", "bomb.yaml"], tmp_path), "bomb.yaml", "expands to more than 100000 values",
                   seconds=20)


def test_an_oversized_yaml_is_refused_before_it_is_parsed(tmp_path):
    (tmp_path / "big.yaml").write_text("name: " + "x" * (50 << 20) + "\n")
    assert_refused(capped(["config", "big.yaml"], tmp_path), "big.yaml", "a config is at most 1048576",
                   seconds=20, peak_mb=400)


@pytest.mark.parametrize("override,needle", [
    ("data.size=100000", "data.size: 100000 is not valid; expected an integer from 32 to 8192"),
    ("data.frames=1000000", "data.frames: 1000000 is not valid; expected an integer from 1 to 4096"),
])
def test_sizes_that_would_allocate_gigabytes_are_refused(tiny_exp, override, needle):
    folder, exp = tiny_exp
    assert_refused(capped(["flops", str(exp), override], folder), needle, seconds=30)


def test_a_sweep_grid_of_ten_to_the_eight_points_is_refused_before_expansion(tmp_path):
    params = {f"train.p{i}": {"values": list(range(10))} for i in range(8)}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": str(ROOT / "experiments" / "cpu_small.yaml"),
                                                        "metric": {"name": "AP"}, "parameters": params}))
    assert_refused(capped(["sweep", "grid.yaml", "--dry-run"], tmp_path), "the grid has 100000000 trials",
                   "LVAS_MAX_TRIALS", seconds=20)


def _refused_by_train_and_check(folder, exp, root, tmp_path, bad_file, message: str) -> None:
    """`lvas train` under the memory cap refuses ``bad_file`` in one line naming it, and `lvas data
    check` reports the same problem."""
    assert_refused(capped(["train", str(exp), f"data.root={root}", "data.dataset=a2d", "--run-dir", str(tmp_path / "r"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}", "-q"], folder),
                   str(bad_file), message, seconds=90)
    check = subprocess.run([sys.executable, "-m", "lvas.cli", "data", "check", str(root), "--dataset", "a2d"],
                           capture_output=True, text=True)
    assert check.returncode == 1 and message in check.stdout

def test_a_mask_declaring_40000_squared_pixels_is_refused_from_its_header(tiny_exp, tmp_path):
    import h5py

    folder, exp = tiny_exp
    root = tmp_path / "a2d"
    write_a2d(root)
    bad = next((root / "text_annotations" / "a2d_annotation_with_instances" / "v_train").glob("*.h5"))
    with h5py.File(bad, "w") as f:  # 1.6 GB of zeros, compressed to a few KB
        f.create_dataset("instance", data=np.array([[1.0]]))
        f.create_dataset("reMask", shape=(40000, 40000), dtype=np.uint8, chunks=(2000, 2000), compression="gzip")
    assert bad.stat().st_size < 1 << 20
    _refused_by_train_and_check(folder, exp, root, tmp_path, bad, "mask of 40000x40000 pixels is over the limit")


def test_a_frame_declaring_12000_squared_pixels_is_refused_from_its_header(tiny_exp, tmp_path):
    folder, exp = tiny_exp
    root = tmp_path / "a2d"
    write_a2d(root)
    frame = root / "Release" / "frames" / "v_train" / "00002.jpg"
    _png(tmp_path / "huge.png", 12000)
    shutil.copy(tmp_path / "huge.png", frame)  # a PNG under a .jpg name: Pillow reads the header either way
    _refused_by_train_and_check(folder, exp, root, tmp_path, frame, "frame of 12000x12000 pixels is over the limit")


def test_a_checkpoint_unpacking_to_gigabytes_is_refused_from_its_zip_directory(tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = b"\x00" * (16 << 20)
            for _ in range(24):  # 384 MiB of zeros in about 400 KB
                f.write(block)
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert bomb.stat().st_size < 2 << 20
    assert_refused(capped(["eval", str(bomb)], tmp_path), str(bomb), "refused: the checkpoint unpacks to",
                   seconds=30)
