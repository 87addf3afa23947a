"""Which model a state dict holds, and the WebUI's key variants normalised away.

A1111's live model adds `.wrapped` wrappers (`cond_stage_model.wrapped.`, embedding
`token_embedding.wrapped.weight`) and, for SDXL, exposes every text-encoder key twice
(`conditioner.*` and `cond_stage_model.*`). `normalize_keys` maps all of these onto the file
layout without touching the tensors.
"""

from typing import Dict, Mapping

import torch

from lora_trainer.errors import CheckpointError

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD1_TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
SD2_TE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SDXL_TE1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
SDXL_TE2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
REFINER_TE = "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight"


def _fix_clip_l_prefix(key: str) -> str:
    """Old SD1 files store CLIP-L without `text_model.` (transformers < 4.22 naming)."""
    for prefix in ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."):
        if key.startswith(prefix) and not key.startswith(prefix + "text_model."):
            return prefix + "text_model." + key[len(prefix):]
    return key


def normalize_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Same tensors, file-layout names: `.wrapped` removed, SDXL duplicates dropped."""
    has_conditioner = any(k.startswith("conditioner.") for k in state_dict)
    out: Dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("cond_stage_model.embedders."):
            if has_conditioner:
                continue  # SDXL in the WebUI: the same module registered twice
            key = "conditioner." + key[len("cond_stage_model."):]
        key = key.replace(".wrapped.", ".")
        out[_fix_clip_l_prefix(key)] = tensor
    return out


def _describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    sample = sorted(state_dict)[:3]
    return f"{len(state_dict)} tensors, e.g. {', '.join(sample)}" if sample else "no tensors"


def detect_family(state_dict: Mapping[str, torch.Tensor]) -> str:
    """`sd1`, `sd2` or `sdxl` for a normalised state dict; CheckpointError for anything else."""
    keys = state_dict.keys()
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        raise CheckpointError("this is a LoRA file, not a model checkpoint; choose a Stable Diffusion checkpoint")
    if any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        raise CheckpointError("this is a Stable Diffusion 3 checkpoint; SD3 is not supported (SD1.x, SD2.x, SDXL are)")
    if any(".double_blocks." in k or k.startswith("double_blocks.") for k in keys):
        raise CheckpointError("this is a Flux checkpoint; Flux is not supported (SD1.x, SD2.x, SDXL are)")
    if REFINER_TE in state_dict:
        raise CheckpointError("this is an SDXL refiner; train on an SDXL base model (or SD1.x/SD2.x) instead")
    if UNET_IN not in state_dict:
        raise CheckpointError(f"no Stable Diffusion UNet found ({_describe(state_dict)}); is this a full checkpoint?")
    in_channels = state_dict[UNET_IN].shape[1]
    if in_channels == 9:
        raise CheckpointError("this is an inpainting model; LoRA training needs a regular (4-channel) checkpoint")
    if in_channels != 4:
        raise CheckpointError(f"the UNet takes {in_channels} input channels (instruct-pix2pix or another variant); only 4-channel models are supported")
    if SDXL_TE1 in state_dict and SDXL_TE2 in state_dict:
        return "sdxl"
    if SD2_TE in state_dict:
        return "sd2"
    if SD1_TE in state_dict:
        return "sd1"
    raise CheckpointError(f"the text encoder is missing or of an unknown kind ({_describe(state_dict)}); a full SD1/SD2/SDXL checkpoint is needed")
