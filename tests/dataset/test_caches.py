"""Latent and text-encoder caches: reused only for the same image, VAE, bucket and flip."""

import torch

from lora_trainer.dataset.caches import LatentCache, TextEncoderCache, content_hash, vae_identity

from .files import png


class Encoder:
    """A real encode callable that counts its calls and returns distinct latents."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return torch.full((4, 8, 8), float(self.calls))


def test_latents_reused_only_for_the_same_key(tmp_path):
    image = png(tmp_path / "a.png", (64, 64))
    digest = content_hash(image)
    encode = Encoder()
    cache = LatentCache("vae-1", tmp_path / "cache")
    first = cache.get(digest, (64, 64), False, encode)
    assert torch.equal(cache.get(digest, (64, 64), False, encode), first) and encode.calls == 1
    cache.get(digest, (64, 64), True, encode)  # flipped
    cache.get(digest, (128, 64), False, encode)  # another bucket / resolution
    assert encode.calls == 3
    # a new process with the same VAE reads the disk cache; another VAE never does
    again = LatentCache("vae-1", tmp_path / "cache")
    assert torch.equal(again.get(digest, (64, 64), False, encode), first) and encode.calls == 3
    other = LatentCache("vae-2", tmp_path / "cache")
    assert not torch.equal(other.get(digest, (64, 64), False, encode), first) and encode.calls == 4


def test_edited_image_gets_new_latents_and_damaged_files_are_recomputed(tmp_path):
    image = png(tmp_path / "a.png", (64, 64), (1, 1, 1))
    before = content_hash(image)
    png(image, (64, 64), (2, 2, 2))
    assert content_hash(image) != before
    encode = Encoder()
    cache = LatentCache("vae", tmp_path / "cache")
    cache.get(before, (64, 64), False, encode)
    for path in (tmp_path / "cache").iterdir():
        path.write_bytes(b"garbage")
    fresh = LatentCache("vae", tmp_path / "cache")
    fresh.get(before, (64, 64), False, encode)
    assert encode.calls == 2 and not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def test_vae_identity_changes_with_weights():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    kwargs = dict(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                  latent_channels=4, norm_num_groups=8, layers_per_block=1)
    vae = AutoencoderKL(**kwargs)
    same = AutoencoderKL(**kwargs)
    same.load_state_dict(vae.state_dict())
    assert vae_identity(vae) == vae_identity(same)
    with torch.no_grad():
        for parameter in same.parameters():
            parameter.add_(0.5)
    assert vae_identity(vae) != vae_identity(same)


def test_text_encoder_cache_by_caption_and_encoder(tmp_path):
    calls = []

    def encode():
        calls.append(1)
        return {"hidden": torch.randn(77, 8), "pooled": torch.randn(8)}

    cache = TextEncoderCache("te-a|clip_skip=1", tmp_path)
    first = cache.get("a, b", encode)
    assert torch.equal(cache.get("a, b", encode)["hidden"], first["hidden"]) and len(calls) == 1
    cache.get("a, c", encode)
    assert len(calls) == 2
    assert torch.equal(TextEncoderCache("te-a|clip_skip=1", tmp_path).get("a, b", encode)["pooled"], first["pooled"])
    TextEncoderCache("te-a|clip_skip=2", tmp_path).get("a, b", encode)
    assert len(calls) == 3
