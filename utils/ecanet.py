"""Weights of ECA-Net's own code (BangguWu/ECANet: ``eca_resnet18`` ... ``eca_resnet152``, ``eca_mobilenet_v2``) in
the models of ``models/cls/eca-*.yaml``, and of timm's ECA-ResNets (``ecaresnet50d``, ``ecaresnet101d``,
``ecaresnetlight``, ``ecaresnet50d_pruned``, ``ecaresnet101d_pruned``) in ``models/cls/ecaresnet*.yaml``.

ECA-Net's ``main.py`` saves ``checkpoint.pth.tar`` / ``model_best.pth.tar`` as a dict with ``state_dict`` (plus
``epoch``, ``arch``, ``best_prec1``, ``optimizer``), its keys prefixed ``module.`` by DataParallel. Such a file is read
by the project's restricted unpickler (``utils/checkpoint.py``), its keys renamed by the one table below, and loaded
with ``strict=True``:

    from models.classify import ClassificationModel
    from utils.ecanet import load_ecanet_weights
    model = load_ecanet_weights(ClassificationModel("eca-resnet50"), "eca_resnet50_k3557.pth.tar")

``to_ecanet_state_dict(model)`` is the inverse (our weights under ECA-Net's names, for its code). timm's weights (a
state_dict, or a ``.pth`` of one) load the same way with ``load_timm_weights``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from models.classify import ConvAct, InvertedResidual, LinearHead, ResBasicBlock, ResBottleneck

# The one name table: ECA-Net's (and timm's) state_dict names -> ours, as prefixes (the rest of a key, weight, bias,
# running_mean..., is kept). "*-block" rows name tensors inside one residual block; "*-top" the ones outside the
# blocks, with {stem}/{head}/{last} our stem conv, classifier head and (MobileNetV2) the 1x1 conv before the head.
ECANET_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "resnet-top": (("conv1.", "{stem}.conv."), ("bn1.", "{stem}.bn."), ("fc.", "{head}.linear.")),
    "resnet-block": (("conv1.", "cv1.conv."), ("bn1.", "cv1.bn."), ("conv2.", "cv2.conv."), ("bn2.", "cv2.bn."),
                     ("conv3.", "cv3.conv."), ("bn3.", "cv3.bn."), ("eca.", "att."),
                     ("downsample.0.", "shortcut.conv."), ("downsample.1.", "shortcut.bn.")),
    "mobilenetv2-top": (("features.0.0.", "{stem}.conv."), ("features.0.1.", "{stem}.bn."),
                        ("features.{n_last}.0.", "{last}.conv."), ("features.{n_last}.1.", "{last}.bn."),
                        ("classifier.1.", "{head}.linear.")),
    # blocks with an expansion conv (t != 1): pw (conv.0), dw (conv.1), projection (conv.2, conv.3), ECA (conv.4)
    "mobilenetv2-block": (("conv.0.0.", "cv1.conv."), ("conv.0.1.", "cv1.bn."), ("conv.1.0.", "cv2.conv."),
                          ("conv.1.1.", "cv2.bn."), ("conv.2.", "cv3.conv."), ("conv.3.", "cv3.bn."),
                          ("conv.4.", "att.")),
    # the first block (t = 1) has no expansion conv: dw (conv.0), projection (conv.1, conv.2), ECA (conv.3)
    "mobilenetv2-block-t1": (("conv.0.0.", "cv2.conv."), ("conv.0.1.", "cv2.bn."), ("conv.1.", "cv3.conv."),
                             ("conv.2.", "cv3.bn."), ("conv.3.", "att.")),
    # timm's ResNet-D: a deep stem (conv1 = conv-BN-ReLU-conv-BN-ReLU-conv, then bn1) and average-pool shortcuts
    # (downsample = pool, conv, BN); its ECA module is "se"
    "timm-deep-top": (("conv1.0.", "model.0.conv."), ("conv1.1.", "model.0.bn."), ("conv1.3.", "model.1.conv."),
                      ("conv1.4.", "model.1.bn."), ("conv1.6.", "model.2.conv."), ("bn1.", "model.2.bn."),
                      ("fc.", "{head}.linear.")),
    "timm-block": (("conv1.", "cv1.conv."), ("bn1.", "cv1.bn."), ("conv2.", "cv2.conv."), ("bn2.", "cv2.bn."),
                   ("conv3.", "cv3.conv."), ("bn3.", "cv3.bn."), ("se.", "att."),
                   ("downsample.1.", "shortcut.1.conv."), ("downsample.2.", "shortcut.1.bn.")),
}


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(our prefix, block)`` of every residual block of ``model.model`` in order."""
    out = []
    for i, layer in enumerate(model.model):
        seq = layer if isinstance(layer, nn.Sequential) else [layer]
        for j, b in enumerate(seq):
            if isinstance(b, (ResBottleneck, ResBasicBlock, InvertedResidual)):
                out.append((f"model.{i}" + (f".{j}" if isinstance(layer, nn.Sequential) else ""), b))
    return out


