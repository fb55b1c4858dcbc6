"""Insert attention layers into a YOLOv5 model YAML, shifting every later layer index as a hand edit would.

    python models/yolo.py --cfg yolov5s.yaml --attention SimAM              # after Table 2's sites (P4, P5 C3s)
    python models/yolo.py --cfg yolov5s.yaml --attention SimAM@6,8 --save-yaml yolov5s-simam.yaml
    python train.py --cfg yolov5s.yaml --attention CBAM ...

A layer inserted after layer ``s`` takes its place as the output later layers read: a ``from`` index naming ``s``
names the attention layer, so ``insert_attention(yolov5s, "EMA")`` is exactly ``models/yolov5s-ema.yaml``.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Sequence

import yaml

from models.attention import ATTENTION


def attention_name(name: str) -> str:
    """The registry's spelling of ``name`` (case-insensitive), or a ValueError listing the known modules."""
    for key in ATTENTION:
        if key.lower() == name.lower():
            return key
    raise ValueError(f"--attention: unknown attention module '{name}'; known modules: {', '.join(sorted(ATTENTION))}")


def parse_attention_spec(spec: str) -> tuple[str, list[int] | None]:
    """``"SimAM"`` -> ``("SimAM", None)`` (Table 2's sites); ``"SimAM@6,8"`` -> ``("SimAM", [6, 8])``."""
    name, at, where = spec.partition("@")
    if not at:
        return attention_name(name.strip()), None
    try:
        layers = [int(s) for s in where.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--attention {spec}: layers after '@' must be integers separated by commas, "
                         f"e.g. {name}@6,8") from None
    if not layers:
        raise ValueError(f"--attention {spec}: name at least one layer after '@', e.g. {name}@6,8")
    return attention_name(name.strip()), layers


def table2_sites(d: dict) -> list[int]:
    """Where Table 2 puts attention: after the last two C3 blocks of the backbone (P4/16 and P5/32 in YOLOv5)."""
    c3 = [i for i, row in enumerate(d["backbone"]) if row[2] == "C3"]
    if len(c3) < 2:
        raise ValueError("--attention: the backbone has fewer than two C3 blocks, so Table 2's sites (the P4 and P5 "
                         "C3s) are undefined; name the layers instead, e.g. --attention SimAM@6,8")
    return c3[-2:]


def insert_attention(d: dict, module: str, after: Sequence[int] | None = None, args: list | None = None) -> dict:
    """A copy of model dict ``d`` with ``[-1, 1, module, args]`` after each layer in ``after`` (default: Table 2's).

    ``after`` holds indices of ``d``'s own layers. Later absolute ``from`` indices shift by the number of layers
    inserted at or before the layer they name; relative ones (``-1``...) keep pointing at the same layer.
    """
    module = attention_name(module)
    rows = list(d["backbone"]) + list(d["head"])
    sites = sorted(set(table2_sites(d) if after is None else after))
    bad = [s for s in sites if not 0 <= s < len(rows) - 1]
    if bad:
        raise ValueError(f"--attention: cannot insert after layer(s) {', '.join(map(str, bad))}; this model's layers "
                         f"are 0..{len(rows) - 1}, and nothing may follow the last (Detect)")

    def new_index(j: int) -> int:  # a reference to old layer j now names this layer (j's attention, if any)
        return j + sum(s <= j for s in sites)

    def new_position(i: int) -> int:  # where old layer i now sits
        return i + sum(s < i for s in sites)

    def remap(x: int, i: int) -> int:
        if x >= 0:
            return new_index(x)
        return new_index(i + x) - new_position(i) if x != -1 else -1

    out = []
    for i, (f, n, m, a) in enumerate(rows):
        out.append([remap(f, i) if isinstance(f, int) else [remap(x, i) for x in f], n, m, deepcopy(a)])
        if i in sites:
            out.append([-1, 1, module, list(args or [])])
    n_backbone = new_position(len(d["backbone"]))
    return {**deepcopy(d), "backbone": out[:n_backbone], "head": out[n_backbone:]}


def dump_model_yaml(d: dict, comment: str = "") -> str:
    """A model dict as YOLOv5-style YAML: one flow-style ``[from, number, module, args]`` row per line, indexed."""
    def flow(v) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10 ** 6).removesuffix("\n...\n").strip()

    lines = [f"# {c}" for c in comment.splitlines()] + ([""] if comment else [])
    index = 0
    for k, v in d.items():
        if k == "yaml_file":
            continue
        if not isinstance(v, list):
            lines.append(f"{k}: {flow(v)}")
            continue
        lines.append(f"{k}:")
        for row in v:
            lines.append(f"  - {flow(row)}" + (f"  # {index}" if k in ("backbone", "head") else ""))
            index += k in ("backbone", "head")
    return "\n".join(lines) + "\n"


def attention_cfg(cfg: str | Path, spec: str) -> dict:
    """The model dict of YAML ``cfg`` with the attention layers of ``spec`` (``Name`` or ``Name@i,j``) inserted."""
    from models.yolo import load_model_yaml, resolve_cfg

    path = resolve_cfg(cfg)
    name, after = parse_attention_spec(spec)
    return {**insert_attention(load_model_yaml(path), name, after), "yaml_file": str(path)}


def write_attention_cfg(cfg: str | Path, spec: str, out: str | Path) -> Path:
    """Write ``attention_cfg(cfg, spec)`` to ``out`` (a file, or a folder that gets ``<cfg>-<name>.yaml``)."""
    d = attention_cfg(cfg, spec)
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"{Path(d['yaml_file']).stem}-{parse_attention_spec(spec)[0].lower()}.yaml"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_model_yaml(d, f"{Path(d['yaml_file']).name} with --attention {spec}"), encoding="utf-8")
    return out
