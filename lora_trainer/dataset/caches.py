"""Latent and text-encoder output caches, in memory and on disk (needs torch; import lazily).

A latent is keyed by the image's content hash, the VAE's identity, the bucket and the flip, so
a cache made with another VAE, at another resolution or of an edited image is never reused
(renaming or moving the image does not matter). Text-encoder outputs, cached only while the
text encoders are frozen, are keyed by the caption text and the encoders' identity (which
the caller builds to include anything that changes the output, e.g. clip skip). On disk each
entry is one small safetensors file, written atomically; a damaged file is recomputed.
"""

import hashlib
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

from lora_trainer.dataset.images import content_hash  # noqa: F401  (re-exported: the cache key of an image)
from lora_trainer.files import clean_stale_temp_files, write_atomically

Bucket = Tuple[int, int]


def vae_identity(vae) -> str:
    """Identifies a VAE's weights cheaply: its config plus sampled values of its tensors."""
    digest = hashlib.sha1(repr(sorted(dict(getattr(vae, "config", {})).items())).encode())
    for name, tensor in list(vae.state_dict().items())[::17]:
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 8)][:8].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _save(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    write_atomically(path, save({k: v.contiguous() for k, v in tensors.items()}), fsync=False)  # a cache: no fsync


def _load(path: Path) -> Optional[Dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception:  # damaged or foreign file: recompute rather than fail
        return None


class LatentCache:
    """Get-or-encode latents by (image content hash, VAE identity, bucket, flip)."""

    def __init__(self, vae_id: str, folder: Optional[Path] = None):
        if not vae_id:
            raise ValueError("a latent cache needs the VAE's identity (vae_identity(vae))")
        self.vae_id = vae_id
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            clean_stale_temp_files(self.folder)  # what a run killed while caching left behind
        self.memory: Dict[Tuple[str, str, Bucket, bool], torch.Tensor] = {}
        self.hits = self.misses = 0

    def _file(self, key) -> Path:
        image_hash, vae_id, bucket, flip = key
        return self.folder / f"{image_hash}_{vae_id}_{bucket[0]}x{bucket[1]}{'_flip' if flip else ''}.safetensors"

    def get(self, image_hash: str, bucket: Bucket, flip: bool, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached latents, else `encode()` (stored in memory and, with a folder, on disk)."""
        key = (image_hash, self.vae_id, (int(bucket[0]), int(bucket[1])), bool(flip))
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        if self.folder is not None:
            stored = _load(self._file(key))
            if stored is not None and "latents" in stored and bool(torch.isfinite(stored["latents"]).all()):
                self.memory[key] = stored["latents"]
                self.hits += 1
                return stored["latents"]
        self.misses += 1
        latents = encode().detach().cpu()
        self.memory[key] = latents
        if self.folder is not None:
            _save(self._file(key), {"latents": latents})
        return latents


class TextEncoderCache:
    """Get-or-encode text-encoder outputs by (caption text, encoders' identity).

    Only valid while the text encoders are frozen (not trained): the trainer must not use it
    when it trains them. `encode()` returns a dict of tensors (e.g. hidden states, pooled).
    """

    def __init__(self, encoder_id: str, folder: Optional[Path] = None):
        if not encoder_id:
            raise ValueError("a text-encoder cache needs the encoders' identity")
        self.encoder_id = encoder_id
        self.folder = Path(folder) if folder else None
        if self.folder is not None:
            clean_stale_temp_files(self.folder)  # what a run killed while caching left behind
        self.memory: Dict[str, Dict[str, torch.Tensor]] = {}
        self.hits = self.misses = 0

    def _key(self, caption: str) -> str:
        return hashlib.sha1(f"{self.encoder_id}\0{caption}".encode("utf-8")).hexdigest()

    def get(self, caption: str, encode: Callable[[], Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        key = self._key(caption)
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        if self.folder is not None:
            stored = _load(self.folder / f"te_{key}.safetensors")
            if stored is not None:
                self.memory[key] = stored
                self.hits += 1
                return stored
        self.misses += 1
        outputs = {name: tensor.detach().cpu() for name, tensor in encode().items()}
        self.memory[key] = outputs
        if self.folder is not None:
            _save(self.folder / f"te_{key}.safetensors", outputs)
        return outputs
