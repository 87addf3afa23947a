"""AdamW takes torch's fused kernel where there is one and makes the same update as the plain
per-tensor one; where there is none (older torch on the CPU, other devices) it still builds."""

import torch

from lora_trainer.training.optim import build_optimizer


def _params(device: str = "cpu"):
    generator = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (8,), (4, 16, 1, 1)]
    return [torch.nn.Parameter(torch.randn(s, generator=generator).to(device)) for s in shapes]


def test_adamw_updates_match_torchs_plain_adamw():
    ours, reference = _params(), _params()
    groups = [{"params": ours[:2], "lr": 1e-2}, {"params": ours[2:], "lr": 5e-3}]
    optimizer = build_optimizer("adamw", groups, weight_decay=0.01)
    cpu_kernel = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)
    assert bool(optimizer.defaults.get("fused")) == cpu_kernel  # the fast kernel wherever this torch has it
    plain = torch.optim.AdamW([{"params": reference[:2], "lr": 1e-2}, {"params": reference[2:], "lr": 5e-3}],
                              weight_decay=0.01, foreach=False)
    for step in range(5):
        for a, b in zip(ours, reference):
            grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(step))
            a.grad, b.grad = grad.clone(), grad.clone()
        optimizer.step()
        plain.step()
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 5e-3]
    plain.load_state_dict(optimizer.state_dict())  # a resume state loads into either


def test_adamw_builds_and_steps_where_torch_has_no_fused_kernel():
    # complex tensors have no fused kernel in any torch, as the CPU had none before 2.4
    params = [torch.nn.Parameter(torch.randn(4, dtype=torch.complex64)), *_params()]
    optimizer = build_optimizer("adamw", [{"params": params, "lr": 1e-3}], weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults.get("fused")
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert len(optimizer.param_groups[0]["params"]) == 4
    assert all(not torch.equal(a, b) for a, b in zip(before, params))
