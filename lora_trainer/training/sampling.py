"""Sample images during training and test grids after it, with a diffusers pipeline made from
the bundle's own modules (no second copy of any weight; adapters in the modules apply)."""

from typing import List, Optional

import torch


def make_pipeline(bundle):
    """A text-to-image pipeline sharing the bundle's UNet, VAE, text encoders and tokenizers."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler.from_config(bundle.noise_scheduler.config, timestep_spacing="trailing")
    if bundle.family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=bundle.vae, text_encoder=bundle.text_encoders[0], text_encoder_2=bundle.text_encoders[1],
            tokenizer=bundle.tokenizers[0], tokenizer_2=bundle.tokenizers[1], unet=bundle.unet, scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=bundle.vae, text_encoder=bundle.text_encoders[0], tokenizer=bundle.tokenizers[0], unet=bundle.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _prompt_embeds(bundle, prompt: str, negative: str, clip_skip: int, device, dtype) -> dict:
    """Prompt conditioning computed exactly as in training (chunks, clip skip), not by the pipeline."""
    from lora_trainer.models.conditioning import encode_text

    cond = encode_text(bundle.text_encoders, bundle.tokenizers, bundle.family, [prompt, negative or ""], clip_skip)
    hidden = cond.hidden_states.to(device, dtype)
    out = {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:]}
    if cond.pooled is not None:
        pooled = cond.pooled.to(device, dtype)
        out.update(pooled_prompt_embeds=pooled[:1], negative_pooled_prompt_embeds=pooled[1:])
    return out


@torch.no_grad()
def render(bundle, prompts: List[str], *, seed: int, steps: int, width: int, height: int, cfg_scale: float = 7.0,
           negative_prompt: str = "", clip_skip: int = 1, device: Optional[torch.device] = None) -> List:
    """One PIL image per prompt; the same seed for each prompt, so grids compare like with like."""
    pipe = make_pipeline(bundle)
    pipe.set_progress_bar_config(disable=True)
    device = device or next(bundle.unet.parameters()).device
    images = []
    was_training = bundle.unet.training
    bundle.unet.eval()
    try:
        for prompt in prompts:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            latents = torch.randn((1, bundle.unet.config.in_channels, height // 8, width // 8), generator=generator)
            dtype = next(bundle.unet.parameters()).dtype
            kwargs = dict(num_inference_steps=steps, guidance_scale=cfg_scale, width=width, height=height,
                          latents=latents.to(device, dtype), **_prompt_embeds(bundle, prompt, negative_prompt, clip_skip, device, dtype))
            images.append(pipe(**kwargs).images[0])
    finally:
        bundle.unet.train(was_training)
    return images
