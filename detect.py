"""Run a trained detector on images, videos, folders, globs, webcams and streams, with YOLOv5's command line.

Usage - sources:
    python detect.py --weights yolov5s-ema.pt --source 0                               # webcam
                                                       img.jpg                         # image
                                                       vid.mp4                         # video
                                                       path/                           # directory
                                                       'path/*.jpg'                    # glob (also ? and [...])
                                                       screen                          # screenshot (needs mss)
                                                       list.txt                        # list of images/videos
                                                       list.streams                    # list of streams
                                                       'rtsp://example.com/media.mp4'  # RTSP, RTMP, HTTP stream

Usage - formats:
    python detect.py --weights best.pt                 # PyTorch (ours or an official YOLOv5 checkpoint)
                               best.torchscript        # TorchScript
                               best.onnx               # ONNX Runtime
                               best_openvino_model/    # OpenVINO
                               a.pt b.pt               # an ensemble of several .pt models

Results go to runs/detect/exp, exp2, ...: annotated images and videos, labels/*.txt (--save-txt), predictions.csv
(--save-csv), crops/<class>/
(--save-crop), feature maps of every layer (--visualize) and attention heat maps of every attention module
(--attention, also written by --visualize).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from utils import offline
from utils.outputs import OutputNames, shown, write_image

ROOT = Path(__file__).resolve().parent
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

    from utils.outputs import shown

    LOGGER.info(shown(msg))  # file names that are not valid UTF-8 shown with \xff escapes


def is_stream(source: str) -> bool:
    """Webcam index, a ``.streams`` list, or a network stream URL that is not a single image/video file."""
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS

    s = source.lower()
    is_file_url = s.startswith(("http://", "https://")) and s.rsplit(".", 1)[-1] in (IMG_FORMATS | VID_FORMATS)
    return source.isnumeric() or s.endswith(".streams") or (s.startswith(STREAM_PREFIXES) and not is_file_url)


def accepted_sources() -> str:
    """What ``--source`` takes, for the end of an error message."""
    return ("--source takes an image or video file (.jpg, .png, .mp4, ...), a folder or glob of them, a .txt or .csv "
            "file listing them one per line, a .streams file, a URL or a webcam index")


def is_media(file: str) -> bool:
    """Whether the engine's loader reads ``file`` (by its suffix, as the loader decides)."""
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS

    return file.rpartition(".")[-1].lower() in IMG_FORMATS | VID_FORMATS


def is_glob(entry: str) -> bool:
    """A pattern with ``*``, ``?`` or ``[...]`` (as in YOLOv5), unless a file or folder has that very name."""
    import os

    return any(c in entry for c in "*?[") and not os.path.exists(entry)


def source_files(entry: str) -> list[str] | None:
    """The files a file, folder or glob names (as the engine's loader expands it), None when it names nothing."""
    import glob
    import os

    if is_glob(entry):
        return sorted(glob.glob(entry, recursive=True)) or None
    if os.path.isdir(entry):
        return sorted(glob.glob(os.path.join(glob.escape(entry), "*.*")))
    return [entry] if os.path.isfile(entry) else None


def no_media(source: str, entry: str, files: list[str]) -> str:
    """Why ``entry`` (an existing file, folder or matching glob) gives the loader nothing to read."""
    import os

    others = f", only {len(files)} other file{'s' * (len(files) > 1)}" if files else ""
    if is_glob(entry):
        return f"{source}: the pattern matches no image or video file{others}; {accepted_sources()}"
    if os.path.isdir(entry):
        return f"{source}: the folder holds no image or video file{others}; {accepted_sources()}"
    return f"{source}: not an image or video file; {accepted_sources()}"


