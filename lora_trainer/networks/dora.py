"""DoRA with the magnitude on the input axis, the orientation A1111, Forge and ComfyUI apply.

Those consumers merge a DoRA module as W' = (W + dW) * m / ||W + dW||, the norm taken over
every axis except the input one (one value per input channel; `dora_scale` has shape
[1, in(, 1, 1)]). peft's own DoRA normalises per output row, which those consumers would
misread. Scaling W's columns by s is the same as scaling the layer's input by s, so here DoRA
is a forward pre-hook that multiplies the input of an adapted layer by s = m / ||W + dW||
(the norm detached, as in the DoRA paper and peft). What is trained is exactly what they load.
"""

from typing import Callable

import torch
from torch import nn


def input_axis_norm(weight: torch.Tensor) -> torch.Tensor:
    """Norm of each input column of a Linear [out, in] or Conv [out, in, kh, kw] weight -> [in]."""
    return weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)


class InputAxisDoRA(nn.Module):
    """The trainable magnitude of one adapted layer, plus the hook that applies it."""

    def __init__(self, base_weight: torch.Tensor, delta: Callable[[], torch.Tensor]):
        super().__init__()
        self.magnitude = nn.Parameter(input_axis_norm(base_weight.detach().float()))
        self._delta = delta
        self._base_weight = base_weight

    def input_scale(self) -> torch.Tensor:
        merged = self._base_weight.float() + self._delta().float()
        return self.magnitude / input_axis_norm(merged).detach()

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.input_scale()
        if x.dim() == 4 and self._base_weight.dim() == 4:
            scale = scale.view(1, -1, 1, 1)
        return x * scale.to(x.dtype)

    def dora_scale(self) -> torch.Tensor:
        """`dora_scale` as written to the file: [1, in] or [1, in, 1, 1]."""
        shape = [1, self.magnitude.shape[0]] + [1] * (self._base_weight.dim() - 2)
        return self.magnitude.detach().reshape(shape)


def attach(layer: nn.Module, base_weight: torch.Tensor, delta: Callable[[], torch.Tensor]) -> InputAxisDoRA:
    """Add DoRA to an adapted (peft) layer: registers `layer.dora` and its input pre-hook."""
    dora = InputAxisDoRA(base_weight, delta).to(base_weight.device)
    layer.dora = dora
    layer.register_forward_pre_hook(lambda module, args: (module.dora.scale_input(args[0]),) + tuple(args[1:]))
    return dora
