"""Training batches for modules that need two images: BatchNorm over pooled ``(B, C, 1, 1)`` vectors (SK, BAM, CoT)
has one value per channel in a batch of one, which PyTorch refuses in training ("Expected more than 1 value per
channel when training"), as the papers' own code does.

Those modules say so with a class attribute ``min_batch = 2``. A training loader for a model holding one never makes a
batch of one: a last partial batch of exactly one image is left out of the epoch (shuffled, so a different image each
epoch; every other batch and every other model is unchanged), and a batch size that gives one image per batch
(``--batch-size 1``, or one image per process under DDP, or a one-image training set) is an error naming the modules.
"""

from __future__ import annotations

import math

import torch.nn as nn


class BatchSizeError(ValueError):
    """A training batch of one image for a model whose modules need at least two (see ``min_batch``)."""


def modules_needing_pairs(model: nn.Module) -> list[str]:
    """``'SK (layer 8)'`` for each module of ``model`` that needs 2+ images per training batch (``min_batch``)."""
    found = []
    for name, m in model.named_modules():
        if getattr(type(m), "min_batch", 1) > 1:
            layer = name.split(".")[1] if name.startswith("model.") else name
            found.append(f"{type(m).__name__} (layer {layer})")
    return found


def lone_last_batch(samples: int, batch: int) -> bool:
    """Whether ``samples`` images in batches of ``batch`` end with a batch of exactly one image."""
    return samples > batch > 1 and samples % batch == 1


def pairs_only(build, needy: list[str], world_size: int = 1):
    """Wrap the engine's ``build_dataloader(dataset, batch, ...)`` so that no training batch holds one image."""
    from ultralytics.utils import LOGGER

    def build_dataloader(dataset, batch: int, *args, rank: int = -1, drop_last: bool = False, **kwargs):
        n = len(dataset)
        samples = math.ceil(n / world_size) if rank != -1 else n  # one process's shard under DDP
        per_batch = min(batch, n, samples)
        what = ", ".join(needy[:3]) + (f" and {len(needy) - 3} more" if len(needy) > 3 else "")
        if per_batch < 2:
            if n < 2:
                why = f"the training set has {n} image"
            elif batch < 2:
                why = f"--batch-size {batch}" if world_size == 1 else f"--batch-size over {world_size} processes " \
                                                                       f"gives {batch} image per process"
            else:
                why = f"{n} training images over {world_size} processes give {samples} per process"
            raise BatchSizeError(f"{why}: {what} normalise pooled vectors with BatchNorm, which needs at least 2 "
                                 f"images per training batch; use --batch-size 2 or more, or a model without them")
        if not drop_last and lone_last_batch(samples, per_batch):
            LOGGER.info(f"{what}: need 2+ images per training batch, so the last batch of each epoch, which would "
                        f"hold 1 of {samples} images, is left out (a different image each epoch)")
            drop_last = True
        return build(dataset, batch, *args, rank=rank, drop_last=drop_last, **kwargs)

    return build_dataloader