def read_source_list(listing: Path) -> list[str]:
    """The entries of a ``.txt``/``.csv`` source list as absolute paths (relative ones are tried against the current
    folder, then the list's folder, as the engine does); a line that names nothing readable is an error naming the
    list, the line and the path, or a warning when other lines can be read."""
    import csv
    import os

    raw = listing.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    lines = raw.decode("utf-8", "surrogateescape").splitlines()  # names that are not UTF-8 stay the files' names
    if listing.suffix.lower() == ".csv":
        rows = [(n, cell) for n, row in enumerate(csv.reader(lines), 1) for cell in row]
        rows = rows[1:] if rows[:1] == [(1, "source")] else rows  # an optional header row
    else:
        rows = list(enumerate(lines, 1))
    rows = [(n, e.strip()) for n, e in rows if e.strip()]
    if not rows:
        raise ValueError(f"--source {listing}: the list is empty; {accepted_sources()}")
    entries, problems = [], []
    for n, entry in rows:
        where = f"--source {listing}, line {n}: {entry}"
        full = os.path.abspath(entry)
        if source_files(full) is None and not os.path.isabs(entry):
            full = os.path.abspath(listing.parent / entry)
        files = source_files(full)
        if files is None:
            problems.append(f"{where}: {'matches no files' if is_glob(entry) else 'no such file or directory'} "
                            f"(paths in a list are absolute, or relative to the current folder or the list's folder)")
        elif not any(is_media(f) for f in files):
            problems.append(no_media(where, full, files))
        elif is_glob(full) and "*" not in full:  # the engine's loader expands * only: give it the files
            entries.extend(f for f in files if is_media(f))
        else:
            entries.append(full)
    if not entries:
        raise FileNotFoundError(problems[0])
    for problem in problems:
        log(f"WARNING ⚠️ {problem.split('; --source takes')[0]}; skipped")
    return entries


def check_source(source: str) -> list[str] | None:
    """A local source must name something the loader can read; say what is wrong instead of failing later.

    Returns the entries of a ``.txt``/``.csv`` list (absolute paths) or the files a ``?``/``[...]`` glob matches (the
    engine's loader expands ``*`` only), else None.
    """
    if is_screen(source):
        check_screen(source)
        return None
    if is_stream(source) or source.lower().startswith(("http://", "https://")):
        return None
    path = Path(source)
    if path.suffix.lower() in {".txt", ".csv"} and path.is_file():
        return read_source_list(path)
    files = source_files(source)
    if files is None:
        raise FileNotFoundError(f"--source {source}: "
                                f"{'the pattern matches no files' if is_glob(source) else 'no such file or directory'}")
    if not any(is_media(f) for f in files):
        raise FileNotFoundError(no_media(f"--source {source}", source, files))
    if is_glob(source) and "*" not in source:
        return [f for f in files if is_media(f)]
    return None


def is_screen(source: str) -> bool:
    """``screen``, or ``screen N [left top width height]``: YOLOv5's screenshot source."""
    import os

    return source.lower().split()[:1] == ["screen"] and not os.path.exists(source)


def check_screen(source: str) -> None:
    """Screen capture needs the ``mss`` package and a display; say which is missing in one line."""
    try:
        import mss
    except ImportError:
        raise ValueError(f"--source {source}: capturing the screen needs the mss package, which is not installed "
                         f"(pip install mss)") from None
    try:
        with mss.mss() as sct:
            n = len(sct.monitors) - 1
    except Exception as e:  # no X server / display
        raise ValueError(f"--source {source}: no display to capture ({str(e).strip() or type(e).__name__})") from None
    params = source.split()[1:]
    if params and (not params[0].isdigit() or not 0 <= int(params[0]) <= n or len(params) not in (1, 5)):
        raise ValueError(f"--source {source}: give 'screen', 'screen N' or 'screen N left top width height' with N "
                         f"in 0..{n}")


def file_loader(source: str | list[str], vid_stride: int):
    """The engine's loader of image and video files, opening videos whose names OpenCV cannot take through a link
    with a safe name (``VideoCapture`` crashes on a path that is not valid UTF-8)."""
    from ultralytics.data.loaders import LoadImagesAndVideos, SourceTypes

    from utils.outputs import video_safe

    dataset = video_safe(LoadImagesAndVideos)(source, batch=1, vid_stride=vid_stride)
    dataset.source_type = SourceTypes()
    return dataset


