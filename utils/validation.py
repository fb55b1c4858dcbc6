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


STUDY_SIZES = tuple(range(256, 1536 + 128, 128))  # --task study: YOLOv5's image sizes, 256 to 1536 step 128


def load_ensemble(weights: list[str]) -> object:
    """Several ``.pt`` files as one ``models.experimental.Ensemble`` (YOLOv5's ``--weights a.pt b.pt``)."""
    from ultralytics.utils import LOGGER

    from models.experimental import Ensemble
    from utils.checkpoint import load_model

    exports = [w for w in weights if not str(w).endswith(".pt")]
    if exports:
        raise ValueError(f"--weights {' '.join(map(str, weights))}: an ensemble of several weights takes .pt "
                         f"checkpoints only, not {exports[0]}; run an export on its own")
    models = [load_model(w, device="cpu", fuse=False) for w in weights]
    try:
        ensemble = Ensemble(models)
    except ValueError as e:
        raise ValueError(f"--weights {' '.join(map(str, weights))}: {e}") from None
    LOGGER.info(f"Ensemble created with {[str(w) for w in weights]}")
    return ensemble


def validator_class() -> type:
    """The engine's validator (``utils.engine.YOLOv5Validator``) with val.py's YOLOv5 behaviours: the per-class table
    whenever there are fewer than 50 classes, and ``--save-hybrid``'s ground truth added to the predictions."""
    import torch
    from ultralytics.utils import LOGGER

    from utils.engine import YOLOv5Validator

    class ValValidator(YOLOv5Validator):
        save_hybrid = False

        def print_results(self) -> None:
            verbose = self.args.verbose
            self.args.verbose = verbose or (self.nc < 50 and not self.training)  # YOLOv5 prints classes below 50
            try:
                super().print_results()
            finally:
                self.args.verbose = verbose

        def update_metrics(self, preds: list[dict], batch: dict) -> None:
            if self.save_hybrid:  # the image's labels join its predictions at confidence 1 before NMS, as in YOLOv5
                preds = [self.hybrid(si, pred, batch) for si, pred in enumerate(preds)]
            super().update_metrics(preds, batch)

        def hybrid(self, si: int, pred: dict, batch: dict) -> dict:
            import torchvision

            gt = self._prepare_batch(si, batch)
            n = len(gt["cls"])
            if not n:
                return pred
            boxes = torch.cat((gt["bboxes"].to(pred["bboxes"]), pred["bboxes"]))
            conf = torch.cat((torch.ones(n).to(pred["conf"]), pred["conf"]))
            cls = torch.cat((gt["cls"].to(pred["cls"]), pred["cls"]))
            extra = torch.cat((pred["extra"].new_zeros((n, pred["extra"].shape[1])), pred["extra"]))
            groups = torch.zeros_like(cls) if self.args.single_cls or self.args.agnostic_nms else cls
            keep = torchvision.ops.batched_nms(boxes.float(), conf.float(), groups, self.args.iou)[:self.args.max_det]
            return {"bboxes": boxes[keep], "conf": conf[keep], "cls": cls[keep], "extra": extra[keep]}

    LOGGER.debug("val.py validator: per-class table below 50 classes, --save-hybrid")
    return ValValidator


