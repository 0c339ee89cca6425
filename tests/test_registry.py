import pytest

from lvas.cli import main
from lvas.registry import (FAMILIES, DuplicateComponentError, Registry, UnknownComponentError,
                           all_families)


def test_duplicate_name_raises():
    reg = Registry("widget")

    @reg.register("a")
    def a():
        """An a."""

    with pytest.raises(DuplicateComponentError, match="'a' is already registered"):
        reg.register("a")(lambda: None)


def test_unknown_name_lists_choices_and_closest():
    reg = Registry("widget")
    for n in ("lgfs", "add", "max"):
        reg.register(n)(lambda: None)
    with pytest.raises(UnknownComponentError) as e:
        reg.get("lgsf")
    msg = str(e.value)
    assert "unknown widget 'lgsf'" in msg
    assert "add, lgfs, max" in msg
    assert "Did you mean 'lgfs'?" in msg


class _Shipped:
    """A family's entries shipped with lvas (a plugin another test of this process imported, e.g.
    examples/plugins/query_decoder.py, registers next to them and is not counted)."""

    def __init__(self, reg):
        self.family, self.entries = reg.family, [e for e in reg if e.origin == "lvas"]

    def names(self):
        return sorted(e.name for e in self.entries)

    def __iter__(self):
        return iter(self.entries)


def test_every_family_is_populated_after_import():
    fams = {f: _Shipped(reg) for f, reg in all_families().items()}
    assert set(fams["spatial"].names()) == {"r50", "iv3", "tiny2d"}
    assert set(fams["temporal"].names()) == {"i3d", "i3d_released", "s3d", "tiny3d", "diff_r50", "diff_tiny",
                                             "i3d_mixed4f", "tiny3d_s16", "video_swin_t", "video_swin_s",
                                             "video_swin_b", "video_swin_mini"}
    assert set(fams["fusion"].names()) == {"add", "max", "lgfs", "concat", "bca"}
    assert fams["text"].names() == ["conv1d", "gru", "gru_released", "lstm", "roberta"]
    assert fams["cross_modal"].names() == ["cmam_eq6", "cmam_released"]
    assert fams["bridge"].names() == ["lbdt"]
    assert fams["decoder"].names() == ["acga", "eq9", "lbdt", "referformer", "released"]
    assert fams["loss"].names() == ["acga", "cstm", "lbdt", "referformer"]
    assert fams["protocol"].names() == ["coco", "coco_top1", "lbdt", "paper", "strict"]
    assert fams["layout"].names() == ["acga", "cstm", "lbdt", "referformer"]
    assert fams["input"].names() == ["letterbox", "released", "stretch"]
    for reg in fams.values():
        for entry in reg:
            assert entry.description, f"{reg.family} {entry.name} has no description"


def test_lvas_list_prints_every_component(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for reg in FAMILIES.values():
        assert reg.family in out
        for name in reg.names():
            assert f"  {name} " in out
