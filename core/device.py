"""Which torch device a --device name means: the same rules and messages for training, evaluation,
sampling and export, without importing the training loop."""

from __future__ import annotations

import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name} was asked for, but PyTorch sees no CUDA GPU on this machine; "
                "use --device cpu or auto."
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name} was asked for, but only {torch.cuda.device_count()} GPU(s) are visible."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.")
