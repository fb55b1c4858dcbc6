"""Tests of utils/autoanchor.py: ratio metrics, k-means + evolution, and anchor replacement in a Detect head."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.yolo import Model
from tests.helpers import StubDetect, StubModel
from utils.autoanchor import (
    anchor_fitness,
    anchor_metrics,
    anchors_in_pixels,
    check_anchor_order,
    check_anchors,
    evolve_anchors,
    kmean_anchors,
    kmeans,
    labels_wh,
    write_anchors,
)

COCO_PX = np.array([10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326], float).reshape(9, 2)


def lognormal_wh(n: int, mean_px: float, seed: int, spread: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(np.log(mean_px), spread, size=(n, 2)))


def level_mean_area_px(det) -> torch.Tensor:
    return anchors_in_pixels(det).prod(-1).mean(-1)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------
def test_bpr_of_coco_anchors_matches_loop_count():
    wh = np.concatenate([COCO_PX, COCO_PX * 1.9, [[1, 1], [3000, 3000], [200, 8]]])
    thr = 4.0
    covered = [
        [min(w / aw, aw / w, h / ah, ah / h) > 1 / thr for aw, ah in COCO_PX] for w, h in wh
    ]  # independent loop restatement
    bpr, aat = anchor_metrics(COCO_PX, wh, thr)
    assert bpr == pytest.approx(np.mean([any(c) for c in covered]))
    assert aat == pytest.approx(np.mean([sum(c) for c in covered]))
    assert bpr == pytest.approx(18 / 21)  # the three outliers are uncoverable


def test_ratio_threshold_is_strict():
    anchors = [[10.0, 13.0]]
    assert anchor_metrics(anchors, [[40.0, 52.0]], 4.0) == (0.0, 0.0)  # exactly 4x: not matched by the loss either
    assert anchor_metrics(anchors, [[39.0, 51.0]], 4.0) == (1.0, 1.0)
    assert anchor_metrics(anchors, [[39.0, 51.0]], 3.0) == (0.0, 0.0)


def test_fitness_counts_best_ratio_of_coverable_boxes():
    # box 20x26 is 2x anchor 10x13 (metric 0.5); box 100x100 is not coverable (0)
    assert anchor_fitness([[10, 13]], [[20, 26], [100, 100]], 4.0) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------------------------------
# k-means and evolution
# ---------------------------------------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 8.0]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((200, 2)) for c in centres])
    found, dist = kmeans(x, 3, np.random.default_rng(1))
    order = np.lexsort(found.T[::-1])
    assert np.allclose(found[order], centres[np.lexsort(centres.T[::-1])], atol=0.05)
    assert dist < 0.2


def test_evolution_improves_fitness_over_its_init():
    wh = lognormal_wh(3000, 60, seed=1)
    init = COCO_PX * 0.3
    f0 = anchor_fitness(init, wh)
    evolved, f = evolve_anchors(init, wh, thr=4.0, gen=150, rng=np.random.default_rng(0))
    assert f > f0 + 0.05
    assert f == pytest.approx(anchor_fitness(evolved, wh), rel=1e-6)
    assert (evolved >= 2.0).all()


def test_kmean_anchors_deterministic_sorted_and_better_than_coco():
    wh = np.concatenate([lognormal_wh(1500, 25, seed=2), lognormal_wh(1500, 220, seed=3)])
    a1 = kmean_anchors(wh, n=9, thr=4.0, gen=150, seed=0, verbose=False)
    a2 = kmean_anchors(wh, n=9, thr=4.0, gen=150, seed=0, verbose=False)
    a3 = kmean_anchors(wh, n=9, thr=4.0, gen=150, seed=1, verbose=False)
    assert np.array_equal(a1, a2)
    assert not np.array_equal(a1, a3)
    assert a1.shape == (9, 2)
    assert (np.diff(a1.prod(1)) >= 0).all()  # sorted by area
    assert anchor_fitness(a1, wh) > anchor_fitness(COCO_PX, wh)
    assert anchor_metrics(a1, wh)[0] > 0.99


def test_kmean_anchors_drops_tiny_labels_and_warns(log_records):
    wh = np.concatenate([lognormal_wh(500, 80, seed=4), np.full((400, 2), 1.0)])  # 400 boxes of 1x1 px
    anchors = kmean_anchors(wh, n=6, gen=50, verbose=True)
    warnings = [m for level, m in log_records if level == "warning"]
    assert any("400 of 900 labels are < 3 pixels" in m for m in warnings)
    assert anchors.min() > 10  # 1 px boxes do not pull an anchor towards them
    assert all(m.startswith("AutoAnchor: ") for _, m in log_records)


def test_kmean_anchors_needs_enough_labels():
    with pytest.raises(ValueError, match="at least 9 labels"):
        kmean_anchors(lognormal_wh(5, 50, seed=5), n=9, gen=10, verbose=False)


# ---------------------------------------------------------------------------------------------------------------------
# Label sizes from a dataset
# ---------------------------------------------------------------------------------------------------------------------
def fake_dataset(labels):
    return SimpleNamespace(labels=labels)


def test_labels_wh_uses_hw_shape_and_long_side_resize():
    ds = fake_dataset(
        [
            {"bboxes": np.array([[0.5, 0.5, 0.5, 0.25]], np.float32), "shape": (320, 640)},  # (h, w)
            {"bboxes": np.zeros((0, 4), np.float32), "shape": (100, 100)},  # image without boxes
            {"bboxes": np.array([[0.5, 0.5, 0.1, 0.2]], np.float32), "shape": (1280, 640)},
        ]
    )
    exact = labels_wh(ds, imgsz=640, scale=(1.0, 1.0))
    assert np.allclose(exact, [[320, 80], [32, 128]])
    half = labels_wh(ds, imgsz=320, scale=(1.0, 1.0))
    assert np.allclose(half, exact / 2)
    jittered = labels_wh(ds, imgsz=640, seed=0)
    ratio = jittered / exact
    assert np.allclose(ratio[:, 0], ratio[:, 1])  # one factor per image
    assert ((ratio >= 0.9) & (ratio <= 1.1)).all() and not np.allclose(ratio, 1.0)
    assert np.array_equal(jittered, labels_wh(ds, imgsz=640, seed=0))


# ---------------------------------------------------------------------------------------------------------------------
# Model integration
# ---------------------------------------------------------------------------------------------------------------------
def test_check_anchors_replaces_poor_anchors(log_records):
    model = StubModel(anchors=COCO_PX / 10)  # anchors 1-37 px, far too small
    det = model.model[-1]
    wh = lognormal_wh(2000, 150, seed=6)
    old_bpr = anchor_metrics(anchors_in_pixels(det).view(-1, 2), wh)[0]
    assert old_bpr < 0.5

    assert check_anchors(model, wh, thr=4.0, imgsz=640, gen=100) is True
    new_px = anchors_in_pixels(det).view(-1, 2).numpy()
    assert anchor_metrics(new_px, wh)[0] > 0.98
    expected = kmean_anchors(wh, n=9, thr=4.0, gen=100, seed=0, verbose=False)
    assert np.allclose(new_px, expected, rtol=1e-5)  # stored in stride units, smallest on stride 8
    assert det.anchors.shape == (3, 3, 2) and det.anchors.dtype == torch.float32
    assert torch.allclose(det.anchors[0] * 8, torch.tensor(expected[:3], dtype=torch.float32))
    assert (level_mean_area_px(det).diff() > 0).all()
    assert any("New anchors saved to model" in m for _, m in log_records)


def test_check_anchors_keeps_good_anchors(log_records):
    model = StubModel()
    det = model.model[-1]
    before = det.anchors.clone()
    rng = np.random.default_rng(7)
    wh = np.repeat(COCO_PX, 50, 0) * rng.uniform(0.8, 1.25, size=(450, 2))
    assert check_anchors(model, wh, thr=4.0) is False
    assert torch.equal(det.anchors, before)
    assert any("1.000 Best Possible Recall" in m and "good fit" in m for _, m in log_records)


def test_check_anchors_accepts_a_dataset():
    rng = np.random.default_rng(8)
    boxes = [np.concatenate([rng.uniform(0.2, 0.8, (3, 2)), rng.uniform(0.5, 0.9, (3, 2))], 1) for _ in range(40)]
    labels = [{"bboxes": b, "shape": (480, 640)} for b in boxes]
    model = StubModel(anchors=COCO_PX / 10)  # anchors 1-37 px; these boxes are about 130-580 px
    assert check_anchors(model, fake_dataset(labels), thr=4.0, imgsz=640, gen=50) is True
    wh = labels_wh(fake_dataset(labels), 640, seed=0)  # what check_anchors measured (same seed)
    assert anchor_metrics(anchors_in_pixels(model.model[-1]).view(-1, 2), wh)[0] > 0.98


def test_check_anchors_with_too_few_labels_keeps_anchors(log_records):
    model = StubModel(anchors=COCO_PX / 10)
    before = model.model[-1].anchors.clone()
    assert check_anchors(model, np.full((4, 2), 300.0), gen=10) is False
    assert torch.equal(model.model[-1].anchors, before)
    assert any(level == "warning" for level, _ in log_records)


def test_write_anchors_follows_stride_order():
    det = StubDetect(stride=(32, 16, 8))  # levels listed from the coarsest
    write_anchors(det, COCO_PX[::-1].copy())  # given in any order: sorted by area internally
    px = anchors_in_pixels(det)
    assert torch.allclose(px[2], torch.tensor(COCO_PX[:3], dtype=torch.float32))  # smallest on stride 8
    assert torch.allclose(px[0], torch.tensor(COCO_PX[6:], dtype=torch.float32))
    assert torch.allclose(det.anchors[2], torch.tensor(COCO_PX[:3], dtype=torch.float32) / 8)


def test_check_anchor_order_flips_reversed_levels(log_records):
    det = StubDetect()
    good = det.anchors.clone()
    assert check_anchor_order(det) is False
    det.anchors[:] = torch.tensor(COCO_PX[::-1].copy(), dtype=torch.float32).view(3, 3, 2) / det.stride.view(-1, 1, 1)
    assert check_anchor_order(det) is True
    # the pixel anchors of the levels are reversed (each level's anchors keep their order within the level)
    expected_px = torch.tensor(COCO_PX[::-1].copy(), dtype=torch.float32).view(3, 3, 2).flip(0)
    assert torch.allclose(anchors_in_pixels(det), expected_px)
    assert (level_mean_area_px(det).diff() > 0).all()
    assert det.anchors.shape == good.shape


def test_check_anchors_on_real_yolov5_model():
    model = Model("models/yolov5n.yaml", nc=3, verbose=False)
    det = model.model[-1]
    wh = lognormal_wh(1500, 2500, seed=9, spread=0.2)  # mostly over 4x the biggest COCO anchor (373x326)
    assert check_anchors(model, wh, thr=4.0, imgsz=640, gen=50) is True
    assert anchor_metrics(anchors_in_pixels(det).view(-1, 2), wh)[0] > 0.98
    assert (level_mean_area_px(det).diff() > 0).all()
    model.eval()
    with torch.no_grad():
        y, raw = model(torch.zeros(1, 3, 64, 64))
    assert torch.isfinite(y).all()