def validate(data: str = "data/shapes.yaml", weights: str | list[str] = (), batch_size: int = 32, imgsz: int = 640,
             conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val",
             device: str = "", workers: int = 8, single_cls: bool = False, augment: bool = False,
             verbose: bool = False, save_txt: bool = False, save_hybrid: bool = False, save_conf: bool = False,
             save_json: bool = False, project: str | Path = ROOT / "runs" / "val", name: str = "exp",
             exist_ok: bool = False, half: bool = False, plots: bool = True, rect: bool = True,
             allow_data_scripts: bool = False, study_sizes: tuple[int, ...] = STUDY_SIZES) -> list[dict]:
    """Validate ``weights``, YOLOv5's way: several ``.pt`` files are one ensemble (``task`` val or test); with
    ``task="speed"`` each is benchmarked on its own, with ``task="study"`` each is validated at every size of
    ``study_sizes`` (the rows go to ``study_<data>_<weights>.txt`` and ``study.png`` in the run folder).

    Returns one metrics dict per validation (``metrics/mAP50(B)``, ``metrics/mAP50-95(B)``..., and ``speed``).
    ``allow_data_scripts``: let the data YAML's download script run (``--allow-data-scripts``)."""
    check_options(imgsz, batch_size, conf_thres, iou_thres, max_det, workers, device)
    from ultralytics.utils import LOGGER

    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import no_empty_run_dir
    from utils.datayaml import prepare_data
    from utils.engine import all_cores, increment_dir, resolve_data

    keep_freed_memory_on_cpu(device)
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if not weights:
        raise ValueError("--weights is required: a .pt checkpoint, or an exported .onnx/.torchscript/openvino model")
    from utils.weights import resolve_weights

    weights = [resolve_weights(w) for w in weights]  # URLs and official names are downloaded (utils/weights.py)
    if task in ("speed", "study"):  # YOLOv5's benchmarks: fp16 where a GPU runs them, no plots
        import torch

        plots, half = False, half or (torch.cuda.is_available() and str(device).lower() != "cpu")
        if task == "speed":  # deployment thresholds; a study keeps --conf-thres/--iou-thres (mAP needs 0.001)
            conf_thres, iou_thres, save_json = 0.25, 0.45, False
    if save_hybrid:
        save_txt = True
        LOGGER.warning("--save-hybrid: the labels files hold the ground truth merged with the predictions, so mAP is "
                       "computed from hybrid labels and is higher than the predictions' alone")
    split = "val" if task in ("speed", "study") else task
    data_stem = Path(str(data)).stem
    data = prepare_data(resolve_data(data), allow_scripts=allow_data_scripts, split=split,
                        labels=("val",) if split == "val" else ())  # an unlabelled test split is scored elsewhere
    validator_type = validator_class()

    def one(model_or_path: object, size: int, save_dir: Path) -> dict:
        args = {
            "task": "detect", "mode": "val", "data": data, "batch": batch_size, "imgsz": size,
            "conf": conf_thres, "iou": iou_thres, "max_det": max_det, "split": split,
            "device": device or None, "workers": workers, "single_cls": single_cls, "augment": augment,
            "verbose": verbose, "save_txt": save_txt, "save_conf": save_conf, "save_json": save_json,
            "save_dir": str(save_dir), "quantize": 16 if half else None, "plots": plots, "rect": rect,
        }
        validator = validator_type(args=args, save_dir=save_dir)
        validator.save_hybrid = save_hybrid
        if hasattr(model_or_path, "augment"):  # an Ensemble: the engine's backend passes no augment= to it
            model_or_path.augment = augment
        stats = validator(model=model_or_path)
        stats["speed"] = dict(validator.speed)
        return stats

    results = []
    if task == "study":
        for w in weights:
            save_dir = increment_dir(Path(project).resolve() / name, exist_ok)
            with no_empty_run_dir(save_dir), all_cores():
                rows = []
                for size in study_sizes:
                    LOGGER.info(f"\nstudy: {w} at --imgsz {size}")
                    stats = one(load_for_validation(w, device), size, save_dir)
                    rows.append(study_row(stats))
                    results.append({**stats, "imgsz": size})
                write_study(save_dir, data_stem, w, study_sizes, rows)
        return results
    groups = [[w] for w in weights] if task == "speed" or len(weights) == 1 else [weights]
    for group in groups:
        save_dir = increment_dir(Path(project).resolve() / name, exist_ok)  # created and locked (utils/rundir.py)
        with no_empty_run_dir(save_dir), all_cores():
            model = load_for_validation(group[0], device) if len(group) == 1 else load_ensemble(group)
            stats = one(model, imgsz, save_dir)
        if save_json:  # YOLOv5 names the file after the (first) weights: best_predictions.json
            json_file = save_dir / "predictions.json"
            if json_file.is_file():
                named = save_dir / f"{Path(str(group[0]).rstrip('/')).stem}_predictions.json"
                json_file.replace(named)
                LOGGER.info(f"Predictions saved to {named}")
        results.append(stats)
    return results


def study_row(stats: dict) -> list[float]:
    """One row of a study file, YOLOv5's columns: P, R, mAP@.5, mAP@.5:.95, the three validation losses (0 outside
    training), then pre-process, inference and NMS milliseconds per image."""
    keys = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
    speed = stats.get("speed", {})
    return [float(stats.get(k, 0.0)) for k in keys] + [0.0, 0.0, 0.0] + [
        float(speed.get(k, 0.0)) for k in ("preprocess", "inference", "postprocess")]


def write_study(save_dir: Path, data_stem: str, weights: str, sizes: tuple[int, ...], rows: list[list[float]]) -> Path:
    """``study_<data>_<weights>.txt`` (one row per image size, YOLOv5's ``%10.4g`` columns), ``study.zip`` of the study
    files and ``study.png`` (mAP@.5:.95 against image size and against inference time)."""
    import zipfile

    import numpy as np
    from ultralytics.utils import LOGGER

    f = save_dir / f"study_{data_stem}_{Path(str(weights).rstrip('/')).stem}.txt"
    np.savetxt(f, np.asarray(rows, dtype=float), fmt="%10.4g")
    with zipfile.ZipFile(save_dir / "study.zip", "w") as z:
        for txt in sorted(save_dir.glob("study_*.txt")):
            z.write(txt, txt.name)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        y = np.asarray(rows, dtype=float).reshape(len(rows), -1)
        fig, ax = plt.subplots(1, 2, figsize=(10, 4), tight_layout=True)
        ax[0].plot(sizes, y[:, 3] * 100, ".-", label=f.stem.replace("study_", ""))
        ax[0].set(xlabel="image size (pixels)", ylabel="mAP@.5:.95 (%)")
        ax[1].plot(y[:, 8], y[:, 3] * 100, ".-", label=f.stem.replace("study_", ""))
        ax[1].set(xlabel="inference (ms/img)", ylabel="mAP@.5:.95 (%)")
        for a in ax:
            a.grid(alpha=0.2)
            a.legend(loc="lower right")
        fig.savefig(save_dir / "study.png", dpi=200)
        plt.close(fig)
    except ImportError:
        pass
    LOGGER.info(f"Study results saved to {f} and {save_dir / 'study.png'}")
    return f
