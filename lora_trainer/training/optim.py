"""Optimizers and learning-rate schedules, from the libraries that already have them.

AdamW is torch's; AdamW8bit is bitsandbytes' (CUDA only); Lion, Prodigy and Adafactor come
from lion-pytorch, prodigyopt and transformers. A missing optional package gets a message
naming the pip command. Schedules are diffusers' `get_scheduler`.
"""

from typing import Dict, List

import torch

from lora_trainer.errors import UserError

OPTIMIZERS = ("adamw", "adamw8bit", "lion", "prodigy", "adafactor")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")


def _missing(package: str, optimizer: str) -> UserError:
    return UserError(f"optimizer {optimizer!r} needs the {package} package: pip install {package} (or choose adamw)")


def build_optimizer(name: str, param_groups: List[Dict], weight_decay: float = 0.01, device_type: str = "cpu") -> torch.optim.Optimizer:
    """`param_groups` carry their own `lr` (UNet and text encoders train at different rates)."""
    name = name.lower()
    if name == "adamw":
        return _adamw(param_groups, weight_decay)
    if name == "adamw8bit":
        if device_type != "cuda":
            raise UserError("adamw8bit (bitsandbytes) runs only on CUDA GPUs; choose adamw, lion, prodigy or adafactor here")
        try:
            import bitsandbytes
        except ImportError as exc:
            raise _missing("bitsandbytes", name) from exc
        return bitsandbytes.optim.AdamW8bit(param_groups, weight_decay=weight_decay)
    if name == "lion":
        try:
            from lion_pytorch import Lion
        except ImportError as exc:
            raise _missing("lion-pytorch", name) from exc
        return Lion(param_groups, weight_decay=weight_decay)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError as exc:
            raise _missing("prodigyopt", name) from exc
        return Prodigy(param_groups, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(param_groups, scale_parameter=False, relative_step=False, warmup_init=False, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _torch_version() -> tuple:
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def _fused_adamw_runs_on(params: List[torch.Tensor]) -> bool:
    """torch has a fused AdamW for floating-point tensors on CUDA, and on the CPU since 2.4."""
    devices = {p.device.type for p in params}
    allowed = {"cuda"} | ({"cpu"} if _torch_version() >= (2, 4) else set())
    return bool(params) and devices <= allowed and all(torch.is_floating_point(p) for p in params)


def _adamw(param_groups: List[Dict], weight_decay: float) -> torch.optim.AdamW:
    """torch's fused AdamW where it has one (a LoRA has hundreds of small tensors: on the CPU
    the per-tensor loop took 18 ms a step on a tiny model, fused 2 ms); the plain one elsewhere.
    Same update, same state dict."""
    groups = [dict(group, params=list(group["params"])) for group in param_groups]
    if _fused_adamw_runs_on([p for group in groups for p in group["params"]]):
        try:
            return torch.optim.AdamW([dict(group) for group in groups], weight_decay=weight_decay, fused=True)
        except RuntimeError:  # a build without the kernel refuses at once
            pass
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    num_cycles: int = 1, power: float = 1.0):
    from diffusers.optimization import get_scheduler

    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps,
                         num_cycles=num_cycles, power=power)
