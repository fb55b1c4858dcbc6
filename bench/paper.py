"""The EMA paper's Table 2 (params in millions, GFLOPs at 640x640, mAP in %), its model groups and their baselines."""

from __future__ import annotations

from dataclasses import dataclass

from utils.module_cost import catalogue_names


@dataclass(frozen=True)
class PaperRow:
    data: str
    params_m: float
    gflops: float
    map50: float
    map50_95: float


PAPER: dict[str, PaperRow] = {
    "yolov5s": PaperRow("COCO", 7.23, 16.5, 56.0, 37.2),
    "yolov5s-cbam": PaperRow("COCO", 7.27, 16.6, 57.1, 37.7),
    "yolov5s-sa": PaperRow("COCO", 7.23, 16.5, 56.8, 37.4),
    "yolov5s-eca": PaperRow("COCO", 7.23, 16.5, 57.1, 37.6),
    "yolov5s-ca": PaperRow("COCO", 7.26, 16.50, 57.5, 38.1),
    "yolov5s-ema": PaperRow("COCO", 7.24, 16.53, 57.8, 38.4),
    "yolov5x-p2": PaperRow("VisDrone", 90.96, 314.2, 49.29, 30.0),
    "yolov5x-p2-cbam": PaperRow("VisDrone", 91.31, 315.1, 49.40, 30.1),
    "yolov5x-p2-ca": PaperRow("VisDrone", 91.28, 315.2, 49.30, 30.1),
    "yolov5x-p2-ema": PaperRow("VisDrone", 91.18, 315.0, 49.70, 30.4),
}
GROUPS: dict[str, list[str]] = {
    "s": ["yolov5s", "yolov5s-cbam", "yolov5s-sa", "yolov5s-eca", "yolov5s-ca", "yolov5s-ema"],
    "x-p2": ["yolov5x-p2", "yolov5x-p2-cbam", "yolov5x-p2-ca", "yolov5x-p2-ema"],
}
GROUP_ALIASES = {"s": "s", "yolov5s-all": "s", "x-p2": "x-p2", "p2": "x-p2", "x": "x-p2", "yolov5x-p2-all": "x-p2"}
ATTENTION_SUFFIXES = ("-ema", "-ca", "-cbam", "-sa", "-eca", "-se")

# Where the attention modules sit, as (channels, stride) at width 0.5 (yolov5s) and 1.25 (yolov5x-p2).
MODULE_SITES: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int], ...]]] = {
    "yolov5s": (tuple(catalogue_names()), ((256, 16), (512, 32))),  # every module of models/attention
    "yolov5x-p2": (("EMA", "CA", "CBAM"), ((640, 16), (320, 8), (320, 4))),
}


def baseline_name(name: str) -> str:
    """The model a row is compared with: its name without an attention suffix (``yolov5s-ema`` -> ``yolov5s``) or
    weights tag (``yolov5s-ema [best.pt]`` -> ``yolov5s``)."""
    name = name.split(" [")[0]
    for suffix in ATTENTION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def add_paper(row: dict, imgsz: int = 640) -> dict:
    """Join the paper's Table 2 numbers on the model name, with our differences to them.

    The paper's GFLOPs are at 640x640, so they are joined only when ``row["gflops"]`` was counted at that size.
    """
    p = PAPER.get(row["model"])
    pg = p if p and imgsz == 640 else None
    row["paper_params_m"] = p.params_m if p else None
    row["d_params_m"] = row["params_m"] - p.params_m if p else None
    row["paper_gflops"] = pg.gflops if pg else None
    row["d_gflops_pct"] = 100 * (row["gflops"] / pg.gflops - 1) if pg and row["gflops"] else None
    row["paper_map50"] = p.map50 if p else None
    row["paper_map50_95"] = p.map50_95 if p else None
    return row