def _check_layout(model: nn.Module, blocks: list, head: int, where: str) -> None:
    if not blocks or not isinstance(model.model[0], ConvAct) or not isinstance(model.model[head], LinearHead):
        raise ValueError(f"{type(model).__name__}: not a ResNet/MobileNetV2 layout (stem ConvAct, residual blocks, "
                         f"LinearHead); {where}")


def _resnet_pairs(blocks: list[tuple[str, nn.Module]], table: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """(their prefix, our prefix) of every block of a ResNet named ``layer{stage}.{index}``: a stage starts at the
    first block and at every block with a projection shortcut (one row per block or one row per stage alike)."""
    pairs, stage, j = [], 0, 0
    for n, (ours, b) in enumerate(blocks):
        if n == 0 or not isinstance(b.shortcut, nn.Identity):
            stage, j = stage + 1, 0
        pairs += [(f"layer{stage}.{j}.{a}", f"{ours}.{o}") for a, o in table]
        j += 1
    return pairs


def _key_map(model: nn.Module, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``{their key: ours}`` for every tensor of ``model`` from (their prefix, our prefix) pairs."""
    out = {}
    for key in model.state_dict():
        theirs = [a + key[len(o):] for a, o in pairs if key.startswith(o)]
        if len(theirs) != 1:
            raise ValueError(f"{key}: no name for this tensor in the other layout ({len(theirs)} candidates)")
        out[theirs[0]] = key
    return out


def ecanet_key_map(model: nn.Module) -> dict[str, str]:
    """``{ECA-Net's state_dict key: ours}`` for every tensor of ``model`` (an ``eca-*.yaml`` ClassificationModel)."""
    blocks, head = _blocks(model), len(model.model) - 1
    _check_layout(model, blocks, head, "ECA-Net weights fit models/cls/eca-*.yaml")
    if isinstance(blocks[0][1], InvertedResidual):
        last = next(i for i in range(head - 1, -1, -1) if isinstance(model.model[i], ConvAct))
        fmt = {"stem": "model.0", "head": f"model.{head}", "last": f"model.{last}", "n_last": len(blocks) + 1}
        pairs = [(a.format(**fmt), b.format(**fmt)) for a, b in ECANET_NAMES["mobilenetv2-top"]]
        for n, (ours, b) in enumerate(blocks, 1):
            table = ECANET_NAMES["mobilenetv2-block-t1" if isinstance(b.cv1, nn.Identity) else "mobilenetv2-block"]
            pairs += [(f"features.{n}.{a}", f"{ours}.{o}") for a, o in table]
    else:
        fmt = {"stem": "model.0", "head": f"model.{head}"}
        pairs = [(a.format(**fmt), b.format(**fmt)) for a, b in ECANET_NAMES["resnet-top"]]
        pairs += _resnet_pairs(blocks, ECANET_NAMES["resnet-block"])
    return _key_map(model, pairs)


def timm_key_map(model: nn.Module) -> dict[str, str]:
    """``{timm's state_dict key: ours}`` for an ``ecaresnet*.yaml`` model (timm's ResNet-D family with ECA)."""
    blocks, head = _blocks(model), len(model.model) - 1
    _check_layout(model, blocks, head, "timm's weights fit models/cls/ecaresnet*.yaml")
    deep = isinstance(model.model[1], ConvAct)  # three stem convs (ResNet-D) or one 7x7
    fmt = {"stem": "model.0", "head": f"model.{head}"}
    pairs = [(a.format(**fmt), b.format(**fmt)) for a, b in ECANET_NAMES["timm-deep-top" if deep else "resnet-top"]]
    pairs += _resnet_pairs(blocks, ECANET_NAMES["timm-block"])
    return _key_map(model, pairs)


def ecanet_backbone_key_map(model: nn.Module) -> dict[str, str]:
    """``{ECA-Net's key: ours}`` for the ResNet backbone of a detector (``models/hub/yolov5-eca-resnet50.yaml``): its
    stem ConvAct (layer 0) and every residual block; the neck and head have no ECA-Net counterpart, nor ``fc`` ours."""
    blocks = _blocks(model)
    if not blocks or not isinstance(model.model[0], ConvAct) or isinstance(blocks[0][1], InvertedResidual):
        raise ValueError(f"{type(model).__name__}: no ECA-ResNet backbone (stem ConvAct as layer 0, then ResNet "
                         f"blocks); ECA-Net backbone weights fit models/hub/yolov5-eca-resnet50.yaml")
    pairs = [(a.format(stem="model.0"), b.format(stem="model.0"))
             for a, b in ECANET_NAMES["resnet-top"] if "{head}" not in b]
    pairs += _resnet_pairs(blocks, ECANET_NAMES["resnet-block"])
    last = int(blocks[-1][0].split(".")[1])
    backbone = [k for k in model.state_dict() if int(k.split(".")[1]) <= last]
    return _key_map(_Keys(backbone), pairs)


class _Keys:
    """Stands in for a model whose state_dict holds only ``keys`` (for ``_key_map``)."""

    def __init__(self, keys: list[str]):
        self.keys = keys

    def state_dict(self) -> dict[str, None]:
        return dict.fromkeys(self.keys)


def load_ecanet_backbone(model: nn.Module, weights: str | Path | dict) -> int:
    """Load the backbone tensors of ECA-Net's ImageNet weights (``.pth.tar`` path or loaded dict; ``fc`` is left out)
    into a detector on an ECA-ResNet backbone; every backbone tensor must be there with its shape. Returns how many
    tensors were loaded."""
    from utils.checkpoint import CheckpointError

    where, sd, names = _read(model, weights, ecanet_backbone_key_map, "ECA-Net")
    ours = model.state_dict()
    problems = _misfits(sd, names, ours, ignore="fc.")
    if problems:
        raise CheckpointError(f"{where}: does not fit the detector's ECA-ResNet backbone ({problems}); check "
                              f"the YAML's stages and k_size against the checkpoint's architecture")
    model.load_state_dict({names[k]: sd[k].to(ours[names[k]].dtype) for k in names}, strict=False)
    return len(names)


def to_ecanet_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights under ECA-Net's names (the keys and shapes its ``model.state_dict()`` holds)."""
    sd = model.state_dict()
    return {theirs: sd[ours] for theirs, ours in ecanet_key_map(model).items()}


def ecanet_state_dict(obj) -> dict[str, torch.Tensor]:
    """The state_dict of a loaded ECA-Net checkpoint (``{'state_dict': ...}`` or a bare state_dict, as timm's), without
    DataParallel's ``module.`` prefix."""
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not (isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values())):
        raise ValueError("not an ECA-Net or timm checkpoint: expected a dict with a 'state_dict' of tensors "
                         "(ECA-Net's main.py .pth.tar) or a bare state_dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_ecanet_weights(model: nn.Module, weights: str | Path | dict) -> nn.Module:
    """Load ECA-Net's weights (a ``.pth.tar``/``.pth`` path read by the restricted loader, or its loaded dict) into
    ``model`` strictly; every missing, unexpected or misshapen tensor is named in one error."""
    return _load(model, weights, ecanet_key_map, "ECA-Net")


def load_timm_weights(model: nn.Module, weights: str | Path | dict) -> nn.Module:
    """Load timm's weights (its ``model.state_dict()``, or a ``.pth`` of one read by the restricted loader) into an
    ``ecaresnet*.yaml`` model strictly."""
    return _load(model, weights, timm_key_map, "timm")


def _read(model: nn.Module, weights: str | Path | dict, key_map, source: str) -> tuple[str, dict, dict[str, str]]:
    """(what to call the weights in an error, their state_dict, their names -> ours) for ``model``."""
    from utils.checkpoint import CheckpointError, _raw_load

    where = str(weights) if isinstance(weights, (str, Path)) else f"{source} state_dict"
    try:
        sd = ecanet_state_dict(_raw_load(weights) if isinstance(weights, (str, Path)) else weights)
        return where, sd, key_map(model)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _misfits(sd: dict[str, torch.Tensor], names: dict[str, str], ours: dict[str, torch.Tensor],
             ignore: str | None = None) -> str:
    """The tensors of ``sd`` that do not fit ``names`` (missing, unexpected except those under ``ignore``, or of
    another shape), as one phrase; empty when all fit."""
    missing = [k for k in names if k not in sd]
    unexpected = [k for k in sd if k not in names and not (ignore and k.startswith(ignore))]
    shapes = [f"{k} {tuple(sd[k].shape)} vs ours {tuple(ours[names[k]].shape)}" for k in names
              if k in sd and sd[k].shape != ours[names[k]].shape]
    return "; ".join(f"{len(v)} {what}: {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}"
                     for what, v in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
                     if v)


def _load(model: nn.Module, weights: str | Path | dict, key_map, source: str) -> nn.Module:
    from utils.checkpoint import CheckpointError

    where, sd, names = _read(model, weights, key_map, source)
    problems = _misfits(sd, names, model.state_dict())
    if problems:
        name = Path(model.yaml_file).stem if getattr(model, "yaml_file", "") else type(model).__name__
        raise CheckpointError(f"{where}: does not fit {name} ({problems}); check the model YAML (and an "
                              f"ECA-Net YAML's k_size, --ksize) against the checkpoint's architecture")
    model.load_state_dict({names[k]: v for k, v in sd.items()}, strict=True)
    return model
