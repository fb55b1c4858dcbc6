"""AutoAnchor: check how well a model's anchors fit a dataset's boxes, and evolve better ones when they do not.

The fit metric is YOLOv5's ratio metric: for a box ``(w, h)`` and an anchor ``(aw, ah)`` it is
``min(min(w / aw, aw / w), min(h / ah, ah / h))``, in ``(0, 1]``. A box is *coverable* by an anchor when the metric
exceeds ``1 / thr`` (``thr`` is the loss's ``anchor_t``), which is exactly when the loss can match them.

* Best possible recall (BPR): the fraction of boxes coverable by at least one anchor.
* Anchors above threshold (AAT): the mean number of anchors covering a box.
* Fitness (what evolution maximises): the mean over boxes of the best metric, counting 0 for uncoverable boxes.

Anchors in ``Detect.anchors`` are stored in stride units (pixels / stride), one row of ``na`` anchors per level, the
levels in the order of ``Detect.stride``; this module converts to pixels for the metrics and back when writing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ultralytics.utils import LOGGER

PREFIX = "AutoAnchor: "
BPR_GOOD = 0.98  # anchors are kept when their best possible recall reaches this
KMEANS_MAX_POINTS = 50_000  # k-means runs on a random subset of at most this many boxes (evolution uses all)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------
def _as_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (tensor, array or nested list) as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_wh_tensor(x: Any) -> torch.Tensor:
    """Return ``x`` as a float32 CPU tensor of shape ``(n, 2)`` (metrics run in torch for speed on big datasets)."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
    return t.float().reshape(-1, 2)


def ratio_metric(anchors_px: Any, wh: Any) -> np.ndarray:
    """Return the ``(n_boxes, n_anchors)`` ratio metric (1 = same size; ``min(a, b) / max(a, b)`` per side)."""
    return _ratio_metric(anchors_px, wh).numpy()


def _ratio_metric(anchors_px: Any, wh: Any) -> torch.Tensor:
    """Torch version of :func:`ratio_metric`; degenerate (zero) sizes give 0."""
    k = _as_wh_tensor(anchors_px)[None]
    w = _as_wh_tensor(wh)[:, None]
    return (torch.minimum(w, k) / torch.maximum(w, k).clamp_min(1e-12)).amin(2)


def anchor_metrics(anchors_px: Any, wh: Any, thr: float = 4.0) -> tuple[float, float]:
    """``(best possible recall, mean anchors above threshold per box)`` of pixel anchors on pixel sizes ``wh``."""
    x = _ratio_metric(anchors_px, wh)
    if x.shape[0] == 0:
        return 0.0, 0.0
    covered = x > 1.0 / thr
    return float(covered.any(1).float().mean()), float(covered.sum(1).float().mean())


def anchor_fitness(anchors_px: Any, wh: Any, thr: float = 4.0) -> float:
    """Mean best ratio metric over boxes, uncoverable boxes counting 0 (the quantity evolution maximises)."""
    best = _ratio_metric(anchors_px, wh).amax(1)
    return float((best * (best > 1.0 / thr)).mean()) if best.numel() else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Label sizes
# ---------------------------------------------------------------------------------------------------------------------
def labels_wh(dataset: Any, imgsz: int = 640, seed: int = 0, scale: tuple[float, float] = (0.9, 1.1)) -> np.ndarray:
    """Box sizes in pixels of an Ultralytics dataset, as YOLOv5's AutoAnchor sees them.

    Every image is resized so that its long side is ``imgsz`` and then scaled by one random factor drawn uniformly from
    ``scale`` (a fixed-seed stand-in for scale augmentation).

    Args:
        dataset: object whose ``labels`` is a list of dicts with ``bboxes`` (normalised xywh, ``(n, 4)``) and
            ``shape`` (``(h, w)`` in pixels), as in ``ultralytics.data.YOLODataset`` 8.4.
    """
    labels = dataset.labels
    rng = np.random.default_rng(seed)
    factors = rng.uniform(scale[0], scale[1], size=len(labels))
    sizes = []
    for label, factor in zip(labels, factors):
        boxes = np.asarray(label["bboxes"], dtype=np.float64).reshape(-1, 4)
        h, w = label["shape"][:2]
        resize = imgsz / max(h, w) * factor
        sizes.append(boxes[:, 2:4] * np.array([w, h], dtype=np.float64) * resize)
    return np.concatenate(sizes, 0) if sizes else np.zeros((0, 2))


