"""Load checkpoints (ours and the original YOLOv5 v5.0/v6.0/v7.0 ``.pt`` files) without importing foreign code.

A ``.pt`` file is a pickle. Ours pickle ``models.yolo.Model``; the original YOLOv5 pickles *its* classes under the
very same module paths (``models.yolo.Model``/``DetectionModel``, ``models.common.Conv``...) with a different
attribute layout, plus odds and ends (``utils.*`` objects, numpy scalars). Importing those classes would run code
that is not ours, or build our classes from a state that does not fit them. So unpickling goes through
``SafeUnpickler``: every class under ``models.*`` (and the engine's ``ultralytics.*``) becomes an inert stand-in
``nn.Module`` that only holds the pickled state, torch/numpy/builtin types are allowed from a fixed list, and anything
else becomes an inert ``Opaque`` record that is never called. A stand-in model tree still has a ``state_dict()`` and
its ``yaml`` dict, which is all we need: ``Model(yaml)`` is built from our code and the weights are loaded with
``strict=True``.

Public API:
    load_checkpoint(path) -> dict          # the checkpoint dict, 'model'/'ema' converted to our Model
    load_model(weights) -> Model           # float eval model (fused by default) with names and stride
    load_backend(weights) -> AutoBackend   # any format (.pt, .torchscript, .onnx, *_openvino_model/) for inference
    transfer_weights(model, src) -> (n_transferred, n_total)
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import importlib
import pathlib
import pickle
import types
import zipfile
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.attention import ATTENTION
from models.yolo import BLOCK_SETS, Detect, Model, block_set_of

CHECKPOINT_HELP = ("expected a PyTorch .pt checkpoint saved by train.py (keys 'model'/'ema') or an official "
                   "YOLOv5 v5.0-v7.0 release such as yolov5s.pt")


class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint; the message names the file and what was expected."""


# ----------------------------------------------------------------------------------------------------
# Safe unpickling
# ----------------------------------------------------------------------------------------------------


class StandInModule(nn.Module):
    """Inert replacement for a pickled module class that is not imported (original YOLOv5 or engine classes).

    It keeps the pickled attributes (so ``state_dict()``, ``yaml``, ``names``, ``stride`` read as usual) and has no
    ``forward``. ``original`` names the class it replaces.
    """

    original = "?"

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.standin_args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):  # (dict, slots)
            state = {**state[0], **(state[1] or {})}
        if isinstance(state, dict):
            super().__setstate__(state)
        else:
            super().__setstate__({})
            self.standin_state = state

    def __setitem__(self, key, value) -> None:  # a pickled dict subclass fills itself with SETITEMS
        self.__dict__.setdefault("standin_items", {})[key] = value

    def append(self, value) -> None:  # ... and a list subclass with APPENDS
        self.__dict__.setdefault("standin_list", []).append(value)

    def extend(self, values) -> None:
        self.__dict__.setdefault("standin_list", []).extend(values)

    def __repr__(self) -> str:
        return f"StandIn[{self.original}]"


class Opaque:
    """Inert record of a pickled object whose class is not on the allow-list: keeps arguments and state, runs
    nothing."""

    original = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items, obj.list = args, None, {}, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.list.append(value)

    def extend(self, values) -> None:
        self.list.extend(values)

    def __repr__(self) -> str:
        return f"Opaque[{self.original}]"


_standins: dict[tuple[str, str, bool], type] = {}


def _stand_in(module: str, name: str, is_module: bool) -> type:
    """One stand-in class per pickled ``module.name`` (so ``type(m).__name__`` still reads ``Conv``, ``C3``...)."""
    key = (module, name, is_module)
    if key not in _standins:
        base = StandInModule if is_module else Opaque
        _standins[key] = type(name, (base,), {"original": f"{module}.{name}", "__module__": f"standin.{module}"})
    return _standins[key]


