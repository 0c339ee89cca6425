"""lvas: ablation framework for language-queried video actor segmentation (CSTM, CVPR 2021)."""

__version__ = "0.1.0"
