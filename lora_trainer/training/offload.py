"""Park the frozen VAE and text encoders on the CPU while the UNet trains, without a second copy.

After the latents are encoded the VAE is idle until a sample is rendered, and frozen text
encoders are idle once every caption's conditioning is precomputed: on a GPU that is VRAM the
UNet can use (SDXL's two text encoders are ~1.6 GB in fp16).

The bundle may be a view of someone else's weights (the WebUI's model): moving our modules
with `Module.to` would give us private copies and leave the owner's on the GPU, so nothing
would be freed and zero copy would be broken. `relocate` moves *storages* instead: every
tensor on a moved storage, ours or the owner's, is re-pointed at the new one, so views stay
views and shared weights stay shared. `restore` moves each storage back to where it was.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import torch

CPU = torch.device("cpu")


@dataclass
class Moved:
    """One storage that was moved: the tensors now on it, where it lives, where it came from."""

    tensors: List[torch.Tensor]
    data_ptr: int
    home: torch.device


def _tensors(module: torch.nn.Module) -> List[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def _repoint(tensor: torch.Tensor, flat: torch.Tensor) -> None:
    """Make `tensor` (a Parameter or buffer, same object) a view of `flat` with its own layout."""
    tensor.data = flat.view(tensor.dtype).as_strided(tensor.size(), tensor.stride(), tensor.storage_offset())


def _copy_storage(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole storage under `tensor`, as flat bytes, copied to `device`."""
    storage = tensor.untyped_storage()
    source = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage)
    return source.to(device, copy=True)


def relocate(tensors: Iterable[torch.Tensor], device: torch.device, followers: Iterable[torch.Tensor] = ()) -> List[Moved]:
    """Copy the storages under `tensors` to `device` (always a copy, even on the same device) and
    re-point every tensor in `tensors` or `followers` that lies on one of them."""
    groups: Dict[int, List[torch.Tensor]] = {}
    for tensor in tensors:
        if tensor.untyped_storage().nbytes() == 0:
            continue
        members = groups.setdefault(tensor.untyped_storage().data_ptr(), [])
        if all(member is not tensor for member in members):
            members.append(tensor)
    for tensor in followers:
        members = groups.get(tensor.untyped_storage().data_ptr()) if tensor.untyped_storage().nbytes() else None
        if members is not None and all(member is not tensor for member in members):
            members.append(tensor)
    moved = []
    for members in groups.values():
        home = members[0].device
        flat = _copy_storage(members[0], device)
        for tensor in members:
            _repoint(tensor, flat)
        moved.append(Moved(members, flat.untyped_storage().data_ptr(), home))
    return moved


def move_back(moved: Sequence[Moved]) -> None:
    """Undo `relocate`. A tensor someone re-pointed meanwhile (e.g. the WebUI unloading its
    model) is left as that someone made it."""
    for entry in moved:
        still = [t for t in entry.tensors if t.untyped_storage().data_ptr() == entry.data_ptr]
        if not still:
            continue
        flat = _copy_storage(still[0], entry.home)
        for tensor in still:
            _repoint(tensor, flat)


class FrozenOffload:
    """The VAE and frozen text encoders parked on the CPU for the run, back on the device for
    samples, and everything where it was at the end.

    `mode`: None (auto) parks what lives on an accelerator; True parks even what is already on
    the CPU (a copy: what the CPU-only tests exercise); False parks nothing.
    """

    def __init__(self, bundle, mode: Optional[bool] = None):
        self.bundle, self.mode = bundle, mode
        self.followers: List[torch.Tensor] = list(getattr(bundle, "storage_owners", None) or [])
        self._parked: Dict[str, List[Moved]] = {}

    def _tensors_of(self, name: str) -> List[torch.Tensor]:
        modules = [self.bundle.vae] if name == "vae" else list(self.bundle.text_encoders)
        return [t for module in modules for t in _tensors(module)]

    def wants(self, name: str) -> bool:
        """Whether `park(name)` would move anything."""
        if self.mode is False or name in self._parked:
            return False
        return self.mode is True or any(t.device.type != "cpu" for t in self._tensors_of(name))

    def park(self, name: str) -> None:
        """Move "vae" or "text_encoders" to the CPU (the owner's tensors follow)."""
        if self.wants(name):
            self._parked[name] = relocate(self._tensors_of(name), CPU, self.followers)

    def unpark(self, name: str) -> None:
        moved = self._parked.pop(name, None)
        if moved is not None:
            move_back(moved)

    @property
    def parked(self) -> List[str]:
        return list(self._parked)

    @contextmanager
    def resident(self) -> Iterator[None]:
        """Everything parked is back on its device inside the block (to render samples)."""
        names = self.parked
        for name in names:
            self.unpark(name)
        try:
            yield
        finally:
            for name in names:
                self._parked[name] = relocate(self._tensors_of(name), CPU, self.followers)

    def restore(self) -> None:
        for name in self.parked:
            self.unpark(name)
