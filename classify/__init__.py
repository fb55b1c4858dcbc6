"""YOLOv5's classification workflow: train.py, val.py, predict.py."""