def open_source(source: str, vid_stride: int = 1, entries: list[str] | None = None):
    """An Ultralytics loader for ``source`` (``entries``: a list source's, from ``check_source``); each item is
    ``(paths, images BGR, info strings)``."""
    from ultralytics.data.build import load_inference_source

    if is_screen(source):
        from ultralytics.data.loaders import LoadScreenshots

        return LoadScreenshots(source)
    if not (is_stream(source) or source.lower().startswith(("http://", "https://"))):
        return file_loader(source if entries is None else entries, vid_stride)
    try:
        return load_inference_source(source, batch=1, vid_stride=vid_stride)
    except ConnectionError as e:  # a stream or webcam that cannot be opened
        detail = str(e).split("... ", 1)[-1]  # drop the loader's "1/1: <source>... " prefix
        raise ValueError(f"--source {source}: {detail} (check that the camera is connected or that the stream URL "
                         f"is reachable)") from None


def check_options(imgsz: list[int] | tuple[int, ...], conf_thres: float, iou_thres: float, max_det: int,
                  vid_stride: int, line_thickness: int, classes: list[int] | None) -> None:
    """Numbers out of range fail here, before anything is loaded or written."""
    from utils.cli import check_image_size, check_number

    check_image_size("--imgsz", imgsz)
    check_number("--conf-thres", conf_thres, 0, 1)
    check_number("--iou-thres", iou_thres, 0, 1)
    check_number("--max-det", max_det, 1)
    check_number("--vid-stride", vid_stride, 1)
    check_number("--line-thickness", line_thickness, 1)
    for c in classes or ():
        check_number("--classes", c, 0)


def preprocess(images: list[np.ndarray], imgsz: list[int], stride: int, auto: bool, device: torch.device,
               half: bool) -> torch.Tensor:
    """Letterbox BGR images to ``imgsz`` (the minimum stride-multiple rectangle when ``auto``); an RGB float batch."""
    from utils.images import letterbox

    x = torch.from_numpy(letterbox(images, imgsz, stride, auto)).to(device)
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
            from utils.outputs import cv2_writable

            if current is not None:
                current[1].release()
            h, w = frame.shape[:2]
            rate = fps if fps and fps > 0 else 30
            writer = cv2.VideoWriter(cv2_writable(path), cv2.VideoWriter_fourcc(*"mp4v"), rate, (w, h))
            self.writers[slot] = (str(path), writer)
        self.writers[slot][1].write(frame)
        return path

    def close(self) -> None:
        for _, w in self.writers.values():
            w.release()
        self.writers = {}


def load_detector(weights: str | list[str], device: torch.device, half: bool, verbose: bool = True):
    """``AutoBackend`` for any format; ``.pt`` files (ours or official YOLOv5) go through our safe checkpoint loader.
    Several ``.pt`` files are one ``models.experimental.Ensemble``, as in YOLOv5."""
    if isinstance(weights, (list, tuple)) and len(weights) > 1:
        from ultralytics.nn.autobackend import AutoBackend

        from utils.validation import load_ensemble

        return AutoBackend(load_ensemble(list(weights)), device=device, fp16=half, fuse=True, verbose=verbose)
    from utils.checkpoint import load_backend

    w = weights[0] if isinstance(weights, (list, tuple)) else weights
    return load_backend(w, device=device, half=half, fuse=True, verbose=verbose)


def names_for(names: dict[int, str], data: str) -> dict[int, str]:
    """``--data``: the data YAML's class names stand in for an export's placeholder names (``class0``...), as in
    YOLOv5; weights that carry their own names keep them."""
    import yaml

    from utils.engine import resolve_data

    file = Path(resolve_data(data))
    given = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("names") if file.is_file() else None
    if given is None:
        raise FileNotFoundError(f"--data {data}: no data YAML with 'names' found")
    given = dict(enumerate(given)) if isinstance(given, list) else {int(k): str(v) for k, v in given.items()}
    if any(v != f"class{k}" for k, v in names.items()):
        return names
    if len(given) != len(names):
        raise ValueError(f"--data {data}: {len(given)} class names, but the weights predict {len(names)} classes")
    return given