def _wh_from(wh_or_dataset: Any, imgsz: int, seed: int) -> np.ndarray:
    """Return pixel box sizes from an ``(n, 2)`` array/tensor (used as is) or a dataset (see :func:`labels_wh`)."""
    if hasattr(wh_or_dataset, "labels"):
        return labels_wh(wh_or_dataset, imgsz, seed)
    wh = _as_numpy(wh_or_dataset)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"{PREFIX}expected box sizes of shape (n, 2) in pixels, got {wh.shape}")
    return wh


# ---------------------------------------------------------------------------------------------------------------------
# k-means + evolution
# ---------------------------------------------------------------------------------------------------------------------
def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(n, k)`` between points ``x (n, d)`` and centres ``c (k, d)``."""
    return ((x[:, None] - c[None]) ** 2).sum(2)


def _kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        idx = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centres.append(x[idx])
        d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return np.stack(centres)


def kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 3, iters: int = 100
) -> tuple[np.ndarray, float]:
    """Plain Lloyd k-means (k-means++ seeded, best of ``restarts``); returns (centres, mean distance)."""
    best_c, best_d = None, np.inf
    for _ in range(restarts):
        c = _kmeans_pp_init(x, k, rng)
        for _ in range(iters):
            d2 = _sq_dist(x, c)
            assign = d2.argmin(1)
            counts = np.bincount(assign, minlength=k)
            sums = np.stack([np.bincount(assign, weights=x[:, d], minlength=k) for d in range(x.shape[1])], 1)
            new_c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
            if (counts == 0).any():  # empty cluster: move it to the worst-served point
                new_c[counts == 0] = x[d2.min(1).argmax()]
            converged = np.abs(new_c - c).max() < 1e-6
            c = new_c
            if converged:
                break
        dist = float(np.sqrt(_sq_dist(x, c).min(1)).mean())
        if dist < best_d:
            best_c, best_d = c, dist
    return best_c, best_d


def evolve_anchors(
    anchors_px: np.ndarray,
    wh: np.ndarray | torch.Tensor,
    thr: float = 4.0,
    gen: int = 1000,
    rng: np.random.Generator | None = None,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
) -> tuple[np.ndarray, float]:
    """Genetic refinement: mutate anchors multiplicatively, keep a mutation when it raises the fitness.

    Each generation multiplies every anchor coordinate, with probability ``mutation_prob``, by
    ``1 + u * N(0, 1) * sigma`` (``u`` uniform in [0, 1) per generation), clipped to [0.3, 3]; anchors stay >= 2 px.
    Returns ``(anchors, fitness)``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    wh = _as_wh_tensor(wh)  # convert once, not every generation
    k = np.asarray(anchors_px, dtype=np.float64).copy()
    f = anchor_fitness(k, wh, thr)
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():  # retry until at least one coordinate changes
            v = ((rng.random(k.shape) < mutation_prob) * rng.random() * rng.standard_normal(k.shape) * sigma + 1)
            v = v.clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0)
        fc = anchor_fitness(candidate, wh, thr)
        if fc > f:
            k, f = candidate, fc
    return k, f


def sort_by_area(anchors_px: np.ndarray) -> np.ndarray:
    """Return anchors ``(n, 2)`` sorted by increasing area."""
    return anchors_px[np.argsort(anchors_px.prod(1), kind="stable")]


def _log_anchors(anchors_px: np.ndarray, wh: np.ndarray, thr: float, img_size: int, title: str) -> None:
    """Log metrics and values of a set of anchors."""
    bpr, aat = anchor_metrics(anchors_px, wh, thr)
    fitness = anchor_fitness(anchors_px, wh, thr)
    values = ", ".join(f"{w:.0f},{h:.0f}" for w, h in np.round(anchors_px))
    LOGGER.info(
        f"{PREFIX}{title}: thr={1 / thr:.2f}, {bpr:.4f} best possible recall, {aat:.2f} anchors past thr, "
        f"fitness {fitness:.4f}\n{PREFIX}n={len(anchors_px)}, img_size={img_size}, anchors (w,h px): {values}"
    )


