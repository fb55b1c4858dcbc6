"""Validation: the mAP of a checkpoint or an export on a dataset split with the engine's validator (``val.py``'s work).

``validate`` is called by ``val.py`` and by the benchmark's mAP columns (``bench/deploy.py``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_for_validation(weights: str, device: str = "") -> object:
    """A ``.pt`` (ours or an official YOLOv5 checkpoint) becomes our model; an export stays a path for the engine."""
    from utils.checkpoint import check_export_format, load_model

    if str(weights).endswith(".pt"):
        return load_model(weights, device="cpu", fuse=False)
    if not Path(weights).exists():
        raise FileNotFoundError(f"--weights {weights}: file or folder not found")
    return str(check_export_format(weights))


def check_options(imgsz: int, batch_size: int, conf_thres: float, iou_thres: float, max_det: int,
                  workers: int, device: str = "") -> None:
    """Numbers out of range fail here, before anything is loaded or written."""
    from utils.cli import check_device, check_image_size, check_number

    check_image_size("--imgsz", imgsz, max_values=1)
    check_device(device)
    check_number("--batch-size", batch_size, 1)
    check_number("--conf-thres", conf_thres, 0, 1)
    check_number("--iou-thres", iou_thres, 0, 1)
    check_number("--max-det", max_det, 1)
    check_number("--workers", workers, 0)


def validate(data: str = "data/shapes.yaml", weights: str | list[str] = (), batch_size: int = 32, imgsz: int = 640,
             conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val",
             device: str = "", workers: int = 8, single_cls: bool = False, augment: bool = False,
             verbose: bool = False, save_txt: bool = False, save_conf: bool = False, save_json: bool = False,
             project: str | Path = ROOT / "runs" / "val", name: str = "exp", exist_ok: bool = False,
             half: bool = False, plots: bool = True, rect: bool = True,
             allow_data_scripts: bool = False) -> list[dict]:
    """Validate each of ``weights``; returns one metrics dict per model (``metrics/mAP50(B)``,
    ``metrics/mAP50-95(B)``...). ``allow_data_scripts``: let the data YAML's download script run
    (``--allow-data-scripts``)."""
    check_options(imgsz, batch_size, conf_thres, iou_thres, max_det, workers, device)
    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import no_empty_run_dir
    from utils.datayaml import prepare_data
    from utils.engine import YOLOv5Validator, all_cores, increment_dir, resolve_data

    keep_freed_memory_on_cpu(device)
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if not weights:
        raise ValueError("--weights is required: a .pt checkpoint, or an exported .onnx/.torchscript/openvino model")
    from utils.weights import resolve_weights

    weights = [resolve_weights(w) for w in weights]  # URLs and official names are downloaded (utils/weights.py)
    if task == "speed":  # YOLOv5's speed benchmark settings
        conf_thres, iou_thres, save_json, plots = 0.25, 0.45, False, False
    split = "val" if task == "speed" else task
    data = prepare_data(resolve_data(data), allow_scripts=allow_data_scripts, split=split,
                        labels=("val",) if split == "val" else ())  # an unlabelled test split is scored elsewhere
    results = []
    for w in weights:
        save_dir = increment_dir(Path(project).resolve() / name, exist_ok)  # created and locked (utils/rundir.py)
        args = {
            "task": "detect", "mode": "val", "data": data, "batch": batch_size, "imgsz": imgsz,
            "conf": conf_thres, "iou": iou_thres, "max_det": max_det, "split": split,
            "device": device or None, "workers": workers, "single_cls": single_cls, "augment": augment,
            "verbose": verbose, "save_txt": save_txt, "save_conf": save_conf, "save_json": save_json,
            "save_dir": str(save_dir), "quantize": 16 if half else None, "plots": plots, "rect": rect,
        }
        with no_empty_run_dir(save_dir), all_cores():
            validator = YOLOv5Validator(args=args, save_dir=save_dir)
            stats = validator(model=load_for_validation(w, device))
        stats["speed"] = dict(validator.speed)
        results.append(stats)
    return results
