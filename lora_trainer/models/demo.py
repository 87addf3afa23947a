"""Tiny random checkpoints in the original single-file layout, for demos and tests.

Every key name is a real one of its family; only widths and depths shrink. All tensors are
random (the original code zero-initialises output layers, which would hide mapping errors and
make LoRAs on them learn nothing), deterministic for a seed. The architecture goes into the
file's metadata so that `load_bundle` can rebuild exactly this model.
"""

import math
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from lora_trainer.models.families import OPEN_CLIP, ModelConfig, tiny_config
from lora_trainer.models.keymap_text import TEXT_ENCODER_PREFIXES
from lora_trainer.models.layout import build_modules, rebuild_buffers, to_original_layout

DEMO_FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")


def split_demo_family(name: str) -> Tuple[str, str]:
    """`sd2-v` -> (`sd2`, `v_prediction`); others are epsilon models."""
    if name not in DEMO_FAMILIES:
        raise ValueError(f"unknown demo family {name!r}; choose one of {', '.join(DEMO_FAMILIES)}")
    if name == "sd2-v":
        return "sd2", "v_prediction"
    return name, "epsilon"


def _random_like(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Fan-in scaled normals for weights; values near 1 for norm scales; small biases."""
    noise = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        fan_in = max(1, math.prod(shape[1:]))
        return noise / math.sqrt(fan_in)
    if name.endswith("weight") and ("norm" in name or "ln_" in name):
        return 1.0 + 0.1 * noise
    return 0.05 * noise


def random_modules(config: ModelConfig, seed: int = 0) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
    """The modules of `config` with deterministic random fp32 weights."""
    generator = torch.Generator().manual_seed(seed)
    modules = build_modules(config)
    unet, vae, encoders = modules
    for module in [unet, vae] + encoders:
        state = {}
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if name.endswith("position_ids"):
                state[name] = torch.arange(tensor.shape[-1]).expand(1, -1).clone()
            else:
                state[name] = _random_like(name, tensor.shape, generator)
        module.load_state_dict(state, strict=False, assign=True)
        rebuild_buffers(module)
        module.requires_grad_(False)
        module.eval()
    return unet, vae, encoders


def _dropped_open_clip_layers(prefix: str, spec: Dict, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """OpenCLIP resblocks that our text encoder leaves out (SD2 uses the penultimate layer)."""
    cfg = spec["config"]
    width, inner = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {
        "ln_1.weight": (width,), "ln_1.bias": (width,),
        "attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
        "ln_2.weight": (width,), "ln_2.bias": (width,),
        "mlp.c_fc.weight": (inner, width), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (width, inner), "mlp.c_proj.bias": (width,),
    }
    out = {}
    first = cfg["num_hidden_layers"]
    for layer in range(first, first + spec.get("drop_last_layers", 0)):
        for leaf, shape in shapes.items():
            out[f"{prefix}model.transformer.resblocks.{layer}.{leaf}"] = _random_like(leaf, torch.Size(shape), generator)
    return out


def _original_extras(config: ModelConfig, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Tensors real files carry that our modules do not use (they must be tolerated)."""
    extras: Dict[str, torch.Tensor] = {}
    prefixes = TEXT_ENCODER_PREFIXES[config.family]
    for spec, prefix in zip(config.text_encoders, prefixes):
        if spec["kind"] != OPEN_CLIP:
            extras[prefix + "transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
            continue
        extras.update(_dropped_open_clip_layers(prefix, spec, generator))
        extras[prefix + "model.logit_scale"] = torch.tensor(4.6052)
        if not spec["with_projection"]:
            width = spec["config"]["hidden_size"]
            extras[prefix + "model.text_projection"] = _random_like("text_projection", torch.Size((width, width)), generator)
    if config.family != "sdxl":
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        extras["betas"] = betas.float()
        extras["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    return extras


def demo_state_dict(family: str, seed: int = 0) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(original-layout state dict, safetensors metadata) of a tiny random model."""
    base_family, prediction_type = split_demo_family(family)
    config = tiny_config(base_family)
    modules = random_modules(config, seed)
    state = to_original_layout(config, *modules)
    state.update(_original_extras(config, torch.Generator().manual_seed(seed + 1)))
    metadata = {
        "lora_trainer.config": config.to_json(),
        "lora_trainer.prediction_type": prediction_type,
        "lora_trainer.demo": f"tiny random {family} model, seed {seed}",
    }
    return state, metadata


def write_demo_checkpoint(family: str, out: Path, seed: int = 0) -> Path:
    """Write a tiny `.safetensors` checkpoint (atomically) and return its path."""
    from safetensors.torch import save

    from lora_trainer.files import write_atomically

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state, metadata = demo_state_dict(family, seed)
    return write_atomically(out, save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))
