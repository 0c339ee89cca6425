"""Every metric lvas reports, declared once: name, direction, format, how it aggregates and who
computes it. Read by the config (``monitor``), the sweep file (``metric``), the command line, the
report's columns and the significance test; torch-free.

``aggregate``: ``sample`` — a mean over test samples of a per-sample score (AP, P@x, mIoU: the
test over samples can split it by sample); ``pooled`` — a ratio of sums (oIoU); ``expression`` —
a mean over expressions of per-frame scores (Ref-YouTube-VOS J, F, J&F); ``ranked`` — computed
over detections ranked across the test set (COCO mAP).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    goal: str = "maximize"
    digits: int = 1
    aggregate: str = "sample"
    evaluator: str = "segmentation"  # the registered evaluator that computes it
    mlflow_key: str = ""  # MLflow metric names allow no "@": P@0.5 -> P_at_0.5

    @property
    def key(self) -> str:
        return self.mlflow_key or self.name.replace("@", "_at_")


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

METRICS: dict[str, Metric] = {
    **{f"P@{t}": Metric(f"P@{t}", f"share of queries whose mask reaches IoU {t}") for t in THRESHOLDS},
    "AP": Metric("AP", "mean of P@t over t = 0.50:0.05:0.95 (CSTM / ACGA / LBDT; not COCO AP)"),
    "oIoU": Metric("oIoU", "overall IoU: total intersection / total union", aggregate="pooled"),
    "mIoU": Metric("mIoU", "mean of the per-query IoU"),
    "mAP": Metric("mAP", "COCO mask AP@[.50:.95] (pycocotools, useCats 0): the A2D \"mAP\" of MTTR, ReferFormer, "
                  "SgMg (protocols coco, coco_top1)", aggregate="ranked", evaluator="coco"),
    "J": Metric("J", "DAVIS region similarity, mean over each expression's frames, then expressions",
                aggregate="expression", evaluator="video_jf"),
    "F": Metric("F", "DAVIS boundary F-measure, averaged as J", aggregate="expression", evaluator="video_jf"),
    "JF": Metric("JF", "J&F = (J + F) / 2 (Ref-YouTube-VOS)", aggregate="expression", evaluator="video_jf"),
}

# the paper's columns (Tables 1-3): P@0.5..0.9, AP, overall IoU, mean IoU
PAPER_COLUMNS = tuple(f"P@{t}" for t in THRESHOLDS) + ("AP", "oIoU", "mIoU")
SEGMENTATION = PAPER_COLUMNS
VIDEO = ("J", "F", "JF")


def get(name: str) -> Metric:
    """The metric ``name``; an unknown name raises KeyError naming the choices."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def names(evaluator: str | None = None) -> tuple[str, ...]:
    return tuple(m.name for m in METRICS.values() if evaluator is None or m.evaluator == evaluator)


def register(metric: Metric) -> Metric:
    """Declare a metric a plugin's evaluator computes (so it can be monitored, swept and reported)."""
    METRICS.setdefault(metric.name, metric)
    return METRICS[metric.name]