def _numpy_globals() -> dict[str, Any]:
    """Numpy callables needed to rebuild arrays and scalars (the same ones torch's weights-only loader trusts)."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    out: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # pickles name either, whichever numpy wrote them
        out[f"{mod}.scalar"] = multiarray.scalar
        out[f"{mod}._reconstruct"] = multiarray._reconstruct
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes else ():
        obj = getattr(dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            out[f"numpy.dtypes.{name}"] = obj
    return out


def _rebuilders() -> dict[str, Any]:
    out = {}
    for mod, names in {
        "torch._utils": ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                         "_rebuild_parameter_with_state", "_rebuild_qtensor"),
        "torch._tensor": ("_rebuild_from_type_v2",),
    }.items():
        m = importlib.import_module(mod)
        out.update({f"{mod}.{n}": getattr(m, n) for n in names if hasattr(m, n)})
    return out


SAFE_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.object": object, "builtins.set": set, "builtins.frozenset": frozenset, "builtins.slice": slice,
    "builtins.complex": complex, "builtins.bytearray": bytearray, "builtins.range": range,
    "_codecs.encode": __import__("_codecs").encode,  # protocol-2 pickles of bytes
    "copyreg._reconstructor": __import__("copyreg")._reconstructor,  # object.__new__(cls) for an allowed cls
    "pathlib.Path": pathlib.PurePath, "pathlib.PosixPath": pathlib.PurePosixPath,
    "pathlib.WindowsPath": pathlib.PureWindowsPath, "pathlib.PurePosixPath": pathlib.PurePosixPath,
    "pathlib.PureWindowsPath": pathlib.PureWindowsPath,
    "argparse.Namespace": types.SimpleNamespace, "types.SimpleNamespace": types.SimpleNamespace,
    "datetime.datetime": datetime.datetime, "datetime.date": datetime.date, "datetime.timedelta": datetime.timedelta,
    "torch.Size": torch.Size, "torch.device": torch.device, "torch.Tensor": torch.Tensor,
    "torch.nn.parameter.Parameter": nn.Parameter,
    **_rebuilders(),
    **_numpy_globals(),
}

# Pickled classes from these top-level packages are module trees we read weights from, never code we run.
STANDIN_MODULE_ROOTS = ("models", "ultralytics")


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` never imports code outside torch's own layers and a fixed allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names that protocol-2 pickles use
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules."):
            cls = _torch_nn_class(module, name)
            if cls is not None:
                return cls
            return _stand_in(module, name, True)
        if module.split(".")[0] in STANDIN_MODULE_ROOTS:
            return _stand_in(module, name, True)
        return _stand_in(module, name, False)


def _torch_nn_class(module: str, name: str) -> type | None:
    """A real ``torch.nn`` layer class (unpickling one sets attributes only; no constructor runs)."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


# torch.load(pickle_module=...) needs an object with the pickle module's Unpickler and load
safe_pickle = types.SimpleNamespace(
    Unpickler=SafeUnpickler,
    load=lambda f, **kw: SafeUnpickler(f, **kw).load(),
    __name__="utils.checkpoint.safe_pickle",
)


# ----------------------------------------------------------------------------------------------------
# Loading and converting
# ----------------------------------------------------------------------------------------------------


