"""PyTorch Hub entries: one per model YAML in models/ and models/hub/ (yolov5s, yolov5s_ema, yolov5x_p2_ema, ...),
plus ``custom`` for a file.

Usage:
    import torch
    model = torch.hub.load("path/to/yolov5-attention", "custom", path="best.pt", source="local")
    model = torch.hub.load("path/to/yolov5-attention", "yolov5s_ema", pretrained=False, classes=10, source="local")
    results = model(["data/images/bus.jpg"], size=640)
    results.print()
    print(torch.hub.list("path/to/yolov5-attention", source="local"))

A YAML named ``yolov5x-p2-ema.yaml`` gives the entry ``yolov5x_p2_ema``. ``pretrained=True`` (the default, as in
YOLOv5) loads ``<name>.pt`` from the current folder or this repository's root; official YOLOv5 weights found in neither
(``yolov5s.pt``...) are downloaded into the current folder, as in YOLOv5 (``utils/weights.py``).
"""

import torch  # noqa: F401  (torch.hub's import check; the code lives in utils/hub.py)

from utils import hub as _hub

dependencies = ["torch", "torchvision", "numpy", "cv2", "PIL", "yaml", "ultralytics"]


def custom(path="path/to/model.pt", autoshape=True, _verbose=True, device=None):
    """A model from a file: a .pt checkpoint (this repository's, or an official YOLOv5 v5.0-v7.0 release) or an export
    (.onnx, .torchscript, *_openvino_model/). Detectors come wrapped in AutoShape (unless autoshape=False);
    classifiers are returned as they are. device: None = first GPU if any, else CPU."""
    return _hub.load_custom(path, autoshape=autoshape, verbose=_verbose, device=device)


def _entry(name, cfg):
    def entry(pretrained=True, channels=3, classes=80, autoshape=True, _verbose=True, device=None):
        return _hub.create(name, pretrained, channels, classes, autoshape, _verbose, device)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}: the model of {cfg.relative_to(_hub.ROOT).as_posix()}. pretrained=True loads "
                     f"{cfg.stem}.pt from the current folder or the repository root (whole, for 3 channels and 80 "
                     f"classes; else every tensor that fits a new model); pretrained=False builds it with random "
                     f"weights. autoshape=True wraps it in AutoShape; device: None = first GPU if any, else CPU.")
    return entry


for _name, _cfg in _hub.hub_configs().items():  # torch.hub.list wants module-level callables: one per YAML
    globals()[_name] = _entry(_name, _cfg)

if __name__ == "__main__":  # python hubconf.py: the entries (torch.hub.list reads GitHub repositories only)
    print("\n".join(["custom", *_hub.hub_configs()]))
