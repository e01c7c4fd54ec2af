"""Where models run: the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

from typing import Any


def pick_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
