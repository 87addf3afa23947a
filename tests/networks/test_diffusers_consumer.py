"""diffusers, an independent consumer, loads our LoRA/LoCon files and gets the trained outputs.

diffusers' `load_lora_weights` needs its PEFT backend (transformers >= 4.34), so this runs in
the Forge profile only.
"""

import pytest
import torch

from lora_trainer.models import load_bundle
from lora_trainer.networks.adapters import NetworkSpec, inject
from lora_trainer.networks.export import kohya_state_dict, save_lora
from lora_trainer.training.sampling import make_pipeline

pytestmark = pytest.mark.forge_only


def _relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl"])
@pytest.mark.parametrize("network", ["lora", "locon"])
def test_diffusers_load_lora_weights_reproduces_the_trained_model(family, network, tmp_path):
    from lora_trainer.models.demo import write_demo_checkpoint

    bundle = load_bundle(write_demo_checkpoint(family, tmp_path / "base.safetensors", seed=4))
    components = {"unet": bundle.unet, **{f"text_encoder_{i}": e for i, e in enumerate(bundle.text_encoders)}}
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, bundle.unet.config.cross_attention_dim, generator=generator)
    extra = {}
    if bundle.family == "sdxl":
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 48, generator=generator), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])

    adapters = inject(components, NetworkSpec(type=network, rank=4, alpha=2, conv_rank=2, conv_alpha=3))
    try:
        with torch.no_grad():
            for component in adapters.tuners:
                for param in adapters.parameters(component):
                    param.add_(torch.randn(param.shape, generator=generator) * 0.05)
            trained_unet = bundle.unet(latents, 10, context, **extra).sample
            trained_te = [e(ids)[0] for e in bundle.text_encoders]
        path = save_lora(tmp_path / "lora.safetensors", kohya_state_dict(adapters, bundle.config, "fp32"), {"ss_output_name": "lora"})
    finally:
        adapters.remove()
    with torch.no_grad():
        base_unet = bundle.unet(latents, 10, context, **extra).sample
    assert _relative(trained_unet, base_unet) > 1e-3  # the LoRA really changes the output

    pipe = make_pipeline(bundle)
    pipe.load_lora_weights(str(path), adapter_name="ours")
    with torch.no_grad():
        theirs_unet = pipe.unet(latents, 10, context, **extra).sample
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if bundle.family == "sdxl" else [])
        theirs_te = [e(ids)[0] for e in encoders]
    assert _relative(theirs_unet, trained_unet) < 1e-4
    for ours, theirs in zip(trained_te, theirs_te):
        assert _relative(theirs, ours) < 1e-4
