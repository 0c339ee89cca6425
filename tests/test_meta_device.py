"""Every component combination runs forward and through its loss on the ``meta`` device (issue 22 §1).

A model whose parameters are on ``meta`` computes shapes only; a tensor that ``forward`` creates
without ``device=`` (``torch.zeros(n)``, ``torch.arange``, a Python float turned into a CPU tensor
and concatenated) lands on the CPU and the next operation with a meta tensor raises -- exactly the
error a CUDA run would hit. Models are built under ``torch.device("meta")`` (no weights allocated,
so the paper-size encoders cost nothing) and run outside it, so factory calls inside ``forward`` are
not rescued by the context.

Which combinations: every pair of choices of any two slots (spatial, temporal, text, cross-modal,
fusion, decoder, loss, mode, CMAM stages) appears in at least one built model (an all-pairs cover
of the full product, greedy), each validated first by the config; a combination the config refuses
(a ConfigError, or a ValueError from the component's constructor naming the model.* key to change:
e.g. ACGA's decoder decodes one stream) is a loud refusal, not a failure, and the cover uses another
combination for that pair. Plus the shipped method YAMLs at their paper size.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from lvas.config import ConfigError, from_dict, load_config
from lvas.engine.inference import clip_targets, training_pairs
from lvas.models.losses.segmentation import build_loss
from lvas.models import build_model
from lvas.registry import CROSS_MODAL, DECODERS, FUSIONS, LOSSES, SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

ROOT = Path(__file__).resolve().parents[1]
SLOTS = {
    "spatial": SPATIAL_ENCODERS.names(), "temporal": TEMPORAL_ENCODERS.names(), "text": TEXT_ENCODERS.names(),
    "cmam": CROSS_MODAL.names(), "fusion": FUSIONS.names(), "decoder": DECODERS.names(), "loss": LOSSES.names(),
    "mode": ["both", "spatial", "temporal"], "stages": [(), (5,), (5, 4, 3, 2, 1)],
}


def _config(choice: dict, frames: int = 8, size: int = 96):
    model = {"mode": choice["mode"], "spatial": {"name": choice["spatial"]}, "temporal": {"name": choice["temporal"]},
             "text": {"name": choice["text"], "vocab_size": 30},
             "cmam": {"name": choice["cmam"], "stages": list(choice["stages"])},
             "fusion": choice["fusion"], "decoder": {"name": choice["decoder"]}}
    return from_dict({"model": model, "data": {"frames": frames, "size": size},
                      "train": {"loss": {"name": choice["loss"]}}})


def _active(combo: dict) -> list[str]:
    """The slots a combination's model is built from (the others are unused, lvas.models.model_plan)."""
    off = {"spatial": {"temporal", "fusion"}, "temporal": {"spatial", "fusion"}, "both": set()}[combo["mode"]]
    if not combo["stages"]:
        off = off | {"cmam"}
    return [k for k in SLOTS if k not in off]


def _meta_model(cfg):
    with torch.device("meta"):
        return build_model(cfg, load_weights=False)


REFUSALS: dict[str, str] = {}


def _refusal(combo: dict) -> str | None:
    """Why lvas refuses the combination (the config, or the component's constructor, on meta), or None."""
    key = repr(sorted((k, combo[k]) for k in _active(combo)))  # unused slots do not change the model
    if key not in REFUSALS:
        try:
            _meta_model(_config(combo))
            REFUSALS[key] = ""
        except (ConfigError, ValueError) as e:
            REFUSALS[key] = str(e)
    return REFUSALS[key] or None


def _pairs(combo: dict) -> set:
    return {((a, combo[a]), (b, combo[b])) for a, b in itertools.combinations(_active(combo), 2)}


def _all_pairs(candidates: int = 40, seed: int = 0) -> list[dict]:
    """A greedy all-pairs cover of SLOTS' product over the combinations the config accepts: each
    round draws candidates around one uncovered pair (seeded) and keeps the valid one covering most
    new pairs, until no candidate covers a new one."""
    import random

    rng = random.Random(seed)
    keys = list(SLOTS)
    uncovered = {((a, x), (b, y)) for a, b in itertools.combinations(keys, 2) for x in SLOTS[a] for y in SLOTS[b]}
    chosen: list[dict] = []
    while uncovered:
        (a, x), (b, y) = sorted(uncovered)[rng.randrange(len(uncovered))]
        best, gain = None, 0
        for _ in range(candidates):
            combo = {k: rng.choice(SLOTS[k]) for k in keys} | {a: x, b: y}
            g = len(_pairs(combo) & uncovered)
            if g > gain and _refusal(combo) is None:
                best, gain = combo, g
        if best is None:  # no valid candidate holds that pair: it is refused by the config (or unused)
            uncovered.discard(((a, x), (b, y)))
            continue
        chosen.append(best)
        uncovered -= _pairs(best)
    return chosen


COVER = Path(__file__).with_name("fixtures") / "meta_cover.json"


def _slots_digest() -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps({k: [str(v) for v in vs] for k, vs in SLOTS.items()}).encode()).hexdigest()[:16]


