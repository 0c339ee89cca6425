"""Datasets: A2D Sentences, J-HMDB Sentences, Ref-YouTube-VOS, MeViS, Ref-DAVIS17 and the synthetic set (A2D layout), registered in
``DATASETS``; every dataset module is imported here explicitly."""

from __future__ import annotations

from lvas.data import a2d, davis, jhmdb, mevis, samples, synthetic, ytvos  # noqa: F401
from lvas.data.a2d import A2DSentences  # noqa: F401
from lvas.data.davis import RefDAVIS17  # noqa: F401
from lvas.data.samples import collate  # noqa: F401
from lvas.data.errors import DataError  # noqa: F401
from lvas.data.jhmdb import JHMDBSentences  # noqa: F401
from lvas.data.mevis import MeViS  # noqa: F401
from lvas.data.ytvos import RefYouTubeVOS  # noqa: F401
from lvas.registry import DATASETS

DATASETS.register("a2d", "A2D Sentences (public release layout)")(A2DSentences)
DATASETS.register("synth", "synthetic sprites in the A2D layout, with appearance/motion query kinds")(A2DSentences)
DATASETS.register("jhmdb", "J-HMDB Sentences (evaluation only, 3 fixed frames per video)")(JHMDBSentences)
DATASETS.register("ytvos", "Ref-YouTube-VOS (meta_expressions.json, JPEGImages, palette Annotations); J&F per expression")(
    RefYouTubeVOS)
DATASETS.register("mevis", "MeViS (per split JPEGImages, meta_expressions.json, mask_dict.json RLEs); multi-object "
                           "targets, J&F per expression as its eval_mevis.py")(MeViS)
DATASETS.register("davis", "Ref-DAVIS17 (ReferFormer's conversion: the Ref-YouTube-VOS layout); J&F of the DAVIS-2017 "
                           "unsupervised evaluation, averaged over the 4 annotators")(RefDAVIS17)


def build_dataset(cfg, split: str, vocab=None):
    """ExperimentConfig -> dataset of one split (the only place that reads ``cfg.data`` for it):
    the dataset with its own settings, its clip geometry, the query length cap and the input
    pipeline (``model.input``)."""
    d = cfg.data
    if vocab is None and cfg.model.text.tokenizer == "subword":  # the text model's own tokenizer, not the queries'
        from lvas.data.vocab import vocabulary

        vocab = vocabulary(cfg.model.text)
    ds = DATASETS.build(d.dataset.name, d.dataset.settings(), root=d.root, split=split, frames=d.frames,
                        frame_stride=d.frame_stride, size=d.size, vocab=vocab, max_words=cfg.model.text.max_words,
                        skip_bad=d.skip_bad, input=cfg.model.input, tokenizer=cfg.model.text.tokenizer)
    if d.evaluators:  # the user's evaluators besides the dataset's own
        ds.evaluators = tuple(dict.fromkeys((*evaluators_of(ds), *d.evaluators)))
    return ds


def evaluators_of(ds) -> tuple[str, ...]:
    """The evaluators a dataset (or a Subset of one) asks for."""
    return getattr(getattr(ds, "dataset", ds), "evaluators", ("segmentation",))


def require_masks(ds, key: str = "data.test_split") -> None:
    """Refuse to score a split without public masks (Ref-YouTube-VOS valid/test), naming ``key``."""
    if not getattr(ds, "has_masks", True):
        from lvas.config import ConfigError

        scored = getattr(getattr(ds, "dataset", ds), "scored_split", "heldout")
        raise ConfigError(f"{key}: the {ds.split!r} split has no public masks, so it cannot be scored; score "
                          f"the {scored!r} split and write this one's submission with `lvas eval CKPT --split "
                          f"{ds.split} --submission OUT.zip`")
