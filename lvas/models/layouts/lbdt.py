"""The released LBDT checkpoint layout (dzh19990407/LBDT ``models/LBDT_4.py``, ``JointModel``) mapped
onto lvas: ``experiments/lbdt4_paper.yaml`` builds the same network from registered parts.

    conv1_{1,2} / bn1_{1,2}            {spatial,temporal}.stages.0.conv1 / .bn1
    res2_{1,2} / res{3,4,5}_{1,2}      {spatial,temporal}.stages.1.layer1 / .stages.{2,3,4}
    text_encoder.lstm                  text.lstm
    conv_r{4,5}_{1,2}_reduce / _up     bridge.{4,5}.reduce / .expand .{spatial,temporal}
    transformer.stage{4,5}.layers.{l}  bridge.{4,5}.layers.{l} (attention and norms renamed, below)
    decoder.refine_spa / refine_tem    decoder.lateral.spatial / .temporal
    decoder.fusion.*                   decoder.fusion.* (BCA, renamed below)
    decoder.fuse_tower                 decoder.tower

Left out on purpose: ``decoder.spa_tower``, ``decoder.tem_tower`` and ``decoder.mask_head`` — built
by the release but never called in its forward (so they change neither outputs nor FLOPs); and
``text.embedding.weight`` is ours alone (the release looks GloVe vectors up in its loader).
"""

from __future__ import annotations

from lvas.models.layouts.base import Layout, rename
from lvas.registry import LAYOUTS

_STREAM = {"1": "spatial", "2": "temporal"}
_LAYER = {"self_attn_words": "word_self", "cross_attn_img": "word_from_source", "cross_attn_flo": "target_from_words",
          "linear1": "ffn_in", "linear2": "ffn_out", "norm_words_1": "norm_word_self",
          "norm_words_2": "norm_word_source", "norm_flo": "norm_target", "norm_flo2": "norm_ffn"}
_FUSION = {"img_flo_fc": "mix", "img_txt_fc": "text_gate.spatial", "flo_txt_fc": "text_gate.temporal",
           "img_enhance_fc": "stream_gate.spatial", "flo_enhance_fc": "stream_gate.temporal", "fusion_cat_conv": "conv"}
UNUSED = (r"decoder\.spa_tower\..+", r"decoder\.tem_tower\..+", r"decoder\.mask_head\..+")


def _rules() -> list[tuple[str, str]]:
    rules = []
    for n, b in _STREAM.items():
        rules += [(rf"conv1_{n}\.(.+)", f"{b}.stages.0.conv1.{{}}"), (rf"bn1_{n}\.(.+)", f"{b}.stages.0.bn1.{{}}"),
                  (rf"res2_{n}\.(.+)", f"{b}.stages.1.layer1.{{}}")]
        rules += [(rf"res{s}_{n}\.(.+)", f"{b}.stages.{s - 1}.{{}}") for s in (3, 4, 5)]
        rules += [(rf"conv_r(\d)_{n}_reduce\.(.+)", f"bridge.{{}}.reduce.{b}.{{}}"),
                  (rf"conv_r(\d)_{n}_up\.(.+)", f"bridge.{{}}.expand.{b}.{{}}")]
    rules += [(rf"transformer\.stage(\d)\.layers\.(\d+)\.{src}\.(.+)", f"bridge.{{}}.layers.{{}}.{dst}.{{}}")
              for src, dst in _LAYER.items()]
    rules += [(r"text_encoder\.lstm\.(.+)", "text.lstm.{}"),
              (r"decoder\.refine_spa\.(.+)", "decoder.lateral.spatial.{}"),
              (r"decoder\.refine_tem\.(.+)", "decoder.lateral.temporal.{}"),
              (r"decoder\.fuse_tower\.(.+)", "decoder.tower.{}")]
    rules += [(rf"decoder\.fusion\.{src}\.(.+)", f"decoder.fusion.{dst}.{{}}") for src, dst in _FUSION.items()]
    return rules


RULES = _rules()


def is_released_lbdt(state: dict) -> bool:
    """True for a state dict in the released LBDT layout."""
    return any(k.startswith(("transformer.stage5.", "conv_r5_1_reduce.")) for k in state)


def convert_lbdt_state_dict(state: dict) -> dict:
    """Released LBDT keys -> lvas keys (the three unused decoder parts dropped)."""
    return rename(state, RULES, UNUSED, "released LBDT")


LAYOUTS.register("lbdt", "dzh19990407/LBDT models/LBDT_4.py (JointModel)")(
    Layout("LBDT", is_released_lbdt, convert_lbdt_state_dict, ("text.embedding.weight",), "experiments/lbdt4_paper.yaml"))
