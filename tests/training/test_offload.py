"""Moving weights that someone else shares: the storages move and every tensor on them follows.

On a GPU this is what frees the WebUI's VRAM while the VAE and frozen text encoders are parked;
here the "move" is a real copy between CPU storages, which is what the re-pointing has to get
right (views, shared weights, the owner's tensors, and moving back).
"""

import torch

from lora_trainer.training.offload import CPU, move_back, relocate


def _ptr(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class _Ours(torch.nn.Module):
    """Views of an owner's weights, as load_bundle makes them (a split fused qkv, a transpose)."""

    def __init__(self, fused: torch.Tensor, projection: torch.Tensor, norm: torch.Tensor):
        super().__init__()
        self.q = torch.nn.Parameter(fused[:4], requires_grad=False)
        self.v = torch.nn.Parameter(fused[8:], requires_grad=False)
        self.proj = torch.nn.Parameter(projection.t(), requires_grad=False)
        self.register_buffer("norm", norm)


def _owner():
    return {"fused": torch.randn(12, 3), "projection": torch.randn(3, 5), "norm": torch.randn(7), "other": torch.randn(2)}


def test_moved_weights_keep_their_values_views_and_sharing_with_the_owner():
    owner = _owner()
    before = {k: v.clone() for k, v in owner.items()}
    ours = _Ours(owner["fused"], owner["projection"], owner["norm"])
    old = {k: _ptr(v) for k, v in owner.items()}

    moved = relocate(list(ours.parameters()) + list(ours.buffers()), CPU, followers=owner.values())

    assert len(moved) == 3  # one per storage, however many views lie on it
    for key in ("fused", "projection", "norm"):
        assert _ptr(owner[key]) != old[key], f"{key} was not moved"
        assert torch.equal(owner[key], before[key])
    assert _ptr(owner["other"]) == old["other"]  # not ours: untouched
    assert _ptr(ours.q) == _ptr(ours.v) == _ptr(owner["fused"])
    assert torch.equal(ours.q, owner["fused"][:4]) and torch.equal(ours.v, owner["fused"][8:])
    assert torch.equal(ours.proj, owner["projection"].t()) and ours.proj.stride() == owner["projection"].t().stride()
    assert isinstance(ours.q, torch.nn.Parameter) and not ours.q.requires_grad
    with torch.no_grad():
        owner["fused"][9, 1] = 42.0  # still one weight, not two copies
    assert ours.v[1, 1] == 42.0

    moved_to = {k: _ptr(owner[k]) for k in ("fused", "projection", "norm")}
    move_back(moved)
    for key in ("fused", "projection", "norm"):
        assert _ptr(owner[key]) != moved_to[key]
    assert _ptr(ours.q) == _ptr(owner["fused"]) and _ptr(ours.norm) == _ptr(owner["norm"])
    assert torch.equal(ours.proj, before["projection"].t())


def test_moving_back_leaves_alone_a_tensor_its_owner_replaced_meanwhile():
    """The WebUI may unload its model during a run (the button bypasses the lock): its own new
    tensors must not be overwritten by our restore."""
    owner = _owner()
    ours = _Ours(owner["fused"], owner["projection"], owner["norm"])
    moved = relocate(list(ours.parameters()), CPU, followers=owner.values())
    replacement = torch.zeros(12, 3)
    owner["fused"].data = replacement

    move_back(moved)

    assert owner["fused"].data_ptr() == replacement.data_ptr() and not owner["fused"].any()
    assert _ptr(ours.q) == _ptr(ours.v)  # ours were moved back together, still one storage
