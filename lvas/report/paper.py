"""Published numbers of the CSTM paper (CVPR 2021) and the methods it compares with.

Typed in once from the paper (see shared DESIGN §4); every generated table reads them from here.
AP is the mean of P@t over t = 0.50:0.05:0.95; IoUs under the paper's protocol.
"""

from __future__ import annotations

METRICS = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "oIoU", "mIoU")


def _rows(text: str) -> dict[str, dict[str, float]]:
    out = {}
    for line in text.strip().splitlines():
        name, *vals = [c.strip() for c in line.split("|")]
        out[name] = dict(zip(METRICS, map(float, vals)))
    return out


TABLE1_A2D = _rows("""
Hu et al. ECCV2016 | 34.8 | 23.6 | 13.3 | 3.3 | 0.1 | 13.2 | 47.4 | 35.0
Li et al. CVPR2017 | 38.7 | 29.0 | 17.5 | 6.6 | 0.1 | 16.3 | 51.5 | 35.4
Gavrilyuk et al. CVPR2018 | 47.5 | 34.7 | 21.1 | 8.0 | 0.2 | 19.8 | 53.6 | 42.1
Gavrilyuk et al. (+flow) | 50.0 | 37.6 | 23.1 | 9.4 | 0.4 | 21.5 | 55.1 | 42.6
ACGA ICCV2019 | 55.7 | 45.9 | 31.9 | 16.0 | 2.0 | 27.4 | 60.1 | 49.0
VT-Capsule CVPR2020 | 52.6 | 45.0 | 34.5 | 20.7 | 3.6 | 30.3 | 56.8 | 46.0
CMDy AAAI2020 | 60.7 | 52.5 | 40.5 | 23.5 | 4.5 | 33.3 | 62.3 | 53.1
CSTM (paper) | 65.4 | 58.9 | 49.7 | 33.3 | 9.1 | 39.9 | 66.2 | 56.1
LBDT-4 CVPR2022 | 73.0 | 67.4 | 59.0 | 42.1 | 13.2 | 47.2 | 70.4 | 62.1
""")

TABLE2_JHMDB = _rows("""
Hu et al. | 63.3 | 35.0 | 8.5 | 0.2 | 0.0 | 17.8 | 54.6 | 52.8
Li et al. | 57.8 | 33.5 | 10.3 | 0.6 | 0.0 | 17.3 | 52.9 | 49.1
Gavrilyuk et al. | 69.9 | 46.0 | 17.3 | 1.4 | 0.0 | 23.3 | 54.1 | 54.2
Gavrilyuk et al. (+flow) | 71.2 | 51.8 | 26.4 | 3.0 | 0.0 | 26.7 | 55.5 | 57.0
ACGA | 75.6 | 56.4 | 28.7 | 3.4 | 0.0 | 28.9 | 57.6 | 58.4
VT-Capsule | 67.7 | 51.3 | 28.3 | 5.1 | 0.0 | 26.1 | 53.5 | 55.0
CMDy | 74.2 | 58.7 | 31.6 | 4.7 | 0.0 | 30.1 | 55.4 | 57.6
CSTM (paper) | 78.3 | 63.9 | 37.8 | 7.6 | 0.0 | 33.5 | 59.8 | 60.4
LBDT-4 CVPR2022 | 86.4 | 74.4 | 53.3 | 12.2 | 0.0 | 41.1 | 64.5 | 65.8
LBDT-4 | 86.4 | 74.4 | 53.3 | 12.2 | 0.0 | 41.1 | 64.5 | 65.8
""")

# Query-based methods since 2022 (DESIGN §14), on the same test splits but scored by COCO mask mAP over
# ranked detections (lvas protocol ``coco``; their P@k / IoU use the top-scoring mask): their rows carry
# ``mAP`` and never the CSTM-style ``AP`` column. ReferFormer (Wu et al., CVPR 2022; its README's A2D and
# J-HMDB tables), MTTR (Botach et al., CVPR 2022).
QUERY_BASED_A2D = {
    "MTTR CVPR2022 (Video-Swin-T)": {"mAP": 46.1},
    "ReferFormer CVPR2022 (Video-Swin-T, no Ref-COCO pre-training)": {"oIoU": 72.3, "mIoU": 64.1, "mAP": 48.6},
    "ReferFormer CVPR2022 (Video-Swin-T)": {"oIoU": 77.6, "mIoU": 69.6, "mAP": 52.8},
    "ReferFormer CVPR2022 (Video-Swin-S)": {"oIoU": 77.7, "mIoU": 69.8, "mAP": 53.9},
    "ReferFormer CVPR2022 (Video-Swin-B)": {"oIoU": 78.6, "mIoU": 70.3, "mAP": 55.0},
}
QUERY_BASED_JHMDB = {
    "ReferFormer CVPR2022 (Video-Swin-T, no Ref-COCO pre-training)": {"mAP": 39.1},
    "ReferFormer CVPR2022 (Video-Swin-T)": {"mAP": 42.2},
    "ReferFormer CVPR2022 (Video-Swin-S)": {"mAP": 42.4},
    "ReferFormer CVPR2022 (Video-Swin-B)": {"mAP": 43.7},
}
TABLE1_A2D.update(QUERY_BASED_A2D)
TABLE2_JHMDB.update(QUERY_BASED_JHMDB)

