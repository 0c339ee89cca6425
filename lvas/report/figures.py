"""Figures from a sweep's runs (matplotlib, PNG): precision vs IoU threshold, ablation bars,
training curves, the paper's Fig. 4 (target | spatial only | temporal only | both | ground truth)
and Fig. 5 (per-word CMAM attention in the spatial vs the temporal encoder)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lvas.engine.overlays import GROUND_TRUTH, PREDICTION, target_frame, tint  # noqa: E402
from lvas.liveness import replace_atomic  # noqa: E402
from lvas.report.build import TABLES  # noqa: E402
from lvas.report.runs import SweepRuns, metric_history  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _paper_rows(sr: SweepRuns) -> dict:
    from lvas.report.build import comparable

    entry = TABLES.get(sr.spec.report)
    if entry is None or not comparable(sr):
        return {}
    rows, own = entry[3], entry[5]
    return {label: rows.get(own or label) for label in sr.rows}


def precision_curve(sr: SweepRuns, path: Path) -> Path | None:
    chosen = sr.chosen()
    if not chosen:
        return None
    paper_rows = _paper_rows(sr)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, r) in enumerate(chosen.items()):
        colour = f"C{i}"
        ax.errorbar(THRESHOLDS, [r["metrics"][f"P@{t}"] for t in THRESHOLDS], yerr=_half(r, [f"P@{t}" for t in THRESHOLDS]),
                    fmt="o-", color=colour, capsize=3, label=f"{label} (lvas, n={len(r['runs'])})")
        p = paper_rows.get(label)
        if p and "P@0.5" in p:
            ax.plot(THRESHOLDS, [p[f"P@{t}"] for t in THRESHOLDS], "--", color=colour, alpha=0.6, label=f"{label} (paper)")
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("precision (%)")
    ax.set_title(f"{sr.spec.name}: precision against IoU threshold (mean, 95 % CI over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    replace_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def _half(row: dict, metrics: list[str]) -> list[float]:
    """Half-widths of the rows' 95 % intervals (0 where there is none: one seed)."""
    out = []
    for m in metrics:
        iv = row.get("intervals", {}).get(m)
        out.append(iv.half if iv is not None and iv.half == iv.half else 0.0)
    return out


