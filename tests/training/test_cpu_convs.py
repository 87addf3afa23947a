"""Convolutions over tiny maps computed as one matrix product on the CPU (the UNet's deepest
levels at small resolutions): the same values and gradients as PyTorch's own, and the host's
layers are as they were once the step is over."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lora_trainer.training.cpu_convs import TinyMapConvs, conv2d_as_matmul

CASES = [  # (batch, channels in, size, channels out, kernel, stride, padding, dilation, bias)
    (1, 40, 1, 24, 3, 1, 1, 1, True),   # a 3x3 on a 1x1 map: only the centre tap sees data
    (3, 40, 2, 24, 3, 1, 1, 1, True),
    (2, 40, 2, 24, 1, 1, 0, 1, False),  # a 1x1 (shortcut, proj_in/out, a LoRA's up/down)
    (2, 40, 4, 24, 3, 2, 1, 1, True),   # a downsampler onto 2x2
    (1, 40, 5, 24, 3, 2, 0, 2, True),   # dilation, no padding
    (2, 40, 2, 24, (3, 1), 1, (1, 0), 1, True),
]


@pytest.mark.parametrize("batch,cin,size,cout,kernel,stride,padding,dilation,bias", CASES)
def test_tiny_map_convolutions_give_conv2d_values_and_gradients(batch, cin, size, cout, kernel, stride, padding, dilation, bias):
    generator = torch.Generator().manual_seed(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(batch, cin, size, size, generator=generator, requires_grad=True)
    w = torch.randn(cout, cin, kh, kw, generator=generator, requires_grad=True)
    b = torch.randn(cout, generator=generator, requires_grad=True) if bias else None
    inputs = [t for t in (x, w, b) if t is not None]

    expected = F.conv2d(x, w, b, stride, padding, dilation)
    out = conv2d_as_matmul(x, w, b, stride, padding, dilation)

    assert out is not None and out.shape == expected.shape
    assert out.is_contiguous()  # NCHW as conv2d's, so later layers keep PyTorch's fast layout
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(expected.shape, generator=generator)
    for mine, theirs in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_larger_maps_and_unsupported_convolutions_are_left_to_pytorch():
    w = torch.randn(8, 4, 3, 3)
    assert conv2d_as_matmul(torch.randn(1, 4, 3, 3), w, padding=1) is None  # 3x3 output: PyTorch's is faster
    assert conv2d_as_matmul(torch.randn(1, 4, 2, 2), w, padding="same") is None
    assert conv2d_as_matmul(torch.randn(1, 8, 2, 2), torch.randn(8, 2, 3, 3), padding=1, groups=4) is None
    assert conv2d_as_matmul(torch.randn(1, 4, 2, 2).half(), w.half(), padding=1) is None


class _DeepLevel(torch.nn.Module):
    """A UNet's deepest level in miniature: wide 3x3 convs and a 1x1 shortcut on a 2x2 map."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.shortcut = torch.nn.Conv2d(channels, channels, 1)
        self.small = torch.nn.Conv2d(channels, 4, 1)  # under MIN_WEIGHTS: PyTorch's own is faster there

    def block(self, x):
        return self.conv2(F.silu(self.conv1(x))) + self.shortcut(x)

    def forward(self, x, checkpointed: bool = False):
        h = checkpoint(self.block, x, use_reentrant=False) if checkpointed else self.block(x)
        return self.small(h)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_step_over_a_tiny_map_matches_pytorch_and_the_layers_are_left_as_they_were(checkpointed):
    torch.manual_seed(0)
    model = _DeepLevel()
    x = torch.randn(2, 256, 2, 2)
    expected = model(x, checkpointed)
    expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    tiny = TinyMapConvs(model, torch.device("cpu"))
    assert set(tiny.convs) == {model.conv1, model.conv2, model.shortcut}
    with tiny.active():
        out = model(x, checkpointed)
        assert out.grad_fn is not None and "Convolution" not in type(model.conv1(x).grad_fn).__name__
    with tiny.active():  # backward, as the loop runs it: a checkpoint recomputes through the same kernels
        out.square().sum().backward()

    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip([p.grad for p in model.parameters()], expected_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert all("forward" not in vars(conv) for conv in model.modules())
    assert "Convolution" in type(model.conv1(x).grad_fn).__name__


def test_nothing_is_changed_off_the_cpu():
    assert TinyMapConvs(_DeepLevel(), torch.device("meta")).convs == []


def test_under_bf16_autocast_the_product_runs_in_bf16_like_the_convolution():
    torch.manual_seed(0)
    model = _DeepLevel()
    x = torch.randn(2, 256, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.conv1(x)
        with TinyMapConvs(model, torch.device("cpu")).active():
            out = model.conv1(x)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
