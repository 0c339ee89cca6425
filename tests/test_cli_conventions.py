"""The command line follows the conventions people know: --version, help on every option, --quiet on
every sub-command, `lvas config`, `lvas sweep FILE key=value`, "did you mean", a failing exit for an
empty report, no torch import for --help, and the README's example outputs are what lvas prints."""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lvas.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _parsers(p, path=("lvas",)):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _parsers(sp, (*path, name))


def test_version_names_lvas_and_its_main_libraries(capsys):
    from importlib.metadata import version

    from lvas import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"lvas {__version__} (torch {version('torch')}, ") and f"mlflow {version('mlflow')}" in out


def test_every_option_has_help_and_every_command_takes_quiet():
    leaves = []
    for path, p in _parsers(build_parser()):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
                continue
            assert a.help, f"{' '.join(path)}: {a.dest} has no help text"
        if not subs and len(path) > 1:
            leaves.append(path)
            assert any("--quiet" in a.option_strings for a in p._actions), f"{' '.join(path)} has no --quiet"
    assert len(leaves) >= 12  # list config flops train eval predict sweep report bench + data synth/prepare/check


def test_help_does_not_import_torch():
    code = ("import sys\nfrom lvas.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_config_prints_the_resolved_config(capsys):
    from lvas.config import load_config, saved_dict

    assert main(["config", str(ROOT / "experiments" / "lbdt_cpu.yaml"), "train.lr=0.01", "-q"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    want = saved_dict(load_config(ROOT / "experiments" / "lbdt_cpu.yaml", ["train.lr=0.01"]))
    assert printed == json.loads(json.dumps(want))  # base files resolved (lbdt4_paper.yaml), override applied
    assert printed["train"]["lr"] == 0.01 and printed["model"]["fusion"] == {"name": "bca"}
    assert main(["config", str(ROOT / "experiments" / "lbdt_cpu.yaml"), "--flat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.optimizer.name=adamw" in lines and "model.bridge.layers=1" in lines
    assert main(["config", str(ROOT / "experiments" / "lbdt_cpu.yaml"), "model.fusoin=add"]) == 2
    assert "Did you mean 'fusion'?" in capsys.readouterr().err


def test_sweep_overrides_reach_every_trial_through_the_workers(synth, tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "cli_overrides", "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
        "overrides": {"data.root": str(synth), "train.epochs": 3, "tracking.system_metrics": False,
                      "tracking.overlays": 0, "data.size": 32, "data.frames": 4, "train.limit_batches": 1},
        "variants": [{"label": "add", "overrides": {"model.fusion": "add"}},
                     {"label": "max", "overrides": {"model.fusion": "max"}}]}))
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    # written after an option, as people do; applied on top of the file's overrides (epochs 3 -> 1)
    assert main(["sweep", str(sweep), "--workers", "2", "--out", str(tmp_path / "out"), "--tracking-uri", uri, "-q",
                 "train.epochs=1", "model.decoder.channels=8"]) == 0
    configs = [yaml.safe_load(p.read_text()) for p in (tmp_path / "out").rglob("config.yaml")]
    assert len(configs) == 2 and {c["model"]["fusion"]["name"] for c in configs} == {"add", "max"}
    assert all(c["train"]["epochs"] == 1 and c["model"]["decoder"]["channels"] == 8 for c in configs)
    assert main(["sweep", str(sweep), "model.fusion=lgfs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "model.fusion: s.yaml varies model.fusion (variant 'add')" in err


def test_sweep_keys_get_did_you_mean(tmp_path, capsys):
    for body, key, hint in [("variant: []", "variant", "variants"), ("metric: {name: AP}\nmethod: gird", "method", "grid"),
                            ("variants: [{label: A, overides: {}}]", "variants[0].overides", "overrides"),
                            ("report: {table: table3a, baselin: A}\nvariants: [{label: A}]", "report.baselin", "baseline")]:
        f = tmp_path / "s.yaml"
        head = f"name: s\nbase: {ROOT / 'experiments' / 'cpu_small.yaml'}\n"
        f.write_text(head + ("" if "metric" in body else "metric: {name: AP}\n") + body + "\n")
        assert main(["sweep", str(f), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f": {key}: " in err and f"Did you mean '{hint}'?" in err, err


def test_report_fails_when_every_row_is_missing(tmp_path, capsys):
    from lvas.tracking import open_store

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    args = ["report", str(ROOT / "sweeps" / "quickstart.yaml"), "--tracking-uri", uri, "--out", str(tmp_path / "r"),
            "--no-figures", "-q"]
    # a store that does not exist is named, and not created by a command that only reads
    assert main(args) == 2
    assert "no MLflow store there" in capsys.readouterr().err and not (tmp_path / "empty.db").exists()
    open_store(uri)  # an existing store without the sweep's runs
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "every row is missing in quickstart" in err and str(tmp_path / "empty.db") in err


def test_readme_examples_print_what_the_readme_shows(capsys, monkeypatch):
    """Every README block that starts with `$ lvas ...` shows that command's real output."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```\n(\$ lvas [^\n]*)\n(.*?)```", text, re.S)
    assert blocks
    for command, shown in blocks:
        try:
            main(shlex.split(command[2:])[1:])
        except SystemExit:
            pass
        got = capsys.readouterr()
        assert (got.out + got.err).strip() == shown.strip(), command