def ablation_bars(sr: SweepRuns, path: Path) -> Path | None:
    chosen = sr.chosen()
    if not chosen:
        return None
    paper_rows = _paper_rows(sr)
    metrics = ("AP", "oIoU", "mIoU")
    labels = list(sr.rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=False)
    x = np.arange(len(labels))
    for ax, m in zip(axes, metrics):
        ours = [chosen[k]["metrics"][m] if k in chosen else np.nan for k in labels]
        err = [_half(chosen[k], [m])[0] if k in chosen else 0.0 for k in labels]
        pap = [(paper_rows.get(k) or {}).get(m, np.nan) for k in labels]
        has_paper = not np.all(np.isnan(pap))
        ax.bar(x - 0.2 if has_paper else x, ours, 0.4 if has_paper else 0.6, yerr=err, capsize=3,
               label="lvas (mean, 95 % CI)")
        if has_paper:  # a legend entry only for a series that is drawn
            ax.bar(x + 0.2, pap, 0.4, label="paper", alpha=0.6)
        for xi, v in zip(x, ours):
            if np.isnan(v):
                ax.text(xi - 0.2, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(m)
        ax.set_ylabel(f"{m} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    ns = sorted({len(r["runs"]) for r in chosen.values()})
    fig.suptitle(f"{sr.spec.name} ({sr.spec.report}); error bars: 95 % CI over n = {'/'.join(map(str, ns))} seeds")
    fig.tight_layout()
    replace_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def training_curves(sr: SweepRuns, path: Path, tracking_uri: str) -> Path | None:
    """Training loss per epoch, and the validation metric when runs recorded one (``train.select:
    best_val``; with ``last`` no validation split exists and the panel is left out).

    Two-stage rows: the stage-1 losses of the spatial and temporal networks (dotted, dashed) over
    epochs 1..E1, then stage 2 from E1 + 1, with the boundary marked; integer epochs on the x axis."""
    from matplotlib.ticker import MaxNLocator

    chosen = sr.chosen()
    if not chosen:
        return None
    curves = {}
    for label, r in chosen.items():
        stage1 = {b: metric_history(r["run_id"], f"stage1_{b}/train_loss", tracking_uri) for b in ("spatial", "temporal")}
        curves[label] = (stage1, metric_history(r["run_id"], "train_loss", tracking_uri),
                         metric_history(r["run_id"], f"val/{sr.spec.metric}", tracking_uri))
    with_val = any(val for *_, val in curves.values())
    fig, axes = plt.subplots(1, 2 if with_val else 1, figsize=(11 if with_val else 6.5, 3.8), squeeze=False)
    a = axes[0, 0]
    boundaries = set()
    for i, (label, (stage1, loss, val)) in enumerate(curves.items()):
        offset = max((len(h) for h in stage1.values()), default=0)
        for (branch, hist), style in zip(stage1.items(), (":", "--")):
            if hist:
                a.plot(*zip(*hist), ls=style, marker="x" if branch == "spatial" else "+", color=f"C{i}", lw=1,
                       ms=5, label=f"{label}: stage 1, {branch}")
        if offset:
            boundaries.add(offset + 0.5)
        if loss:
            a.plot([e + offset for e, _ in loss], [v for _, v in loss], "o-", color=f"C{i}", ms=3,
                   label=f"{label}" + (": stage 2" if offset else ""))
        if val:
            axes[0, 1].plot([e + offset for e, _ in val], [v for _, v in val], "o-", color=f"C{i}", label=label, ms=3)
    for x in sorted(boundaries):
        for ax in axes[0]:
            ax.axvline(x, color="grey", lw=0.8, ls="-.")
        a.text(x, a.get_ylim()[1], " stage 2", fontsize=7, va="top", color="grey")
    a.set_title("training loss")
    a.set_ylabel("loss")
    if with_val:
        axes[0, 1].set_title(f"validation {sr.spec.metric} (held-out training videos)")
        axes[0, 1].set_ylabel(f"{sr.spec.metric} (%)")
    for ax in axes[0]:
        ax.set_xlabel("epoch" + (" (stage 1, then stage 2)" if boundaries else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=6, ncol=2 if len(curves) > 3 else 1)
    fig.tight_layout()
    replace_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- model figures


def _load(row: dict, tracking_uri: str):
    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint

    local = Path(row["run_dir"]) / "model.pt" if row.get("run_dir") else None
    if local is not None and local.is_file():
        state = load_checkpoint(local)
    else:
        from lvas.tracking import downloaded

        with downloaded(row["run_id"], "checkpoints/model.pt", tracking_uri) as path:
            state = load_checkpoint(path)
    cfg, model, vocab = model_from_checkpoint(state)
    return cfg, model.eval(), vocab


def _mode_rows(sr: SweepRuns) -> dict[str, tuple[str, dict]]:
    """spatial / temporal / both -> (label, row); 'both' prefers the last such variant (the full model)."""
    out: dict[str, tuple[str, dict]] = {}
    for label, r in sr.chosen().items():
        mode = r.get("mode")
        if mode in ("spatial", "temporal") and mode not in out:
            out[mode] = (label, r)
        elif mode == "both":
            out["both"] = (label, r)
    return out


def _pick_samples(ds, n: int) -> list[int]:
    """First samples, alternating query kinds when the dataset has them (synthetic set)."""
    index = getattr(ds, "index", None)
    if index is None or "kind" not in index or not index["kind"].astype(bool).any():
        return list(range(min(n, len(ds))))
    queues = [list(index.index[index["kind"] == k]) for k in sorted(set(index["kind"]))]
    picks: list[int] = []
    while len(picks) < min(n, len(index)) and any(queues):
        for q in queues:  # round robin over the kinds
            if q and len(picks) < n:
                picks.append(int(q.pop(0)))
    return picks


def _predict(model, vocab, item, cfg) -> torch.Tensor:
    """The model's mask of the item's target frame at the original size, as its run's protocol makes it."""
    from lvas.data import collate
    from lvas.engine.inference import forward, masks, scored_frames

    tokens, mask = vocab.encode(item["meta"]["query"], cfg.model.text.max_words)
    batch = collate([{**item, "tokens": tokens, "mask": mask}])
    with torch.no_grad():
        lg, gt, meta = next(scored_frames(forward(model, batch, next(model.parameters()).device), batch))
    return masks(lg, gt, meta, cfg.train.protocol)[0]


def figure4(sr: SweepRuns, path: Path, tracking_uri: str, n: int = 4) -> Path | None:
    """Fig. 4: target frame | spatial only | temporal only | both | ground truth."""
    rows = _mode_rows(sr)
    if not {"spatial", "temporal", "both"} <= set(rows):
        return None
    from lvas.data import build_dataset

    models = {k: _load(r, tracking_uri) for k, (_, r) in rows.items()}
    cfg, _, vocab = models["both"]
    ds = build_dataset(cfg, cfg.data.test_split, vocab=vocab)
    picks = _pick_samples(ds, n)
    fig, axes = plt.subplots(len(picks), 5, figsize=(12, 2.6 * len(picks)), squeeze=False)
    titles = ["target frame", f"spatial only ({rows['spatial'][0]})", f"temporal only ({rows['temporal'][0]})",
              f"both ({rows['both'][0]})", "ground truth"]
    for r_i, idx in enumerate(picks):
        item = ds[idx]
        frame = target_frame(item)
        panels = [frame]
        for k in ("spatial", "temporal", "both"):
            c, m, v = models[k]
            panels.append(tint(frame, _predict(m, v, item, c).numpy(), PREDICTION))
        panels.append(tint(frame, item["gt"][0].numpy(), GROUND_TRUTH))
        for c_i, img in enumerate(panels):
            ax = axes[r_i, c_i]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r_i == 0:
                ax.set_title(titles[c_i], fontsize=8)
        kind = item["meta"].get("kind")
        axes[r_i, 0].set_ylabel(f"{item['meta']['query']}" + (f"\n[{kind}]" if kind else ""), fontsize=7)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=np.asarray(PREDICTION) / 255, label="prediction"),
                        Patch(color=np.asarray(GROUND_TRUTH) / 255, label="ground truth")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    replace_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def figure5(sr: SweepRuns, path: Path, tracking_uri: str, n: int = 2) -> Path | None:
    """Fig. 5: per-word CMAM attention (mean over stages) in the spatial vs the temporal encoder."""
    with_cmam = [(label, r) for label, r in sr.chosen().items() if r.get("mode") == "both" and r.get("cmam") not in
                 (None, "[]", "")]
    if not with_cmam:
        return None
    label, row = with_cmam[-1]
    cfg, model, vocab = _load(row, tracking_uri)
    from lvas.data import build_dataset
    from lvas.data.vocab import tokenize

    ds = build_dataset(cfg, cfg.data.test_split, vocab=vocab)
    picks = _pick_samples(ds, n)
    fig, axes = plt.subplots(len(picks), 1, figsize=(8, 2.8 * len(picks)), squeeze=False)
    for ax, idx in zip(axes[:, 0], picks):
        item = ds[idx]
        _predict(model, vocab, item, cfg)
        words = tokenize(item["meta"]["query"])[: cfg.model.text.max_words] or ["<unk>"]
        weights = {}
        for branch in ("spatial", "temporal"):
            ws = [m.last_word_weights[0, : len(words)].numpy() for m in model.cmam[branch].values()]
            weights[branch] = np.mean(ws, axis=0)
        x = np.arange(len(words))
        ax.bar(x - 0.2, weights["spatial"], 0.4, label="spatial encoder")
        ax.bar(x + 0.2, weights["temporal"], 0.4, label="temporal encoder")
        ax.set_xticks(x, words, fontsize=8)
        ax.set_ylabel("word weight")
        ax.set_title(f"{item['meta']['query']}" + (f" [{item['meta'].get('kind')}]" if item["meta"].get("kind") else ""),
                     fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"CMAM word attention, mean over stages ({label})", fontsize=9)
    fig.tight_layout()
    replace_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
