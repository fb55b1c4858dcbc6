"""Utilities of the YOLOv5-attention fork: loss, autoanchor, engine glue, data preparation."""
