"""Ref-DAVIS17 (Khoreva et al., ACCV 2018, "Video Object Segmentation with Language Referring
Expressions") in the layout ReferFormer's ``tools/data/convert_davis_to_ytvos.py`` makes of DAVIS-2017
and the Ref-DAVIS text annotations -- Ref-YouTube-VOS's layout, with masks in both folders::

    meta_expressions/<folder>/meta_expressions.json
        {"videos": {<video>: {"expressions": {<exp id>: {"exp": <query>, "obj_id": <object id>}},
                              "frames": [<frame name>, ...]}}}
    <folder>/JPEGImages/<video>/<frame>.jpg             every frame (DAVIS 480p)
    <folder>/Annotations/<video>/<frame>.png            palette PNG from Annotations_unsupervised: pixel = object id
    <folder>/meta.json   {"videos": {<video>: {"objects": {<object id>: {"category": ...}}}}}   (not read)

with ``<folder>`` ``train`` (60 videos) or ``valid`` (30). Each object has four expressions, numbered
in groups of four: annotator 1's first-frame and full-video expression, then annotator 2's
(:mod:`lvas.davis2017` names them ``anno_0`` .. ``anno_3``).

Splits (``data.train_split`` / ``data.test_split``): ``train`` and ``valid``. Ref-DAVIS17 is how a
Ref-YouTube-VOS model is reported zero-shot: ``lvas eval RUN --dataset davis --root ROOT`` scores a
run trained on Ref-YouTube-VOS on ``valid`` with its own vocabulary. ``valid``'s masks are public, so
it is scored here; ``lvas eval ... --submission OUT.zip`` writes the merged label maps the DAVIS
toolkit reads (``anno_<k>/<video>/<frame>.png``), as ReferFormer's ``inference_davis.py`` does.

Scoring: J, F and J&F of the DAVIS-2017 unsupervised evaluation per annotator, averaged over the four
(:class:`lvas.davis2017.Davis17Evaluator`, the ``davis17`` evaluator). A sample's own target, for
training and for P@k / IoU, is the expression's object id in the annotation PNG -- as ReferFormer
trains on it (the unsupervised annotations' ids need not be the ones the expressions were written
for; the J&F matching does not depend on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd

from lvas.data.errors import DataError
from lvas.data.vocab import Vocabulary
from lvas.data.ytvos import RefYouTubeVOS, read_meta_expressions

SPLITS = {"train": "train", "valid": "valid"}
GROUP = 4  # expressions per object: 2 annotators x (first frame, full video)


def annotator_groups(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``table`` with ``annotator`` and ``object`` for each expression: its position ``i`` among its
    video's expressions (by number) gives annotator ``i % 4`` and object ``i // 4``. A video whose
    count is not a multiple of four, or a group of four naming two objects, is refused naming it."""
    out = []
    for vid, rows in table.groupby("video", sort=False):
        if len(rows) % GROUP:
            raise DataError(path, f"video {vid}: {len(rows)} expressions; Ref-DAVIS17 lists {GROUP} per object "
                                  f"(two annotators, first-frame and full-video), in groups of {GROUP}")
        for i, r in enumerate(rows.itertuples(index=False)):
            first = rows.iloc[i - i % GROUP]
            if r.obj_id is not None and r.obj_id != first["obj_id"]:
                raise DataError(path, f"video {vid}, expression {r.expression}: object {r.obj_id}, but its group of "
                                      f"{GROUP} (from expression {first['expression']}) describes object "
                                      f"{first['obj_id']}")
            out.append((i % GROUP, i // GROUP))
    return table.assign(annotator=[a for a, _ in out], object=[o for _, o in out])


class RefDAVIS17(RefYouTubeVOS):
    """Ref-DAVIS17 samples; items as :class:`lvas.data.ytvos.RefYouTubeVOS` with ``meta["davis"]``:
    ``annotator``, ``object`` (the expression's place in its group) and ``annotations`` (the video's
    folder of annotation PNGs, which the evaluation reads whole). Arguments as Ref-YouTube-VOS's;
    ``split`` is ``train`` or ``valid``."""

    evaluators = ("segmentation", "davis17")
    submission_prefix = ""  # not per expression: the merged maps (lvas.engine.submission.write_davis17)
    submission_layout = "davis17"
    scored_split = "valid"
    SPLITS = SPLITS
    MASKED = ("train", "valid")
    NAME = "Ref-DAVIS17"

    def __init__(self, root: str | Path, split: str = "train", frames: int = 2, frame_stride: int = 1,
                 size: int = 320, vocab: Vocabulary | None = None, max_words: int = 20,
                 skip_bad: bool = False, input: str = "stretch", tokenizer: str = "words", *,
                 clips: Literal["frame", "video"] = "frame") -> None:
        super().__init__(root, split, frames, frame_stride, size, vocab, max_words, skip_bad, input, tokenizer,
                         clips=clips)
        self.groups = {(r.video, r.expression): (int(r.annotator), int(r.object))
                       for r in self.table.itertuples(index=False)}

    @staticmethod
    def read_table(root: Path, folder: str, need_objects: bool) -> pd.DataFrame:
        path = root / "meta_expressions" / folder / "meta_expressions.json"
        return annotator_groups(read_meta_expressions(path, need_objects), path)

    def training_frames(self, table: pd.DataFrame) -> None:
        return None  # every DAVIS frame is annotated: a clip may centre on any

    @staticmethod
    def build_vocab(root: str | Path, tokenizer: str = "words") -> Vocabulary:
        """Vocabulary of the training queries (the train folder)."""
        table = read_meta_expressions(Path(root) / "meta_expressions" / "train" / "meta_expressions.json", True)
        return Vocabulary.build(table["query"], tokenizer=tokenizer)

    def extra_meta(self, row: pd.Series) -> dict[str, Any]:
        annotator, obj = self.groups[(str(row["video"]), str(row["expression"]))]
        return {"davis": {"annotator": annotator, "object": obj,
                          "annotations": str(self.annotations / str(row["video"]))}}
