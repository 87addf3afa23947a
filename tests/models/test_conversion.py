"""Our key maps agree with diffusers' own single-file loader, tensor for tensor and output for output."""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, load_single_file_checkpoint
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from lora_trainer.models.checkpoint_io import read_checkpoint
from lora_trainer.models.detect import normalize_keys
from lora_trainer.models.diffusers_folder import write_diffusers_configs
from lora_trainer.models.families import ModelConfig
from lora_trainer.models.layout import load_modules

# Also run on Forge's pins: transformers 4.46 changes CLIP internals this layer depends on.
pytestmark = pytest.mark.both_profiles


def _diffusers_reference(path, config, folder):
    """Load the same file with diffusers' independent conversion code (offline, config folder)."""
    write_diffusers_configs(config, folder)
    unet = UNet2DConditionModel.from_single_file(str(path), config=str(folder), subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_single_file(str(path), config=str(folder), subfolder="vae", local_files_only=True)
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    encoders = []
    for index, spec in enumerate(config.text_encoders):
        cls = CLIPTextModelWithProjection if spec["with_projection"] else CLIPTextModel
        sub = "text_encoder" if index == 0 else f"text_encoder_{index + 1}"
        encoders.append(create_diffusers_clip_model_from_ldm(cls, checkpoint, subfolder=sub, config=str(folder), local_files_only=True))
    return unet, vae, encoders


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_conversion_matches_diffusers_single_file_loader(family, demo_checkpoints, tmp_path):
    path = demo_checkpoints[family]
    state, metadata = read_checkpoint(path)
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    ours = load_modules(config, normalize_keys(state))
    theirs = _diffusers_reference(path, config, tmp_path / "config")

    our_unet, our_vae, our_tes = ours
    ref_unet, ref_vae, ref_tes = theirs
    for name, a, b in [("unet", our_unet, ref_unet), ("vae", our_vae, ref_vae)] + [
        (f"text encoder {i}", x, y) for i, (x, y) in enumerate(zip(our_tes, ref_tes))
    ]:
        mine, reference = a.state_dict(), b.state_dict()
        assert set(mine) == set(reference), f"{family} {name}: key sets differ"
        different = [k for k in reference if not torch.equal(mine[k], reference[k])]
        assert not different, f"{family} {name}: tensors differ: {different[:5]}"

    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, config.unet["cross_attention_dim"])
    extra = {}
    if family == "sdxl":
        pooled_dim = config.text_encoders[1]["config"]["projection_dim"]
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled_dim), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    with torch.no_grad():
        out_ours = our_unet(latents, 500, context, **extra).sample
        out_ref = ref_unet(latents, 500, context, **extra).sample
        assert torch.allclose(out_ours, out_ref, atol=1e-6), "UNet outputs differ"
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.allclose(our_vae.encode(image).latent_dist.mean, ref_vae.encode(image).latent_dist.mean, atol=1e-6)
        assert torch.allclose(our_vae.decode(latents).sample, ref_vae.decode(latents).sample, atol=1e-6)
        ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])
        for ours_te, ref_te in zip(our_tes, ref_tes):
            a, b = ours_te(ids, output_hidden_states=True), ref_te(ids, output_hidden_states=True)
            assert torch.allclose(a.hidden_states[-2], b.hidden_states[-2], atol=1e-6)
            assert torch.allclose(a[0], b[0], atol=1e-6)


def test_original_layout_round_trip_is_exact(demo_checkpoints):
    """Loading then writing back the original layout gives the same tensors (what demo files rely on)."""
    from lora_trainer.models.layout import to_original_layout

    state, metadata = read_checkpoint(demo_checkpoints["sdxl"])
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    back = to_original_layout(config, *load_modules(config, normalize_keys(state)))
    assert back, "nothing written back"
    for key, tensor in back.items():
        assert torch.equal(tensor, state[key]), key
