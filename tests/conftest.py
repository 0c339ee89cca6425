import os
import tempfile

import pytest
import torch

# Never reach the network for weights: any torchvision download would fail loudly here.
os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), ".torch_home_unused"))
# One share of the cores per xdist worker, for this process and every lvas process a test starts
# (lvas reads LVAS_PARALLEL_TRIALS as the sweep runner's trials do): two workers with two threads each
# oversubscribe a 2-core machine, and OpenMP's spinning threads then make CPU-bound tests ~10x slower
# (tests/test_referformer.py: 30 s alone, its tests 30 s *each* inside the suite).
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_THREADS = max(1, len(os.sched_getaffinity(0)) // _WORKERS)
os.environ.setdefault("LVAS_PARALLEL_TRIALS", str(_WORKERS))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)
# derived caches (FLOP counts) go to a fresh folder, never the user's ~/.cache
os.environ.setdefault("LVAS_CACHE", tempfile.mkdtemp(prefix="lvas-test-cache-"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic set in the A2D layout (10 videos of 4 frames at 48 px), one per test module."""
    from lvas.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, videos=10, frames=4, size=48, progress=False)
    return root


@pytest.fixture
def tokens():
    """Two queries of 5 and 3 real words, padded to 20."""
    ids = torch.zeros(2, 20, dtype=torch.long)
    ids[0, :5] = torch.tensor([3, 7, 2, 9, 4])
    ids[1, :3] = torch.tensor([5, 6, 8])
    mask = ids > 0
    return ids, mask


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch):
    """MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI; keep tests independent of each other."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
