"""Run a trained detector on images, videos, folders, globs, webcams and streams, with YOLOv5's command line.

Usage - sources:
    python detect.py --weights yolov5s-ema.pt --source 0                               # webcam
                                                       img.jpg                         # image
                                                       vid.mp4                         # video
                                                       path/                           # directory
                                                       'path/*.jpg'                    # glob
                                                       list.txt                        # list of images/videos
                                                       list.streams                    # list of streams
                                                       'rtsp://example.com/media.mp4'  # RTSP, RTMP, HTTP stream

Usage - formats:
    python detect.py --weights best.pt                 # PyTorch (ours or an official YOLOv5 checkpoint)
                               best.torchscript        # TorchScript
                               best.onnx               # ONNX Runtime
                               best_openvino_model/    # OpenVINO

Results go to runs/detect/exp, exp2, ...: annotated images and videos, labels/*.txt (--save-txt), crops/<class>/
(--save-crop), feature maps of every layer (--visualize) and attention heat maps of every attention module
(--attention, also written by --visualize).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import offline  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

offline.configure()

STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://")


class Timer:
    """Accumulating wall-clock timer (synchronises CUDA so GPU work is counted where it happens)."""

    def __init__(self, device: torch.device | None = None):
        self.t, self.dt, self.cuda = 0.0, 0.0, device is not None and device.type == "cuda"

    def __enter__(self) -> "Timer":
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.dt = time.perf_counter() - self.start
        self.t += self.dt

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def log(msg: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(msg)


def is_stream(source: str) -> bool:
    """Webcam index, a ``.streams`` list, or a network stream URL that is not a single image/video file."""
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS

    s = source.lower()
    is_file_url = s.startswith(("http://", "https://")) and s.rsplit(".", 1)[-1] in (IMG_FORMATS | VID_FORMATS)
    return source.isnumeric() or s.endswith(".streams") or (s.startswith(STREAM_PREFIXES) and not is_file_url)


def check_source(source: str) -> None:
    """A local source must exist (a glob must match); say which one is missing instead of failing later."""
    if is_stream(source) or source.lower().startswith(("http://", "https://")):
        return
    import glob

    if "*" in source:
        if not glob.glob(source, recursive=True):
            raise FileNotFoundError(f"--source {source}: the pattern matches no files")
    elif not Path(source).exists():
        raise FileNotFoundError(f"--source {source}: no such file or directory")


def open_source(source: str, vid_stride: int = 1):
    """An Ultralytics loader for ``source``; each item is ``(paths, images BGR, info strings)``."""
    from ultralytics.data.build import load_inference_source

    check_source(source)
    try:
        return load_inference_source(source, batch=1, vid_stride=vid_stride)
    except ConnectionError as e:  # a stream or webcam that cannot be opened
        detail = str(e).split("... ", 1)[-1]  # drop the loader's "1/1: <source>... " prefix
        raise ValueError(f"--source {source}: {detail} (check that the camera is connected or that the stream URL "
                         f"is reachable)") from None


def preprocess(images: list[np.ndarray], imgsz: list[int], stride: int, auto: bool, device: torch.device,
               half: bool) -> torch.Tensor:
    """Letterbox BGR images to ``imgsz`` (the minimum stride-multiple rectangle when ``auto``); an RGB float batch."""
    from ultralytics.data.augment import LetterBox

    same = len({im.shape for im in images}) == 1
    letterbox = LetterBox(imgsz, auto=auto and same, stride=stride)
    x = np.stack([letterbox(image=im) for im in images])
    x = np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))  # BGR to RGB, BHWC to BCHW
    x = torch.from_numpy(x).to(device)
    return (x.half() if half else x.float()) / 255


def class_counts(det: torch.Tensor, names: dict[int, str]) -> str:
    """``'2 cars, 1 bus, '`` for a set of detections (YOLOv5's log wording)."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += f"{n} {names[int(c)]}{'s' * (n > 1)}, "
    return s


def write_labels(file: Path, det: torch.Tensor, shape0: tuple[int, ...], save_conf: bool) -> None:
    """Append YOLO-format rows ``cls x y w h [conf]`` (normalised xywh) for each detection."""
    from ultralytics.utils.ops import xyxy2xywh

    gn = torch.tensor(shape0)[[1, 0, 1, 0]]
    with open(file, "a", encoding="utf-8") as f:
        for *xyxy, conf, cls in det.tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
            line = (int(cls), *xywh, conf) if save_conf else (int(cls), *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


class VideoSink:
    """One ``cv2.VideoWriter`` per output path; a new path closes the previous writer (as in YOLOv5)."""

    def __init__(self):
        self.writers: dict[int, tuple[str, cv2.VideoWriter]] = {}

    def write(self, slot: int, path: Path, frame: np.ndarray, fps: float) -> Path:
        path = path.with_suffix(".mp4")
        current = self.writers.get(slot)
        if current is None or current[0] != str(path):
            if current is not None:
                current[1].release()
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps and fps > 0 else 30, (w, h))
            self.writers[slot] = (str(path), writer)
        self.writers[slot][1].write(frame)
        return path

    def close(self) -> None:
        for _, w in self.writers.values():
            w.release()
        self.writers = {}


def load_detector(weights: str, device: torch.device, half: bool, verbose: bool = True):
    """``AutoBackend`` for any format; ``.pt`` files (ours or official YOLOv5) go through our safe checkpoint loader."""
    from utils.checkpoint import load_backend

    return load_backend(weights, device=device, half=half, fuse=True, verbose=verbose)


@torch.no_grad()
def run(
    weights: str = "yolov5s.pt",
    source: str = "data/images",
    imgsz: list[int] | tuple[int, ...] = (640, 640),
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
    device: str = "",
    view_img: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_crop: bool = False,
    nosave: bool = False,
    classes: list[int] | None = None,
    agnostic_nms: bool = False,
    augment: bool = False,
    visualize: bool = False,
    attention: bool = False,
    project: str | Path = ROOT / "runs" / "detect",
    name: str = "exp",
    exist_ok: bool = False,
    line_thickness: int = 3,
    hide_labels: bool = False,
    hide_conf: bool = False,
    half: bool = False,
    vid_stride: int = 1,
) -> Path:
    """Detect objects in ``source`` and save the results; returns the run directory (``runs/detect/exp*``)."""
    from ultralytics.utils.checks import check_imgsz, check_imshow
    from ultralytics.utils.files import increment_path
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes
    from ultralytics.utils.plotting import Annotator, colors, save_one_box
    from ultralytics.utils.torch_utils import select_device

    from utils.allocator import keep_freed_memory_on_cpu
    from utils.engine import all_cores
    from utils.visualize import AttentionRecorder, FeatureRecorder, save_attention_maps, save_feature_maps

    source = str(source)
    check_source(source)
    webcam = is_stream(source)
    save_img = not nosave
    # Model
    with all_cores():
        dev = select_device(device, verbose=False)
    keep_freed_memory_on_cpu(dev.type)
    backend = load_detector(weights, dev, half)
    stride, names = int(backend.stride), backend.names
    pt = backend.format == "pt"
    imgsz = list(imgsz) * 2 if len(imgsz) == 1 else list(imgsz)
    export_hw = getattr(backend, "imgsz", None)
    dynamic = bool(backend.metadata.get("dynamic")) if not pt else True
    if not pt and not dynamic and export_hw and list(export_hw) != imgsz:
        log(f"WARNING ⚠️ {weights} was exported for --imgsz {list(export_hw)}; using that instead of {imgsz}")
        imgsz = list(export_hw)
    imgsz = check_imgsz(imgsz, stride=stride, min_dim=2)
    fp16 = bool(getattr(backend, "fp16", False))
    model = backend.model if pt else None
    want_attention = attention or visualize
    att_rec = feat_rec = None
    if (want_attention or visualize) and not pt:
        log("WARNING ⚠️ --attention/--visualize need .pt weights (forward hooks on the PyTorch model); skipped")
    elif pt:
        att_rec = AttentionRecorder(model) if want_attention else None
        feat_rec = FeatureRecorder(model) if visualize else None
        if attention and att_rec is not None and not att_rec.handles:
            log("WARNING ⚠️ --attention: this model has no attention module that gates its input (self-attention "
                "and branch-mixing modules have no heat map); no heat maps will be written")
    view_img = view_img and check_imshow(warn=True)

    # Data
    dataset = open_source(source, vid_stride=vid_stride)
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok, sep="")
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    sink = VideoSink()
    seen, windows, dt = 0, [], (Timer(dev), Timer(dev), Timer(dev))
    crops_written, attention_files = 0, 0
    try:
        for paths, im0s, infos in dataset:
            with dt[0]:
                im = preprocess(im0s, imgsz, stride, auto=pt or dynamic, device=dev, half=fp16)
            for rec in (att_rec, feat_rec):
                if rec is not None:
                    rec.start()
            with dt[1]:
                y = backend(im, augment=augment) if pt else backend(im)
                y = y[0] if isinstance(y, (list, tuple)) else y
            with dt[2]:
                preds = non_max_suppression(y, conf_thres, iou_thres, classes, agnostic_nms, max_det=max_det)

            for i, det in enumerate(preds):
                seen += 1
                p, im0 = Path(paths[i]), im0s[i].copy()
                mode = getattr(dataset, "mode", "image")
                frame = dataset.count if webcam else getattr(dataset, "frame", 0)
                s = f"{i}: " if webcam else infos[i]
                stem = p.stem if mode == "image" else f"{p.stem}_{frame}"
                s += "%gx%g " % tuple(im.shape[2:])
                det[:, :4] = scale_boxes(im.shape[2:], det[:, :4], im0.shape).round()
                if len(det):
                    s += class_counts(det, names)
                if save_txt and len(det):
                    write_labels(save_dir / "labels" / f"{stem}.txt", det, im0.shape, save_conf)
                imc = im0.copy() if save_crop else im0
                annotator = Annotator(im0, line_width=line_thickness, example=str(names))
                for *xyxy, conf, cls in reversed(det.tolist()):
                    c = int(cls)
                    if save_img or view_img:
                        label = None if hide_labels else (names[c] if hide_conf else f"{names[c]} {conf:.2f}")
                        annotator.box_label(xyxy, label or "", color=colors(c, True))
                    if save_crop:
                        save_one_box(torch.tensor(xyxy), imc, file=save_dir / "crops" / names[c] / f"{p.stem}.jpg",
                                     BGR=True)
                        crops_written += 1
                if att_rec is not None and att_rec.records:
                    attention_files += len(save_attention_maps(att_rec.records, i, tuple(im.shape[2:]), im0s[i],
                                                               save_dir / "attention", stem))
                if feat_rec is not None and feat_rec.records:
                    save_feature_maps(feat_rec.records, i, save_dir / "features" / stem)
                im0 = annotator.result()
                if view_img:
                    if str(p) not in windows:
                        windows.append(str(p))
                        cv2.namedWindow(str(p), cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
                        cv2.resizeWindow(str(p), im0.shape[1], im0.shape[0])
                    cv2.imshow(str(p), im0)
                    cv2.waitKey(1)
                if save_img:
                    if mode == "image":
                        cv2.imwrite(str(save_dir / p.name), im0)
                    else:
                        fps = getattr(dataset, "fps", 30)
                        fps = fps[i] if isinstance(fps, list) else fps  # streams keep one rate per source
                        sink.write(i, save_dir / p.name, im0, fps)
                log(f"{s}{'' if len(det) else '(no detections), '}{dt[1].dt * 1e3:.1f}ms")
    finally:
        sink.close()
        for rec in (att_rec, feat_rec):
            if rec is not None:
                rec.remove()
        if hasattr(dataset, "close"):
            dataset.close()
        if windows:
            cv2.destroyAllWindows()

    if seen == 0:
        if not any(f.is_file() for f in save_dir.rglob("*")):
            shutil.rmtree(save_dir, ignore_errors=True)  # leave no empty run folder behind
        raise ValueError(f"--source {source}: no image or video frame could be read (unreadable or empty files)")
    t = tuple(x.t / seen * 1e3 for x in dt)
    log(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % t)
    extra = ""
    if save_txt:
        extra += f"\n{len(list((save_dir / 'labels').glob('*.txt')))} labels saved to {save_dir / 'labels'}"
    if crops_written:
        extra += f"\n{crops_written} crops saved to {save_dir / 'crops'}"
    if attention_files:
        extra += f"\n{attention_files} attention maps saved to {save_dir / 'attention'}"
    if feat_rec is not None:
        extra += f"\nfeature maps saved to {save_dir / 'features'}"
    if save_txt or save_img or crops_written or attention_files:
        log(f"Results saved to {save_dir}{extra}")
    return save_dir


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default="yolov5s.pt",
                   help="model path: .pt, .torchscript, .onnx, *_openvino_model/")
    p.add_argument("--source", type=str, default=str(ROOT / "data" / "images"),
                   help="file/dir/glob/URL/.txt/.streams, 0 for webcam")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--visualize", action="store_true", help="save feature maps of every layer (and attention maps)")
    p.add_argument("--attention", action="store_true", help="save attention heat maps of every attention module")
    p.add_argument("--project", default=str(ROOT / "runs" / "detect"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    p.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    from utils.cli import user_errors

    opt = parse_opt(argv)
    log("detect: " + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    with user_errors():
        try:
            return run(**vars(opt))
        except ConnectionError as e:  # stream/webcam failures: a clear message, not a stack trace
            raise ValueError(f"--source {opt.source}: {e}") from None


if __name__ == "__main__":
    main()
