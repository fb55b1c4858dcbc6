"""Model ensembles: detectors of the same classes run as one (``val.py``/``detect.py`` with several ``--weights``).

Pure PyTorch: ``Ensemble`` only needs members whose eval output is ``Detect``'s ``(y, raw)``, ``y`` of shape
``(batch, 4 + nc, anchors)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Ensemble(nn.ModuleList):
    """Run every member on the same input and join their predictions along the anchor axis, before NMS.

    ``Ensemble([m1, m2])(x)`` returns ``(y, raw)`` as one ``Detect`` would: ``y`` is the members' ``y`` concatenated on
    the last axis (``(batch, 4 + nc, n1 + n2)``), ``raw`` the list of the members' raw outputs. NMS then keeps the best
    box of all members (YOLOv5's ensemble: the 'nms ensemble' of the original). Stride is the largest member's,
    ``names`` the first member's; every member must predict the same classes.
    """

    def __init__(self, models: list[nn.Module] | tuple[nn.Module, ...] = ()):
        super().__init__(models)
        if not len(self):
            raise ValueError("Ensemble: give at least one model")
        names = [dict(getattr(m, "names", {}) or {}) for m in self]
        counts = [len(n) for n in names]
        if len(set(counts)) > 1:
            raise ValueError(f"Ensemble: the models predict different numbers of classes ({counts}); ensemble models "
                             f"trained on the same classes")
        if any(n and n != names[0] for n in names[1:]):
            other = next(n for n in names[1:] if n and n != names[0])
            raise ValueError(f"Ensemble: the models' class names differ ({names[0]} vs {other}); ensemble models "
                             f"trained on the same classes")
        self.names = names[0]
        self.nc = counts[0]
        strides = [m.stride.max() if isinstance(getattr(m, "stride", None), torch.Tensor) else torch.tensor(32.0)
                   for m in self]
        self.register_buffer("stride", torch.stack([s.float() for s in strides]).max().view(1), persistent=False)
        first = self[0]
        self.yaml = dict(getattr(first, "yaml", {}) or {})
        self.augment = False  # test-time augmentation of every member when a caller cannot pass augment=True


    def forward(self, x: torch.Tensor, augment: bool | None = None, **kwargs) -> tuple[torch.Tensor, list]:
        augment = self.augment if augment is None else augment
        outputs = [m(x, augment=augment) if augment else m(x) for m in self]
        ys = [o[0] if isinstance(o, (list, tuple)) else o for o in outputs]
        raws = [o[1] if isinstance(o, (list, tuple)) and len(o) > 1 else None for o in outputs]
        return torch.cat(ys, -1), raws

    def fuse(self, verbose: bool = False, **kwargs) -> "Ensemble":
        for m in self:
            if hasattr(m, "fuse"):
                m.fuse(verbose=verbose)
        return self