def write_csv(file: Path, image: str, det: torch.Tensor, names: dict[int, str]) -> int:
    """YOLOv5's ``--save-csv``: one row per detection, columns Image Name, Prediction, Confidence; returns the rows."""
    import csv

    new = not file.exists()
    with open(file, "a", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.DictWriter(f, fieldnames=["Image Name", "Prediction", "Confidence"])
        if new:
            w.writeheader()
        for *_, conf, cls in reversed(det.tolist()):
            w.writerow({"Image Name": image, "Prediction": names[int(cls)], "Confidence": f"{conf:.2f}"})
    return len(det)


def inference_size(backend, weights: str, imgsz: list[int] | tuple[int, ...], dynamic: bool) -> list[int]:
    """``--imgsz`` as (h, w), or the size a fixed-shape export was made for; rounded up to the stride with a warning."""
    from ultralytics.utils.checks import check_imgsz

    imgsz = list(imgsz) * 2 if len(imgsz) == 1 else list(imgsz)
    export_hw = getattr(backend, "imgsz", None)
    if backend.format != "pt" and not dynamic and export_hw and list(export_hw) != imgsz:
        log(f"WARNING ⚠️ {weights} was exported for --imgsz {list(export_hw)}; using that instead of {imgsz}")
        imgsz = list(export_hw)
    return check_imgsz(imgsz, stride=int(backend.stride), min_dim=2)


def attach_recorders(model: torch.nn.Module | None, attention: bool, visualize: bool) -> tuple:
    """Forward hooks keeping attention gates (``--attention``, ``--visualize``) and layer outputs (``--visualize``).

    ``model`` is None for exported weights, which have no PyTorch modules to hook. Returns ``(attention, features)``
    recorders, each None when not asked for.
    """
    from utils.visualize import AttentionRecorder, FeatureRecorder

    if not (attention or visualize):
        return None, None
    if model is None:
        log("WARNING ⚠️ --attention/--visualize need .pt weights (forward hooks on the PyTorch model); skipped")
        return None, None
    att_rec, feat_rec = AttentionRecorder(model), FeatureRecorder(model) if visualize else None
    if attention and not att_rec.handles:
        log("WARNING ⚠️ --attention: this model has no attention module that gates its input (self-attention "
            "and branch-mixing modules have no heat map); no heat maps will be written")
    return att_rec, feat_rec


def frame_names(dataset, webcam: bool, i: int, base: str, info: str) -> tuple[str, str]:
    """Log prefix and output file stem of item ``i`` of a batch, whose source file's outputs are named ``base`` (video
    frames get ``_<frame>`` after it)."""
    video = getattr(dataset, "mode", "image") != "image"
    frame = dataset.count if webcam else getattr(dataset, "frame", 0)
    return (f"{i}: " if webcam else info), (f"{base}_{frame}" if video else base)


def video_fps(dataset, i: int) -> float | None:
    """Frame rate of the video or stream item ``i`` comes from, None for an image."""
    if getattr(dataset, "mode", "image") == "image":
        return None
    fps = getattr(dataset, "fps", 30)
    return fps[i] if isinstance(fps, list) else fps  # streams keep one rate per source


class Outputs:
    """What detect.py writes and shows for each image: labels, crops, attention and feature maps, the annotated image
    or video frame, a window; it counts what it wrote for the closing summary."""

    def __init__(self, save_dir: Path, names: dict[int, str], save_img: bool, view_img: bool, save_txt: bool,
                 save_conf: bool, save_crop: bool, line_thickness: int, hide_labels: bool, hide_conf: bool,
                 save_csv: bool = False):
        self.save_dir, self.names, self.save_csv, self.csv_rows = save_dir, names, save_csv, 0
        self.save_img, self.view_img, self.save_txt, self.save_conf, self.save_crop = (save_img, view_img, save_txt,
                                                                                       save_conf, save_crop)
        self.line_thickness, self.hide_labels, self.hide_conf = line_thickness, hide_labels, hide_conf
        self.sink, self.windows, self.crops, self.attention_maps = VideoSink(), [], 0, 0
        self.file_names = OutputNames(log)  # outputs of a file whose name is not valid UTF-8 get a safe name

    def base(self, p: Path) -> str:
        """The stem every output of source file ``p`` starts with (``p.stem``, or a safe one, logged once)."""
        return self.file_names.stem(p)

    def add(self, i: int, p: Path, stem: str, original: np.ndarray, det: torch.Tensor, input_hw: tuple[int, int],
            att_rec, feat_rec, fps: float | None) -> None:
        """Outputs of batch item ``i`` read from ``p``, named ``stem`` (see ``base``); ``det`` in ``original``'s
        pixels; ``fps`` None for images."""
        from ultralytics.utils.plotting import Annotator, colors, save_one_box

        from utils.visualize import save_attention_maps, save_feature_maps

        im0, base = original.copy(), self.base(p)
        if self.save_csv:
            self.csv_rows += write_csv(self.save_dir / "predictions.csv", p.name, det, self.names)
        if self.save_txt and len(det):
            write_labels(self.save_dir / "labels" / f"{stem}.txt", det, im0.shape, self.save_conf)
        imc = im0.copy() if self.save_crop else im0
        annotator = Annotator(im0, line_width=self.line_thickness, example=str(self.names))
        for *xyxy, conf, cls in reversed(det.tolist()):
            c = int(cls)
            if self.save_img or self.view_img:
                name = self.names[c]
                label = None if self.hide_labels else (name if self.hide_conf else f"{name} {conf:.2f}")
                annotator.box_label(xyxy, label or "", color=colors(c, True))
            if self.save_crop:
                save_one_box(torch.tensor(xyxy), imc, file=self.save_dir / "crops" / self.names[c] / f"{base}.jpg",
                             BGR=True)
                self.crops += 1
        if att_rec is not None and att_rec.records:
            self.attention_maps += len(save_attention_maps(att_rec.records, i, input_hw, original,
                                                           self.save_dir / "attention", stem))
        if feat_rec is not None and feat_rec.records:
            save_feature_maps(feat_rec.records, i, self.save_dir / "features" / stem)
        im0 = annotator.result()
        if self.view_img:
            self.show(shown(p), im0)
        if self.save_img:
            if fps is None:
                write_image(self.save_dir / f"{base}{p.suffix}", im0)
            else:
                self.sink.write(i, self.save_dir / f"{base}{p.suffix}", im0, fps)

    def show(self, window: str, im: np.ndarray) -> None:
        if window not in self.windows:
            self.windows.append(window)
            cv2.namedWindow(window, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            cv2.resizeWindow(window, im.shape[1], im.shape[0])
        cv2.imshow(window, im)
        cv2.waitKey(1)

    def close(self) -> None:
        self.sink.close()
        if self.windows:
            cv2.destroyAllWindows()

    def summary(self, feature_maps: bool) -> str | None:
        """``Results saved to <dir>`` and what lies there, or None when nothing was saved."""
        d, extra = self.save_dir, ""
        if self.save_txt:
            extra += f"\n{len(list((d / 'labels').glob('*.txt')))} labels saved to {d / 'labels'}"
        if self.save_csv:
            extra += f"\n{self.csv_rows} predictions saved to {d / 'predictions.csv'}"
        if self.crops:
            extra += f"\n{self.crops} crops saved to {d / 'crops'}"
        if self.attention_maps:
            extra += f"\n{self.attention_maps} attention maps saved to {d / 'attention'}"
        if feature_maps:
            extra += f"\nfeature maps saved to {d / 'features'}"
        if self.save_txt or self.save_img or self.save_csv or self.crops or self.attention_maps:
            return f"Results saved to {d}{extra}"
        return None


@torch.no_grad()
def run(
    weights: str | list[str] = "yolov5s.pt",
    source: str = "data/images",
    imgsz: list[int] | tuple[int, ...] = (640, 640),
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
    device: str = "",
    view_img: bool = False,
    save_txt: bool = False,
    save_csv: bool = False,
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
    data: str | Path | None = None,
) -> Path:
    """Detect objects in ``source`` and save the results; returns the run directory (``runs/detect/exp*``).
    ``data``: a data YAML whose class names replace an export's placeholders (``--data``)."""
    from ultralytics.utils.checks import check_imshow
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes
    from ultralytics.utils.torch_utils import select_device

    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import check_device, remove_if_empty
    from utils.engine import all_cores, increment_dir
    from utils.rundir import created_by_claim, release_run_dir

    check_options(imgsz, conf_thres, iou_thres, max_det, vid_stride, line_thickness, classes)
    check_device(device)
    weights = [weights] if isinstance(weights, (str, Path)) else [str(w) for w in weights]
    weights = weights[0] if len(weights) == 1 else weights  # several: one ensemble
    source = str(source)
    entries = check_source(source)
    webcam = is_stream(source)
    # Model
    with all_cores():
        dev = select_device(device, verbose=False)
    keep_freed_memory_on_cpu(dev.type)
    from utils.weights import resolve_weights

    # URLs and official names are downloaded (utils/weights.py)
    weights = [str(resolve_weights(w)) for w in weights] if isinstance(weights, list) else str(resolve_weights(weights))
    backend = load_detector(weights, dev, half)
    stride, names, pt = int(backend.stride), backend.names, backend.format == "pt"
    if data:
        names = names_for(names, data)
    dynamic = bool(backend.metadata.get("dynamic")) if not pt else True
    from models.experimental import Ensemble

    if isinstance(backend.model, Ensemble):  # the engine's backend passes no augment= to it: set it on the ensemble
        backend.model.augment = augment
    imgsz = inference_size(backend, str(weights), imgsz, dynamic)
    fp16 = bool(getattr(backend, "fp16", False))
    att_rec, feat_rec = attach_recorders(backend.model if pt else None, attention, visualize)
    view_img = view_img and check_imshow(warn=True)

    # Data
    dataset = open_source(source, vid_stride, entries)
    save_dir = increment_dir(Path(project) / name, exist_ok)  # created and locked for this run (utils/rundir.py)
    existed = not created_by_claim(save_dir)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    outputs = Outputs(save_dir, names, not nosave, view_img, save_txt, save_conf, save_crop, line_thickness,
                      hide_labels, hide_conf, save_csv)
    seen, dt = 0, (Timer(dev), Timer(dev), Timer(dev))
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
                p = Path(paths[i])
                s, stem = frame_names(dataset, webcam, i, outputs.base(p), infos[i])
                s += "%gx%g " % tuple(im.shape[2:])
                det[:, :4] = scale_boxes(im.shape[2:], det[:, :4], im0s[i].shape).round()
                if len(det):
                    s += class_counts(det, names)
                outputs.add(i, p, stem, im0s[i], det, tuple(im.shape[2:]), att_rec, feat_rec, video_fps(dataset, i))
                log(f"{s}{'' if len(det) else '(no detections), '}{dt[1].dt * 1e3:.1f}ms")
    except BaseException:
        if not existed:
            remove_if_empty(save_dir)  # leave no empty run folder behind
        raise
    finally:
        outputs.close()
        for rec in (att_rec, feat_rec):
            if rec is not None:
                rec.remove()
        if hasattr(dataset, "close"):
            dataset.close()
        release_run_dir(save_dir)

    if seen == 0:
        if not existed:
            remove_if_empty(save_dir)
        raise ValueError(f"--source {source}: no image or video frame could be read (unreadable or empty files)")
    t = tuple(x.t / seen * 1e3 for x in dt)
    log(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % t)
    summary = outputs.summary(feature_maps=feat_rec is not None)
    if summary:
        log(summary)
    return save_dir


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", type=str, default=["yolov5s.pt"],
                   help="model path(s): .pt, .torchscript, .onnx, *_openvino_model/; several .pt: an ensemble")
    p.add_argument("--source", type=str, default=str(ROOT / "data" / "images"),
                   help="file/dir/glob/URL/.txt/.streams, 0 for webcam, screen for a screenshot")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-csv", action="store_true", help="save results in CSV format (predictions.csv)")
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
    p.add_argument("--data", type=str, default=None,
                   help="(optional) dataset.yaml: class names for weights that carry none (an export without metadata)")
    p.add_argument("--dnn", action="store_true", help="OpenCV DNN for ONNX inference (not used, see the line printed)")
    p.add_argument("--update", action="store_true",
                   help="strip optimizers from the weights (nothing to do: train.py saves them stripped)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and detect; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    from utils.cli import user_errors

    opt = parse_opt(argv)
    log("detect: " + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    options = vars(opt).copy()
    if options.pop("dnn"):
        from utils.cli import DNN_NOTE

        log(DNN_NOTE)
    if options.pop("update"):
        log("--update: nothing to do: train.py strips the optimizer from last.pt and best.pt when training ends, and "
            "weights are never rewritten by detect.py")
    with user_errors():
        try:
            run(**options)
        except ConnectionError as e:  # stream/webcam failures: a clear message, not a stack trace
            raise ValueError(f"--source {opt.source}: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
