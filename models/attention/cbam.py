"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared bias-free MLP over average- and max-pooled descriptors."""

    gate = True

    def __init__(self, c1: int, ratio: int = 16):
        super().__init__()
        if c1 < ratio:
            raise ValueError(f"CBAM: {c1} input channels are fewer than ratio={ratio}; use ratio <= {c1}")
        self.fc1 = nn.Conv2d(c1, c1 // ratio, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c1 // ratio, c1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.relu(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * (avg + mx).sigmoid()


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a k x k conv over the channel-mean and channel-max maps."""

    gate = True

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be odd, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)  # the paper repo's name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)).sigmoid()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        if prefix + "conv.weight" in state_dict:  # checkpoints of this project before the rename to the paper's name
            state_dict[prefix + "conv1.weight"] = state_dict.pop(prefix + "conv.weight")
        super()._load_from_state_dict(state_dict, prefix, *args)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    A channel gate (shared MLP over avg- and max-pooling) followed by a spatial gate (7x7 conv).
    """

    gate = True

    def __init__(self, c1: int, ratio: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel_attention = ChannelGate(c1, ratio)
        self.spatial_attention = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))
