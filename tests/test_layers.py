"""The structure lvas promises: layers that import downward only (import-linter, function-level
imports included), a torch-free core, and a registry index that matches the components' code."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """`lint-imports` with the contracts of pyproject.toml: cli -> sweep | report -> bench -> engine ->
    flops -> models | data | metrics -> core, and a core that never reaches torch."""
    proc = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_the_registry_index_matches_the_components():
    """registry_index.json is what the decorators register (regenerate it with
    `python -m lvas.registry --write-index` after adding or changing a component)."""
    from lvas.registry import INDEX, build_index, index_is_fresh

    committed = json.loads(INDEX.read_text())
    assert committed == json.loads(json.dumps(build_index())), "run: python -m lvas.registry --write-index"
    assert index_is_fresh()


@pytest.mark.parametrize("argv", [
    ["config", "experiments/cstm_paper.yaml", "model.fusion=max"],
    ["config", "experiments/lbdt4_paper.yaml", "--flat"],
    ["list"],
    ["list", "decoder"],
    ["sweep", "sweeps/table3a_components.yaml", "--dry-run"],
    ["sweep", "sweeps/methods_synth.yaml", "--dry-run"],
])
def test_validation_and_listing_never_import_torch_or_a_model(argv):
    code = ("import sys\nfrom lvas.cli import main\n"
            f"rc = main({argv!r})\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') or "
            "m.startswith(('lvas.models', 'lvas.engine', 'lvas.data', 'lvas.metrics')))\n"
            "print('HEAVY', heavy[:8])\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout.splitlines()[-1]


def test_no_two_modules_import_each_other():
    """No import circle inside lvas, lazy imports (inside functions) included: the last one,
    sweep/runner.py <-> sweep/trial.py (through Optuna's choice encoding, now in sweep/study.py), is gone."""
    import ast

    pkg = ROOT / "lvas"
    mods = {}
    for p in pkg.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lvas"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_a_training_that_needs_no_torchvision_component_never_imports_it(synth, tmp_path):
    """torchvision's import costs ~1.2 s of CPU (its package imports every model); every trial, worker and
    `lvas train` process of a CSTM with lvas's own tiny encoders would pay it for nothing. Such a
    training, start to end, leaves torchvision unimported (the components that need it import it)."""
    import yaml

    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "cpu_small.yaml"), "name": "no_tv",
        "data": {"root": str(synth), "frames": 2, "size": 32, "workers": 0},
        "model": {"text": {"hidden": 16, "embed_dim": 8}, "cmam": {"channels": 8}, "decoder": {"channels": 8}},
        "train": {"epochs": 1, "batch_size": 8, "limit_batches": 1},
        "tracking": {"system_metrics": False, "overlays": 0}}))
    argv = ["train", str(exp), "--run-dir", str(tmp_path / "run"), "--quiet", "--tracking-uri",
            f"sqlite:///{tmp_path / 'ml.db'}"]
    code = (f"import sys\nfrom lvas.cli import main\nrc = main({argv!r})\n"
            "print('TV', sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision')[:5])\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TV []" in proc.stdout, proc.stdout.splitlines()[-1]