def write_cover() -> None:
    """``python tests/test_meta_device.py --write-cover``: compute the cover (a few minutes: thousands of
    models are built on meta to find the refusals) and store it, with the refusals it met."""
    import json

    combos = _all_pairs()
    refused = sorted({k: m for k, m in REFUSALS.items() if m}.items())
    COVER.write_text(json.dumps({"slots": _slots_digest(), "combos": [{k: list(v) if isinstance(v, tuple) else v
                                                                         for k, v in c.items()} for c in combos],
                                 "refused": [k for k, _ in refused[::max(1, len(refused) // 60)][:60]]},
                                indent=0) + "\n")
    print(f"wrote {COVER}: {len(combos)} combinations, {len(refused)} refusals seen")


def _load_cover() -> tuple[list[dict], list[str], bool]:
    """The stored cover (combinations, refused combinations), and whether it was made for these registries."""
    import json

    if not COVER.is_file():
        return [], [], False
    data = json.loads(COVER.read_text())
    combos = [{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()} for c in data["combos"]]
    return combos, data["refused"], data["slots"] == _slots_digest()


# The cover is computed once per change of the registries and stored (building the thousands of
# candidate models it tries takes minutes, in every test process); test_the_cover_is_current says when
# to rebuild it.
COMBOS, REFUSED, CURRENT = _load_cover()


def _run_on_meta(cfg, batch: int = 2) -> dict:
    model = _meta_model(cfg)
    assert all(p.device.type == "meta" for p in model.parameters())
    model.train()
    f, s = cfg.data.frames, cfg.data.size
    words = cfg.model.text.max_words
    clip = torch.empty(batch, 3, f, s, s, device="meta")
    ids = torch.empty(batch, words, dtype=torch.long, device="meta")
    mask = torch.empty(batch, words, dtype=torch.bool, device="meta")
    outputs = model(clip, ids, mask)
    k = outputs["logits"].shape[1]
    frames = outputs.get("frames")
    positions = list(frames) if frames is not None else [f // 2]
    target = [torch.empty(len(positions), s, s, device="meta") for _ in range(batch)]
    fake = {"clip": clip, "target": target, "target_frames": [positions] * batch}
    loss_fn = build_loss(cfg)
    if getattr(loss_fn, "per_clip", False):  # matched across the clip's frames (referformer)
        loss = loss_fn(outputs, clip_targets(outputs, fake, torch.device("meta")))
    else:
        loss = loss_fn(*training_pairs(outputs, fake, torch.device("meta")))
    assert loss.device.type == "meta" and loss.dim() == 0
    return {"k": k, "logits": tuple(outputs["logits"].shape)}


def test_the_cover_is_current():
    assert CURRENT, (f"{COVER.name} was made for other registries (a component added or removed): run "
                     f"`python tests/test_meta_device.py --write-cover`")


def test_the_cover_holds_every_valid_pair():
    """Every registered choice is built, and most pairs of choices (a pair no valid config holds, like
    ACGA's decoder with two streams, cannot be); every combination the cover met refused is refused
    again, in a message naming the model.* key to change."""
    import ast

    seen = {(k, c[k]) for c in COMBOS for k in _active(c)}
    assert seen == {(k, v) for k, vs in SLOTS.items() for v in vs}, "a registered choice never built"
    refused = []
    for key in REFUSED:
        combo = dict(ast.literal_eval(key))
        combo = {**{k: vs[0] for k, vs in SLOTS.items()}, **combo}
        refused.append(_refusal(combo) or "")
    assert refused and all("model." in m for m in refused), "a refusal must name the key to change"
    covered = set().union(*(_pairs(c) for c in COMBOS))
    assert len(covered) > 0.8 * sum(len(SLOTS[a]) * len(SLOTS[b]) for a, b in itertools.combinations(SLOTS, 2))


@pytest.mark.parametrize("choice", COMBOS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_combination_runs_on_meta(choice):
    cfg = _config(choice)
    out = _run_on_meta(cfg)
    assert out["logits"][0] == 2 and out["logits"][-2:] == (96, 96)


SHIPPED = ["cstm_paper", "cstm_released", "lbdt4_paper", "lbdt4_ytvos", "acga_paper", "cpu_small", "lbdt_cpu",
           "acga_cpu", "referformer_paper", "referformer_swin_t", "referformer_r50", "referformer_cpu"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_experiment_runs_on_meta_at_paper_size(name):
    cfg = load_config(ROOT / "experiments" / f"{name}.yaml")
    out = _run_on_meta(cfg)
    assert out["logits"][-2:] == (cfg.data.size, cfg.data.size)


ABLATIONS = ["ablation_cstm_in_referformer", "ablation_query_decoder_on_cstm"]


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_row_of_the_cross_generation_ablations_runs_on_meta_at_paper_size(name):
    """CSTM's CMAM / LGFS inside ReferFormer, ReferFormer's decoder on CSTM's encoders: every row as
    the sweep gives it (paper size, its loss) builds, runs forward and gives a loss."""
    from lvas.sweepspec import load_sweep

    spec = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    rows = [t for t in spec.grid() if t.seed == spec.seeds.values[0]]
    assert len(rows) >= 3
    for t in rows:
        cfg = spec.config_for(t)
        out = _run_on_meta(cfg)
        assert out["logits"][-2:] == (cfg.data.size, cfg.data.size), t.label


def test_a_tensor_made_on_the_cpu_inside_forward_is_caught():
    """The check can fail: a module that builds a CPU tensor in forward breaks on meta."""

    class Careless(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.w + torch.arange(3)  # no device=

    with torch.device("meta"):
        m = Careless()
    with pytest.raises((RuntimeError, NotImplementedError)):
        m(torch.empty(2, 3, device="meta"))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--write-cover"]:
        sys.exit("usage: python tests/test_meta_device.py --write-cover")
    write_cover()
