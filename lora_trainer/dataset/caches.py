"""The latent cache, in memory and on disk (text-encoder outputs are cached by the trainer's Conditioner).

A latent is keyed by the image's content hash, the VAE's identity, the bucket and the flip, so
a cache made with another VAE or resolution is never reused. On disk each entry is a small
safetensors file under `<dataset>/.lora_trainer/latents/`.
"""

import hashlib
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch


def content_hash(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vae_identity(vae) -> str:
    """Identifies a VAE's weights cheaply: config plus a few sampled values of its tensors."""
    digest = hashlib.sha1(repr(sorted(dict(vae.config).items())).encode())
    for name, tensor in list(vae.state_dict().items())[::17]:
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 8)][:8].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class LatentCache:
    """get-or-encode latents by (image hash, VAE identity, bucket, flip)."""

    def __init__(self, vae_id: str, folder: Optional[Path] = None):
        self.vae_id = vae_id
        self.folder = Path(folder) if folder else None
        self.memory: Dict[Tuple[str, str, Tuple[int, int], bool], torch.Tensor] = {}
        self.hits = self.misses = 0

    def _file(self, key) -> Path:
        image_hash, vae_id, bucket, flip = key
        return self.folder / f"{image_hash}_{vae_id}_{bucket[0]}x{bucket[1]}{'_flip' if flip else ''}.safetensors"

    def get(self, image_hash: str, bucket: Tuple[int, int], flip: bool, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        key = (image_hash, self.vae_id, tuple(bucket), bool(flip))
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        if self.folder is not None and self._file(key).is_file():
            try:
                latents = load_file(str(self._file(key)))["latents"]
                self.memory[key] = latents
                self.hits += 1
                return latents
            except Exception:
                pass  # a damaged cache file is simply recomputed
        self.misses += 1
        latents = encode().detach().cpu()
        self.memory[key] = latents
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = self._file(key).with_suffix(".tmp")
            save_file({"latents": latents.contiguous()}, str(temp))
            temp.replace(self._file(key))
        return latents