# Table 3(a): encoder components (A2D test), all eight metrics.
TABLE3A = _rows("""
Spatial | 53.0 | 45.7 | 35.1 | 20.3 | 4.4 | 29.0 | 56.7 | 47.7
Temporal | 54.4 | 45.5 | 33.7 | 18.1 | 2.9 | 28.1 | 58.2 | 48.2
Spatial+Temporal | 58.5 | 51.8 | 42.3 | 27.9 | 7.5 | 34.5 | 62.2 | 51.7
+LGFS | 60.3 | 53.6 | 44.0 | 29.1 | 7.9 | 36.0 | 62.8 | 52.9
+LGFS+CMAM | 65.4 | 58.9 | 49.7 | 33.3 | 9.1 | 39.9 | 66.2 | 56.1
""")


def _short(text: str) -> dict[str, dict[str, float]]:
    out = {}
    for line in text.strip().splitlines():
        name, ap, oiou, miou = [c.strip() for c in line.split("|")]
        out[name] = {"AP": float(ap), "oIoU": float(oiou), "mIoU": float(miou)}
    return out


TABLE3B_FUSION = _short("""
Add | 34.5 | 62.2 | 51.7
Max | 34.8 | 62.6 | 51.6
LGFS | 36.0 | 62.8 | 52.9
""")

TABLE3C_CMAM = _short("""
{5} | 36.9 | 63.1 | 53.3
{5,4} | 38.5 | 65.2 | 55.0
{5,4,3} | 39.0 | 65.4 | 55.6
{5,4,3,2} | 39.4 | 65.9 | 55.7
{5,4,3,2,1} | 39.9 | 66.2 | 56.1
""")

TABLE3D_BACKBONES = _short("""
R50+S3D | 38.5 | 67.1 | 55.1
R50+I3D | 39.5 | 66.4 | 56.4
IV3+S3D | 38.3 | 66.7 | 55.0
IV3+I3D | 39.9 | 66.2 | 56.1
""")

# Table 4: computational overhead. GFLOPs as published (papers' "GFLOPs" are multiply-adds).
TABLE4 = [
    {"method": "ACGA ICCV2019", "input": "16x512x512", "gflops": "630.83", "AP": 27.4},
    {"method": "CMDy AAAI2020", "input": "16x512x512", "gflops": ">600 (estimated)", "AP": 33.3},
    {"method": "CSTM (paper)", "input": "8x320x320", "gflops": "213.06", "AP": 39.9},
    {"method": "CSTM (paper), spatial encoder part only", "input": "8x320x320", "gflops": "19.54", "AP": None},
]


# LBDT (Ding et al., CVPR 2022), Ref-YouTube-VOS valid, scored by the challenge server (region J,
# boundary F, J&F; percent). lvas scores its runs on the held-out 10 % of the train videos (the valid
# masks are not public), so the two lines measure the same thing on different videos.
TABLE_YTVOS = {"LBDT-4 CVPR2022 (valid, server)": {"J": 48.18, "F": 50.57, "JF": 49.38}}

# MeViS (Ding et al., ICCV 2023): J, F, J&F in percent. "valid" is scored by the CodaBench server (140
# videos, masks not public), "valid_u" locally (50 videos, masks given; scores run much higher there):
# the split is part of every label, and an lvas row (scored on valid_u) is never differenced with a
# valid row. The baselines are MeViS's own table (methods trained on MeViS by its authors); ReferDINO
# (2025) and SAMWISE (CVPR 2025) as their papers print them (J&F only).
TABLE_MEVIS = {
    "LBDT CVPR2022 (valid, server; MeViS paper)": {"J": 27.8, "F": 30.8, "JF": 29.3},
    "MTTR CVPR2022 (valid, server; MeViS paper)": {"J": 28.8, "F": 31.2, "JF": 30.0},
    "ReferFormer CVPR2022 (valid, server; MeViS paper)": {"J": 29.8, "F": 32.2, "JF": 31.0},
    "LMPM ICCV2023 (valid, server)": {"J": 34.2, "F": 40.2, "JF": 37.2},
    "ReferDINO 2025 (valid, server)": {"JF": 49.3},
    "SAMWISE CVPR2025 (valid, server)": {"JF": 49.5},
    "SAMWISE CVPR2025 (valid_u)": {"JF": 57.1},
}