def kmean_anchors(
    wh: Any,
    n: int = 9,
    img_size: int = 640,
    thr: float = 4.0,
    gen: int = 1000,
    seed: int = 0,
    verbose: bool = True,
) -> np.ndarray:
    """Compute ``n`` anchors (pixels) for box sizes ``wh`` by k-means on whitened sizes, then genetic evolution.

    Boxes smaller than 2 px on both sides are dropped (a warning counts those below 3 px). k-means runs on at most
    ``KMEANS_MAX_POINTS`` randomly chosen boxes; evolution scores candidates on all of them.

    Args:
        wh: ``(m, 2)`` box sizes in pixels, or an Ultralytics dataset (sizes from :func:`labels_wh` at ``img_size``).
        n: number of anchors (``na * nl``).
        img_size: training image size (used for a dataset, and in logs).
        thr: size-ratio threshold, the loss's ``anchor_t``.
        gen: generations of evolution.
        seed: random seed; equal inputs and seed give equal anchors.
        verbose: also log the k-means result (the evolved result is always logged).

    Returns:
        ``(n, 2)`` float array of anchors in pixels sorted by area.

    Raises:
        ValueError: when fewer than ``n`` usable boxes remain.
    """
    rng = np.random.default_rng(seed)
    wh_all = _wh_from(wh, img_size, seed)
    tiny = int((wh_all < 3.0).any(1).sum())
    if tiny:
        LOGGER.warning(f"{PREFIX}Extremely small objects found: {tiny} of {len(wh_all)} labels are < 3 pixels in size")
    wh_fit = wh_all[(wh_all >= 2.0).any(1)]  # drop boxes below 2 px on both sides
    if len(wh_fit) < n:
        raise ValueError(f"{PREFIX}need at least {n} labels of >= 2 pixels to compute {n} anchors, got {len(wh_fit)}")

    scale = wh_fit.std(0)
    scale[scale <= 0] = 1.0
    sample = wh_fit if len(wh_fit) <= KMEANS_MAX_POINTS else wh_fit[rng.choice(len(wh_fit), KMEANS_MAX_POINTS, False)]
    centres, _ = kmeans(sample / scale, n, rng)
    anchors = sort_by_area(centres * scale)
    if verbose:
        _log_anchors(anchors, wh_all, thr, img_size, f"Running kmeans for {n} anchors on {len(wh_fit)} points")

    anchors, _ = evolve_anchors(anchors, wh_fit, thr, gen, rng)
    anchors = sort_by_area(anchors)
    _log_anchors(anchors, wh_all, thr, img_size, f"Evolved anchors over {gen} generations")  # always, as YOLOv5 does
    return anchors


# ---------------------------------------------------------------------------------------------------------------------
# Model integration
# ---------------------------------------------------------------------------------------------------------------------
def _detect_head(model: torch.nn.Module) -> torch.nn.Module:
    """Return the ``Detect`` head: ``model`` itself if it holds anchors, else ``model.model[-1]`` (DDP unwrapped)."""
    model = getattr(model, "module", model)
    if hasattr(model, "anchors") and hasattr(model, "stride"):
        return model
    return model.model[-1]


def anchors_in_pixels(detect: torch.nn.Module) -> torch.Tensor:
    """``Detect.anchors`` (stride units, ``(nl, na, 2)``) converted to pixels."""
    return detect.anchors.detach() * detect.stride.to(detect.anchors.device).view(-1, 1, 1)


def check_anchor_order(detect: torch.nn.Module) -> bool:
    """Make the anchor size order of the levels agree with the stride order; return whether the levels were flipped.

    Small anchors belong to small strides. If the mean anchor area in pixels decreases from the first level to the last
    while the stride increases (or vice versa), the pixel anchors of the levels are reversed and stored back in stride
    units.
    """
    stride = detect.stride.to(detect.anchors.device).float().view(-1, 1, 1)
    pixels = detect.anchors.detach().float() * stride
    area = pixels.prod(-1).mean(-1)
    d_area = float(area[-1] - area[0])
    d_stride = float(detect.stride[-1] - detect.stride[0])
    if d_area and d_stride and (d_area > 0) != (d_stride > 0):
        LOGGER.info(f"{PREFIX}Reversing anchor order to match stride order")
        with torch.no_grad():
            detect.anchors[:] = (pixels.flip(0) / stride).to(detect.anchors.dtype)
        return True
    return False