# Leading bytes of file kinds users pass by mistake, to say what such a file is
_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
          (b"\x1f\x8b", "a gzip archive"), (b"\x80", "a plain Python pickle"))


ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header (torch.save's default format since torch 1.6)
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's pre-1.6 format: a pickled magic number
TRUNCATED_HELP = "the file was cut short (an interrupted copy or save?); copy it again"


def _truncated_zip(p: Path, head: bytes) -> str | None:
    """'PyTorch checkpoint' or 'zip archive' for a file that starts as a zip but whose central directory (written
    last) is missing; else ``None``."""
    if not head.startswith(ZIP_MAGIC) or zipfile.is_zipfile(p):
        return None
    n = int.from_bytes(head[26:28], "little") if len(head) >= 30 else 0
    first = head[30:30 + n]  # the first member's name: torch.save writes '<name>/data.pkl' first
    torch_save = first.endswith(b"data.pkl") or (len(first) < max(n, 1) and p.suffix.lower() in (".pt", ".pth"))
    return "PyTorch checkpoint" if torch_save else "zip archive"


def _truncated_pickle(head: bytes, e: BaseException) -> str | None:
    """'PyTorch checkpoint' (legacy format) or 'Python pickle' when ``e`` says the pickle stream ended early."""
    ended = isinstance(e, EOFError) or (isinstance(e, pickle.UnpicklingError) and "truncated" in str(e)) or (
        isinstance(e, RuntimeError) and "unexpected EOF" in str(e))
    if not ended:
        return None
    if head.startswith(LEGACY_MAGIC):
        return "PyTorch checkpoint"
    return "Python pickle" if head.startswith(b"\x80") else None


def _is_torchscript(p: Path) -> bool:
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def describe_file(path: str | Path, by_suffix: bool = True) -> str:
    """What a file that is not a checkpoint is, in words: 'an empty file', 'a JPEG image', 'a text file ("hello")'...

    ``by_suffix``: call an unrecognised file with an export's suffix (``.onnx``...) an export."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(p, "rb") as f:
        head = f.read(512)
    if _is_torchscript(p):
        return "a TorchScript archive (pass it to detect.py/val.py as it is, or export again from the .pt)"
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        if any(n.endswith("data.pkl") for n in names):
            return "a torch.save() archive"
        return f"a zip archive of {len(names)} file(s) ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    truncated = _truncated_zip(p, head)
    if truncated:
        return f"a truncated {truncated} ({size:,} bytes; {TRUNCATED_HELP})"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if by_suffix and p.suffix.lower() in {".onnx", ".engine", ".torchscript", ".xml"}:
        return f"a {p.suffix[1:]} file (an export: pass it to detect.py/val.py as it is)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"{size} bytes of unrecognised binary data"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    if "backbone:" in text or "anchors:" in text:
        return "a model YAML (pass it with --cfg)"
    return f'a text file ("{first}")'


def _raw_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` through ``SafeUnpickler``; any failure becomes one ``CheckpointError`` naming the file."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: file not found; {CHECKPOINT_HELP}")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory; {CHECKPOINT_HELP}")
    if _is_torchscript(p):  # torch.load would hand it to torch.jit.load, which runs the archive's code
        raise CheckpointError(f"{p}: {describe_file(p)}, not a PyTorch checkpoint; {CHECKPOINT_HELP}")
    try:
        return torch.load(p, map_location=map_location, pickle_module=safe_pickle, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as e:
        with open(p, "rb") as f:
            head = f.read(512)
        truncated = _truncated_zip(p, head) or _truncated_pickle(head, e)
        if truncated:
            raise CheckpointError(f"{p}: truncated {truncated} ({p.stat().st_size:,} bytes): {TRUNCATED_HELP}"
                                  ) from None
        what = describe_file(p)
        if what.startswith(("a plain Python pickle", "a torch.save", f"{p.stat().st_size} bytes")):  # say what failed
            what += f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        raise CheckpointError(f"{p}: {what}, not a PyTorch checkpoint; {CHECKPOINT_HELP}") from None


def _as_dict_names(names: Any, nc: int) -> dict[int, str]:
    """Class names as ``{index: name}`` from a list, a dict (int or str keys) or nothing."""
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if isinstance(names, dict) and names:
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            pass
    return {i: f"class{i}" for i in range(nc)}


def _unwrap(obj: Any) -> Any:
    """A DataParallel/DDP wrapper pickled as-is holds the model under ``module``."""
    sub = getattr(obj, "_modules", {}).get("module") if isinstance(obj, nn.Module) else None
    return sub if sub is not None and hasattr(sub, "yaml") else obj


def to_our_model(obj: Any, source: str | Path = "checkpoint") -> Model:
    """Build our ``Model`` from a pickled model tree (stand-in or real) via its ``yaml`` and ``state_dict()``.

    Keys the original code kept that we do not (``anchor_grid`` buffers of v5.0) are dropped; ``names`` and
    ``stride`` are carried over. Returns a float32 model in eval mode.
    """
    obj = _unwrap(obj)
    cfg = getattr(obj, "yaml", None) if isinstance(obj, nn.Module) else None
    if not isinstance(cfg, dict) and isinstance(obj, nn.Module):  # official yolov5?-cls.pt files store no YAML
        from models.classify import yolov5_cls_yaml

        cfg = yolov5_cls_yaml(obj.state_dict())
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: the pickled model has no YOLOv5 'yaml' config to rebuild it from; "
                              f"{CHECKPOINT_HELP}")
    cfg = deepcopy(cfg)
    yaml_file = getattr(obj, "yaml_file", None) or cfg.get("yaml_file")
    if yaml_file:
        cfg["yaml_file"] = str(yaml_file)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in obj.state_dict().items()
          if not k.endswith(".anchor_grid")}
    model = _model_fitting(cfg, sd, source)
    frozen = {k for k, p in obj.named_parameters() if not p.requires_grad}
    for k, p in model.named_parameters():
        p.requires_grad_(k not in frozen)
    head = model.model[-1]
    if isinstance(head, Detect):
        stride = getattr(obj, "stride", None)
        if isinstance(stride, torch.Tensor) and stride.numel() == head.nl:
            head.stride = stride.detach().float().clone()
            model.stride = head.stride.clone()
        _reset_grids(head)  # anchors were overwritten in place
    model.names = _as_dict_names(getattr(obj, "names", None), model.nc)
    hyp = getattr(obj, "hyp", None)  # loss gains a run was trained with (what resuming it needs)
    if isinstance(hyp, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in hyp.values()):
        model.hyp = {str(k): float(v) for k, v in hyp.items()}
    return model.float().eval()


def _model_fitting(cfg: dict, sd: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Our model for ``cfg`` (a detector, or a classifier of ``models/classify.py``) that takes ``sd`` with
    ``strict=True``.

    A config without a ``blocks:`` key is tried with each block set, the one its layers suggest first: some names
    (``C3TR``, ``GhostConv``...) mean other blocks in the EMA paper's repository, and only the weights tell which code
    trained them. A set other than the suggested one is written into the config.
    """
    from models.classify import ClassificationModel, is_classification_yaml

    if is_classification_yaml(cfg):  # our classifier (models/classify.py): one way to build it
        try:
            model = ClassificationModel(cfg, verbose=False)
        except Exception as e:
            raise CheckpointError(f"{source}: its classifier config cannot be built ({type(e).__name__}: {e}); "
                                  f"{CHECKPOINT_HELP}") from None
        _load_fitting(model, sd, source)
        return model
    first = block_set_of(cfg).name
    names = [cfg["blocks"]] if "blocks" in cfg else [first, *(n for n in BLOCK_SETS if n != first)]
    error = None
    for name in names:
        try:
            model = Model(cfg if name == first else {**cfg, "blocks": name}, verbose=False)
        except Exception as e:  # the YAML of a model that is not a YOLOv5 anchor-based detector
            if name == names[0]:
                raise CheckpointError(f"{source}: its model config is not a YOLOv5 (anchor-based) model this "
                                      f"repository can build ({type(e).__name__}: {e}); {CHECKPOINT_HELP}") from None
            continue
        try:
            return _load_fitting(model, sd, source)
        except CheckpointError as e:
            error = error or e
    raise error


MISFIT_HELP = ("the file was edited, or its weights come from another model than its config; use the checkpoint "
               "train.py saved (or train again from the YAML)")


def _misfit(model: nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
    """How ``sd`` fails to fit ``model`` (``None`` when it fits): the first tensor of another shape, with both shapes,
    then missing and unexpected keys, each with a count of the others."""
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items()
             if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    parts = []
    if wrong:
        k, got, want = wrong[0]
        more = f" (and {len(wrong) - 1} more tensor(s) of another shape)" if len(wrong) > 1 else ""
        parts.append(f"'{k}' has shape {got} in the checkpoint but {want} in the model{more}")
    for keys, what in ((missing, "missing from the checkpoint"), (unexpected, "not in the model")):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"'{keys[0]}'{more} {what}")
    return "; ".join(parts) or None


def _load_fitting(model: nn.Module, sd: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """``model`` with ``sd`` loaded (``strict=True``), or a ``CheckpointError`` naming the key and both shapes."""
    problem = _misfit(model, sd)
    if problem is None:
        try:
            model.load_state_dict(sd, strict=True)
            return model
        except RuntimeError as e:  # e.g. a tensor that is no tensor
            problem = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
    raise CheckpointError(f"{source}: weights do not fit the model built from its own config: {problem}; "
                          f"{MISFIT_HELP}")


def _reset_grids(head: Detect) -> None:
    """Drop any grid the head cached before its anchors or strides were replaced."""
    if callable(getattr(head, "reset_grids", None)):
        head.reset_grids()
    elif isinstance(getattr(head, "_grids", None), dict):
        head._grids = {}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a ``.pt`` checkpoint (ours or an official YOLOv5 release) safely; ``model``/``ema`` become our ``Model``.

    Raises ``CheckpointError`` (one line naming the file and what was expected) for anything that is not such a
    checkpoint: random bytes, text, a zip of something else, a dict without a model.
    """
    raw = _raw_load(path, map_location)
    if isinstance(raw, nn.Module):
        raw = {"model": raw}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a checkpoint dict; {CHECKPOINT_HELP}")
    ckpt = dict(raw)
    for sd in (ckpt, ckpt.get("model"), ckpt.get("ema")):
        if isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: holds a bare state_dict without the model's config; {CHECKPOINT_HELP}")
    for key in ("model", "ema"):
        obj = ckpt.get(key)
        ckpt[key] = to_our_model(obj, path) if isinstance(obj, nn.Module) else None
    if ckpt["model"] is None and ckpt["ema"] is None:
        keys = ", ".join(map(str, list(raw)[:8])) if raw else "an empty dict"
        raise CheckpointError(f"{path}: no model inside (found {keys}); {CHECKPOINT_HELP}")
    for key in ("optimizer", "opt", "train_args"):  # inert records are of no use to callers
        if isinstance(ckpt.get(key), Opaque):
            ckpt[key] = None
    return ckpt


def checkpoint_model(ckpt: dict) -> Model:
    """The model to use from a loaded checkpoint: the EMA weights when present (what training validates), else
    ``model``."""
    return ckpt.get("ema") or ckpt["model"]


def load_for_engine(weight: str | Path, *args: Any, **kwargs: Any) -> dict:
    """A checkpoint for the engine's own loading code (resume, final validation, stripping optimizers, AutoBackend).

    ``utils.engine`` puts this in place of the engine's unpickling, so that every checkpoint the engine opens goes
    through ``load_checkpoint``: ``model``/``ema`` are our ``Model``; keys holding objects we do not rebuild become
    ``None``, ``train_args`` is always a dict and ``modelopt`` (quantization-aware training state) is dropped.
    Extra arguments (``map_location``, ``safe_only``...) are accepted and ignored: tensors always load on the CPU.
    """
    ckpt = load_checkpoint(weight)
    for k, v in ckpt.items():
        if isinstance(v, (Opaque, StandInModule)):
            ckpt[k] = None
    if not isinstance(ckpt.get("train_args"), dict):
        ckpt["train_args"] = {}
    ckpt["modelopt"] = None
    return ckpt


def check_resumable(path: str | Path) -> dict:
    """The checkpoint of an interrupted ``train.py`` run, loaded safely, or a ``CheckpointError`` saying why not."""
    ckpt = load_checkpoint(path)
    args, epoch = ckpt.get("train_args"), ckpt.get("epoch")
    again = f"start a new run with python train.py --weights {path}"
    if not isinstance(args, dict) or not isinstance(epoch, int):
        raise CheckpointError(f"--resume {path}: a model without this project's training state (an official YOLOv5 "
                              f"release or another trainer's checkpoint), nothing to resume; {again}")
    odd = [str(k) for k, v in args.items() if isinstance(v, (Opaque, StandInModule))]
    if odd:
        raise CheckpointError(f"--resume {path}: its training settings hold objects that are no settings "
                              f"({', '.join(odd)}); {again}")
    epochs = args.get("epochs")
    if epoch < 0 or ckpt.get("ema") is None or (isinstance(epochs, int) and epoch + 1 >= epochs):
        raise CheckpointError(f"--resume {path}: trained to {epochs} epoch{'s' * (epochs != 1)}, nothing to resume; "
                              f"{again}")
    return ckpt


def load_model(weights: str | Path, device: str | torch.device = "cpu", fuse: bool = True) -> Model:
    """A float32 eval-mode ``Model`` (Conv+BN fused by default) with ``names`` and ``stride`` from a ``.pt`` file."""
    model = checkpoint_model(load_checkpoint(weights))
    if fuse:
        model.fuse(verbose=False)
    return model.to(device).float().eval()


EXPORT_SUFFIXES = (".torchscript", ".onnx", ".engine")


def check_export_format(w: str | Path, task: str | None = None) -> Path:
    """An exported model (``.torchscript``, ``.onnx``, ``.engine``, ``*_openvino_model/``) that exists; else an error.

    Only these formats reach the engine's ``AutoBackend``: its other formats (TensorFlow, PaddlePaddle, CoreML...)
    would make it import, and try to install, packages this project does not use. ONNX files and OpenVINO folders are
    checked further without running them (``check_onnx``, ``check_openvino``); ``task`` (``detect``/``classify``) is
    what the caller runs, ``None`` for either (the export's metadata tells, else a detector is expected).
    """
    w = Path(str(w))
    if not w.exists():
        raise FileNotFoundError(f"weights '{w}' not found")
    openvino = w.is_dir() and w.name.endswith("_openvino_model")
    if w.suffix not in EXPORT_SUFFIXES and not openvino:
        raise CheckpointError(f"{w}: unsupported weights format; use a .pt checkpoint, or an export from export.py "
                              f"(.torchscript, .onnx, *_openvino_model/ folder, .engine)")
    if openvino:
        check_openvino(w)
    elif w.suffix == ".onnx":
        check_onnx(w, task)
    return w


def _reexport(w: Path, fmt: str) -> str:
    return f"export one with python export.py --weights {w.stem.removesuffix('_openvino_model')}.pt --include {fmt}"


def check_onnx(w: Path, task: str | None = None) -> None:
    """An ONNX file that is a model ``AutoBackend`` can run for ``task``: a valid ONNX protobuf (``onnx.load`` and
    ``onnx.checker``, nothing is run) with one image input ``(batch, 3, height, width)`` and, for a detector, a first
    output ``(batch, 4 + nc, anchors)`` (or YOLOv5's ``(batch, anchors, 5 + nc)``), for a classifier ``(batch, nc)``."""
    if w.is_dir():
        raise CheckpointError(f"{w}: is a folder, not an ONNX model; {_reexport(w, 'onnx')}")
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        raise CheckpointError(f"{w}: reading ONNX models needs the 'onnx' package: pip install onnx") from None
    if w.stat().st_size == 0:
        raise CheckpointError(f"{w}: not an ONNX model (an empty file, 0 bytes); {_reexport(w, 'onnx')}")
    try:
        model = onnx.load(str(w), load_external_data=False)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError, RuntimeError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{w}: not an ONNX model ({describe_file(w, by_suffix=False)}: {why}); "
                              f"{_reexport(w, 'onnx')}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    declared = meta.get("task")
    kinds = {"detect": "detector", "classify": "classifier"}
    if task and declared and declared != task:
        use = "classify/predict.py or classify/val.py" if declared == "classify" else "detect.py or val.py"
        raise CheckpointError(f"{w}: a {kinds.get(declared, declared)} export (its metadata says task '{declared}'), "
                              f"but this script runs {kinds.get(task, task)}s; use it with {use}")
    task = declared or task or "detect"
    kind = "classifier" if task == "classify" else "detector"
    inits = {t.name for t in model.graph.initializer}
    inputs = [(i.name, _dims(i)) for i in model.graph.input if i.name not in inits]
    outputs = [(o.name, _dims(o)) for o in model.graph.output]
    found = f"not an ONNX {kind} export: input(s) {_shapes(inputs)}, output(s) {_shapes(outputs)}"
    if len(inputs) != 1 or not _fits(inputs[0][1], [None, _int_meta(meta, "channels") or 3, None, None]):
        raise CheckpointError(f"{w}: {found}; expected one image input (batch, 3, height, width); "
                              f"{_reexport(w, 'onnx')}")
    nc = _nc_of(meta.get("names"))
    out = outputs[0][1] if outputs else None
    if task == "classify":
        ok, want = _fits(out, [None, nc]), f"(batch, {nc if nc else 'classes'})"
    else:
        if nc:  # ours (batch, 4 + nc, anchors) or YOLOv5's (batch, anchors, 5 + nc)
            ok = _fits(out, [None, 4 + nc, None]) or _fits(out, [None, None, 5 + nc])
        else:
            ok = _fits(out, [None, None, None]) and any(isinstance(d, str) or d >= 5 for d in out[1:])
        c = f"{4 + nc} = 4 + {nc} classes" if nc else "4 + classes"
        want = f"(batch, {c}, anchors) (or YOLOv5's (batch, anchors, {5 + nc if nc else '5 + classes'}))"
    if not ok:
        raise CheckpointError(f"{w}: {found}; expected a {kind}'s output {want}; {_reexport(w, 'onnx')}")


def _dims(value_info: Any) -> list[int | str] | None:
    """The shape of an ONNX graph input/output: ints, names of symbolic dimensions ('batch'), or None if unknown."""
    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _fits(dims: list | None, want: list[int | None]) -> bool:
    """Whether a shape has the rank of ``want`` and its given sizes (symbolic dimensions fit any size)."""
    return dims is not None and len(dims) == len(want) and all(
        v is None or isinstance(d, str) or d == v for d, v in zip(dims, want))


def _shapes(named: list[tuple[str, list | None]]) -> str:
    if not named:
        return "none"
    return ", ".join(f"'{n}' ({', '.join(map(str, d))})" if d is not None else f"'{n}' (unknown shape)"
                     for n, d in named)


def _int_meta(meta: dict, key: str) -> int | None:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        return None


def _nc_of(names: str | None) -> int | None:
    """The class count of an export's ``names`` metadata (a dict or list literal), or None."""
    import ast

    try:
        value = ast.literal_eval(names) if isinstance(names, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return len(value) if isinstance(value, (dict, list)) and value else None


def check_openvino(w: Path) -> None:
    """An OpenVINO folder that holds what ``AutoBackend`` reads: one ``.xml`` (the graph), its ``.bin`` (the weights)
    and ``metadata.yaml`` (names, stride, image size); files are checked, not run."""
    xmls = sorted(w.glob("*.xml"))
    if not xmls:
        found = ", ".join(sorted(f.name for f in w.iterdir())) or "nothing"
        raise CheckpointError(f"{w}: OpenVINO folder without its model .xml file (found {found}); "
                              f"{_reexport(w, 'openvino')}")
    if len(xmls) > 1:
        raise CheckpointError(f"{w}: OpenVINO folder with {len(xmls)} .xml files ({', '.join(f.name for f in xmls)}); "
                              f"keep the one export.py wrote")
    yolov5 = xmls[0].with_suffix(".yaml").is_file()  # the original YOLOv5's export keeps its metadata in <name>.yaml
    for f, what in ((xmls[0].with_suffix(".bin"), "weights"), (w / "metadata.yaml", "metadata")):
        if not f.is_file() and not (yolov5 and what == "metadata"):
            raise CheckpointError(f"{w}: OpenVINO folder without {f.name} (its {what}); copy the whole folder "
                                  f"export.py wrote, or {_reexport(w, 'openvino')}")
    if xmls[0].with_suffix(".bin").stat().st_size == 0:
        raise CheckpointError(f"{w}: {xmls[0].with_suffix('.bin').name} is empty (0 bytes); copy the whole folder "
                              f"again, or {_reexport(w, 'openvino')}")


def load_backend(weights: str | Path, device: str | torch.device = "cpu", half: bool = False, fuse: bool = True,
                 verbose: bool = False, task: str | None = None, raw: bool = False):
    """An Ultralytics ``AutoBackend`` for any supported format: ``.pt`` (ours or official) through ``load_model``,
    exports (``.torchscript``, ``.onnx``, ``*_openvino_model/``) with names/stride from their metadata.

    ``backend(im)`` returns the ``(bs, 4 + nc, N)`` predictions (for ``.pt`` as the first element of a list), also for
    exports in YOLOv5's layout ``(bs, N, 5 + nc)`` (ours, and the original YOLOv5's): ``utils.backend.DetectorBackend``
    converts them; ``raw=True`` returns an export's own output instead.
    Exports are checked first (``check_export_format``; ``task``: what the caller runs, ``None`` for either).
    """
    from utils.backend import DetectorBackend

    w = Path(str(weights))
    device = torch.device(device) if isinstance(device, str) else device
    if w.suffix == ".pt":
        return DetectorBackend(load_model(w, device, fuse=False), device=device, fp16=half, fuse=fuse,
                               verbose=verbose)
    check_export_format(w, task)
    try:
        return DetectorBackend(str(w), device=device, fp16=half, verbose=verbose, raw=raw)
    except ImportError as e:
        raise CheckpointError(f"{w}: the runtime for this format is not installed ({e})") from None
    except (TypeError, RuntimeError, StopIteration) as e:  # a corrupt, truncated or foreign export
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{w}: cannot be loaded ({first}); re-export it with export.py") from None


# ----------------------------------------------------------------------------------------------------
# Transfer learning
# ----------------------------------------------------------------------------------------------------

Layer = tuple[str, str, dict]  # (state_dict prefix, type name, {relative name: tensor})


def _layers(model: nn.Module | None, sd: dict[str, torch.Tensor]) -> list[Layer]:
    """Group a YOLOv5 state_dict by top-level layer (``model.<i>.``), with each layer's type when the model is known."""
    types_ = {}
    if model is not None and isinstance(getattr(model, "model", None), nn.Sequential):
        types_ = {f"model.{i}.": type(m).__name__ for i, m in enumerate(model.model)}
    groups: dict[str, dict] = {}
    for k, v in sd.items():
        parts = k.split(".")
        prefix = ".".join(parts[:2]) + "." if len(parts) > 2 and parts[0] == "model" else ""
        groups.setdefault(prefix, {})[k[len(prefix):]] = v
    return [(p, types_.get(p, ""), t) for p, t in groups.items()]


def _overlap(src: Layer, dst: Layer) -> int:
    """Tensors of ``dst`` that ``src`` holds under the same relative name and shape (0 for layers of another type)."""
    if src[1] and dst[1] and src[1] != dst[1]:
        return 0
    return sum(1 for k, v in dst[2].items() if k in src[2] and src[2][k].shape == v.shape)


def _align(src: list[Layer], dst: list[Layer]) -> list[tuple[int, int]]:
    """Order-preserving pairing of source and target layers that maximises the tensors transferred (an LCS).

    Inserting attention layers shifts indices (``model.7`` becomes ``model.8``...); walking both layer lists in order
    and skipping layers that have no counterpart pairs the backbone and head blocks up again.
    """
    n, m = len(src), len(dst)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            o = _overlap(src[i], dst[j])
            score[i][j] = max(score[i + 1][j], score[i][j + 1], score[i + 1][j + 1] + o if o else 0)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        o = _overlap(src[i], dst[j])
        if o and score[i][j] == score[i + 1][j + 1] + o:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif score[i][j] == score[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def _source(src: Any) -> tuple[nn.Module | None, dict[str, torch.Tensor], str]:
    """(model or None, state_dict, description) from a path, a checkpoint dict, a model or a state_dict."""
    if isinstance(src, (str, Path)):
        ckpt = load_checkpoint(src)
        m = checkpoint_model(ckpt)
        return m, m.state_dict(), str(src)
    if isinstance(src, nn.Module):
        return src, src.state_dict(), type(src).__name__
    if isinstance(src, dict) and any(isinstance(src.get(k), nn.Module) for k in ("ema", "model")):
        m = checkpoint_model(src)
        return m, m.state_dict(), "checkpoint"
    if isinstance(src, dict) and src and all(isinstance(v, torch.Tensor) for v in src.values()):
        return None, dict(src), "state_dict"
    raise CheckpointError(f"cannot transfer weights from {type(src).__name__}; {CHECKPOINT_HELP}")


def transfer_weights(model: nn.Module, src: Any, exclude: tuple[str, ...] = (),
                     verbose: bool = True) -> tuple[int, int]:
    """Copy every tensor of ``src`` whose (layer-remapped) name and shape match into ``model``.

    ``src``: a ``.pt`` path (ours or official), a loaded checkpoint dict, a model or a state_dict. Layers are paired in
    order by type and tensor shapes, so weights land even when attention layers shift the indices. Names containing
    any string of ``exclude`` (e.g. ``("anchors",)``) are left alone. Logs one line and returns
    ``(n_transferred, n_total)`` counted over ``model.state_dict()`` entries.
    """
    from ultralytics.utils import LOGGER

    src_model, src_sd, what = _source(src)
    dst_sd = model.state_dict()
    src_layers, dst_layers = _layers(src_model, src_sd), _layers(model, dst_sd)
    new, remapped = {}, 0
    for i, j in _align(src_layers, dst_layers):
        (sp, _, st), (dp, _, dt) = src_layers[i], dst_layers[j]
        for rel, v in dt.items():
            name = dp + rel
            if rel in st and st[rel].shape == v.shape and not any(x in name for x in exclude):
                new[name] = st[rel].to(v.dtype)
                remapped += sp != dp
    model.load_state_dict(new, strict=False)
    if isinstance(getattr(model, "model", None), nn.Sequential) and isinstance(model.model[-1], Detect):
        _reset_grids(model.model[-1])
    n, total = len(new), len(dst_sd)
    if verbose:
        att = sum(1 for k in dst_sd if _is_attention(model, k))
        LOGGER.info(f"Transferred {n}/{total} items from {what} ({remapped} under remapped layer indices); "
                    f"{total - n} not transferred ({att} in attention layers)")
    return n, total


def _is_attention(model: nn.Module, key: str) -> bool:
    """Whether a state_dict key belongs to an attention layer of ``model``."""
    parts = key.split(".")
    if len(parts) < 2 or parts[0] != "model" or not parts[1].isdigit():
        return False
    layer = model.model[int(parts[1])]
    return isinstance(layer, tuple(set(ATTENTION.values())))
