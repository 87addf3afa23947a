"""Gradient clipping (train.max_grad_norm) and the norm the NaN guard reads: the same gradients
and norm as torch's `clip_grad_norm_`, whether or not they are clipped."""

import math

import pytest
import torch

from lora_trainer.training.trainer import gradient_norm


def _params_with_grads(scale: float):
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in [(8, 4), (4,), (3, 8, 1, 1), (2, 2)]]
    for p in params[:-1]:
        p.grad = torch.randn(p.shape, generator=generator) * scale
    return params  # the last one has no gradient (a frozen or unused adapter)


@pytest.mark.parametrize("scale", [0.01, 10.0], ids=["under-the-limit", "clipped"])
def test_clipping_matches_torch(scale):
    ours, theirs = _params_with_grads(scale), _params_with_grads(scale)
    norm = gradient_norm(ours, max_norm=1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(norm, expected)
    for a, b in zip(ours[:-1], theirs[:-1]):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)
    if scale > 1:
        after = math.sqrt(sum(float(p.grad.square().sum()) for p in ours[:-1]))
        assert after == pytest.approx(1.0, rel=1e-5)


def test_no_limit_leaves_gradients_alone_and_reports_the_norm():
    params = _params_with_grads(10.0)
    before = [p.grad.clone() for p in params[:-1]]
    norm = gradient_norm(params, max_norm=0.0)
    assert float(norm) == pytest.approx(math.sqrt(sum(float(g.square().sum()) for g in before)), rel=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(params[:-1], before))


def test_a_nan_gradient_gives_a_nan_norm():
    params = _params_with_grads(10.0)
    params[1].grad[0] = float("nan")
    assert math.isnan(float(gradient_norm(params, max_norm=1.0)))