def write_anchors(detect: torch.nn.Module, anchors_px: np.ndarray) -> None:
    """Store area-sorted pixel anchors in ``detect.anchors`` (stride units), smallest anchors on the smallest stride."""
    nl, na = detect.anchors.shape[:2]
    stride = detect.stride.detach().float().cpu()
    levels = torch.as_tensor(sort_by_area(anchors_px), dtype=torch.float32).view(nl, na, 2)
    by_stride = torch.argsort(stride, stable=True)  # level index of the smallest stride first
    ordered = torch.empty_like(levels)
    ordered[by_stride] = levels
    with torch.no_grad():
        new = ordered / stride.view(-1, 1, 1)
        detect.anchors[:] = new.to(device=detect.anchors.device, dtype=detect.anchors.dtype)


def check_anchors(
    model: torch.nn.Module,
    wh_or_dataset: Any,
    thr: float = 4.0,
    imgsz: int = 640,
    gen: int = 1000,
    seed: int = 0,
    force: bool = False,
) -> bool:
    """Check the model's anchors against the dataset's boxes and replace them when their recall is too low.

    Logs the anchors' best possible recall (BPR). When BPR < 0.98, evolves ``na * nl`` new anchors and writes them into
    ``Detect.anchors`` (stride units, in stride order) only if their BPR is higher than the current one.
    ``force=True`` (a model YAML giving ``anchors`` only as a count, so the current ones are placeholders) always
    computes and writes new anchors, and raises ``ValueError`` when the labels are too few to compute them.

    Args:
        model: model whose ``model[-1]`` is the ``Detect`` head (or the head itself).
        wh_or_dataset: ``(n, 2)`` box sizes in pixels, or an Ultralytics dataset (see :func:`labels_wh`).
        thr: size-ratio threshold, the loss's ``anchor_t``.
        imgsz: training image size.
        gen: generations of evolution.
        seed: random seed for the scale augmentation and the evolution.
        force: compute new anchors whatever the current ones' fit (they are placeholders).

    Returns:
        Whether the anchors were replaced.
    """
    detect = _detect_head(model)
    wh = _wh_from(wh_or_dataset, imgsz, seed)
    current = anchors_in_pixels(detect).cpu().numpy().reshape(-1, 2)
    n = current.shape[0]
    if force:
        LOGGER.info(f"{PREFIX}The model YAML gives only the number of anchors; computing {n} anchors from the labels")
        try:
            new = kmean_anchors(wh, n=n, img_size=imgsz, thr=thr, gen=gen, seed=seed, verbose=False)
        except ValueError as e:
            raise ValueError(f"{e}; the model YAML gives 'anchors' as a count, so they must be computed from the "
                             f"labels: use more labelled images, or write the anchors (pixels) into the YAML") from None
        write_anchors(detect, new)
        check_anchor_order(detect)
        LOGGER.info(f"{PREFIX}Anchors saved to model (BPR {anchor_metrics(new, wh, thr)[0]:.3f})")
        return True
    bpr, aat = anchor_metrics(current, wh, thr)
    message = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr >= BPR_GOOD:
        LOGGER.info(f"{message}Current anchors are a good fit to dataset ✅")
        return False

    LOGGER.info(f"{message}Anchors are a poor fit to dataset ⚠️, attempting to improve...")
    try:
        new = kmean_anchors(wh, n=n, img_size=imgsz, thr=thr, gen=gen, seed=seed, verbose=False)
    except ValueError as e:
        LOGGER.warning(f"{e}; keeping the original anchors")
        return False
    new_bpr, _ = anchor_metrics(new, wh, thr)
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}Original anchors better than new anchors (BPR {new_bpr:.3f}), proceeding with original")
        return False

    write_anchors(detect, new)
    check_anchor_order(detect)
    LOGGER.info(
        f"{PREFIX}New anchors saved to model (BPR {bpr:.3f} -> {new_bpr:.3f}). "
        f"Update the model *.yaml to use these anchors in the future."
    )
    return True
