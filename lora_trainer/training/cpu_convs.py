"""Convolutions over tiny maps as one matrix product, on the CPU.

PyTorch's CPU convolutions are slow when the output has few positions: with one thread and a
batch under 16 a 1x1 convolution runs one small matrix product per sample (reading the weight
N times), a 3x3 one at batch 1 takes the im2col path with a 4-column product, and oneDNN
(batch > 1) re-lays the whole weight on every call. A UNet's deepest levels are such maps when
latents are small (2x2 and 1x1 at 64 px): there a step ran at a fifth of the matmul rate.
Unfolding the input and doing one product over the whole batch computes the same sums, counted
and executed tap for tap (so FLOP counts do not change), 1.2-10x faster at those sizes and
slower above them, hence the limit. Switched on around a training step's forward and backward
only; the host's weights are used as they are (no copy, no re-layout).
"""

from contextlib import contextmanager
from functools import partial
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

MAX_POSITIONS = 4  # output positions per sample (2x2); measured: larger maps are faster as they are
MIN_WEIGHTS = 2 ** 16  # below, a layer's few more operations cost more than its product gains

_Pair = Union[int, Sequence[int]]


def _pair(value: _Pair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_as_matmul(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     stride: _Pair = 1, padding: _Pair = 0, dilation: _Pair = 1,
                     groups: int = 1) -> Optional[torch.Tensor]:
    """`F.conv2d` as unfold + one matrix product when the output map is tiny; None when not
    applicable (not the CPU, fp16 (older torch has no CPU half matmul), groups, string padding,
    or a map where PyTorch's own is faster)."""
    if (input.device.type != "cpu" or input.dim() != 4 or weight.dim() != 4 or groups != 1
            or isinstance(padding, str) or weight.dtype not in (torch.float32, torch.bfloat16)):
        return None
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_channels, _, kh, kw = weight.shape
    batch, _, height, width = input.shape
    out_h, out_w = _output_size(height, kh, sh, ph, dh), _output_size(width, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1 or out_h * out_w > MAX_POSITIONS:
        return None
    columns = F.unfold(input, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # [N, C*kh*kw, L]
    # Row-major rows: a column-major view (batch 1) makes autograd take a 5x slower product shape.
    rows = columns.transpose(1, 2).contiguous().view(batch * out_h * out_w, -1)
    matrix = weight.reshape(out_channels, -1).t()
    out = torch.addmm(bias, rows, matrix) if bias is not None else rows @ matrix
    # NCHW-contiguous as conv2d's: a channels-last view would spread to later layers and make
    # PyTorch re-lay their weights on every call.
    return out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2).contiguous()


def _forward(conv: torch.nn.Conv2d, input: torch.Tensor) -> torch.Tensor:
    out = conv2d_as_matmul(input, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out if out is not None else type(conv).forward(conv, input)


class TinyMapConvs:
    """The plain `Conv2d` layers of a UNet (adapters' included) with `MIN_WEIGHTS` or more,
    each computed by `conv2d_as_matmul` while `active()`. An instance attribute shadows the
    class's `forward` for that time only, so nothing else pays for it (a function mode would tax
    every operation: +20 % on a tiny model's step); nothing to do off the CPU."""

    def __init__(self, root: torch.nn.Module, device: torch.device):
        self.convs: List[torch.nn.Conv2d] = []
        if device.type == "cpu":
            self.convs = [m for m in root.modules() if type(m) is torch.nn.Conv2d and m.padding_mode == "zeros"
                          and m.weight.numel() >= MIN_WEIGHTS]

    @contextmanager
    def active(self) -> Iterator[None]:
        for conv in self.convs:
            conv.__dict__["forward"] = partial(_forward, conv)
        try:
            yield
        finally:
            for conv in self.convs:
                conv.__dict__.pop("forward", None)
