"""Original single-file layout <-> diffusers/transformers modules, without copying weights.

`build_modules` constructs the modules on the meta device (no memory), and `assign_weights`
fills them with views of the source tensors through `load_state_dict(..., assign=True)`, so
every parameter shares storage with the state dict it came from. `to_original_layout` goes
the other way (used by the demo-model generator and for saving).
"""

from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

from lora_trainer.errors import CheckpointError
from lora_trainer.models.families import ModelConfig
from lora_trainer.models.keymap_text import TEXT_ENCODER_PREFIXES, Source, text_encoder_source
from lora_trainer.models.keymap_unet import unet_path_to_original
from lora_trainer.models.keymap_vae import vae_key_to_original

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# Buffers we always rebuild ourselves: checkpoints store them inconsistently (some as floats).
_REBUILT_BUFFERS = ("text_model.embeddings.position_ids",)


def build_modules(config: ModelConfig) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
    """UNet, VAE and text encoders of `config`, with every tensor on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config.unet)
        vae = AutoencoderKL(**config.vae)
        encoders = []
        for spec in config.text_encoders:
            cls = CLIPTextModelWithProjection if spec["with_projection"] else CLIPTextModel
            encoders.append(cls(CLIPTextConfig(**spec["config"])))
    return unet, vae, encoders


def part_sources(config: ModelConfig, unet: nn.Module, vae: nn.Module, encoders: List[nn.Module]) -> List[Tuple[str, nn.Module, Dict[str, Source]]]:
    """For each part: (name, module, {module key: Source with the full original key})."""
    parts = []
    unet_map = {k: Source(UNET_PREFIX + unet_path_to_original(k, config.unet)) for k in unet.state_dict()}
    parts.append(("unet", unet, unet_map))
    vae_map = {}
    for key in vae.state_dict():
        original, reshape = vae_key_to_original(key, config.vae)
        vae_map[key] = Source(VAE_PREFIX + original, reshape_conv=reshape)
    parts.append(("vae", vae, vae_map))
    prefixes = TEXT_ENCODER_PREFIXES[config.family]
    for index, (spec, encoder) in enumerate(zip(config.text_encoders, encoders)):
        prefix = prefixes[index]
        te_map = {}
        for key in encoder.state_dict():
            if key in _REBUILT_BUFFERS:
                continue
            source = text_encoder_source(spec["kind"], key)
            te_map[key] = Source(prefix + source.key, source.chunk, source.transpose, source.reshape_conv)
        parts.append((f"text_encoder_{index}", encoder, te_map))
    return parts


def _view(tensor: torch.Tensor, source: Source, shape: torch.Size) -> torch.Tensor:
    if source.chunk is not None:
        tensor = tensor.chunk(3, dim=0)[source.chunk]
    if source.transpose:
        tensor = tensor.t()
    if source.reshape_conv:
        tensor = tensor.reshape(shape)
    return tensor


def collect_views(name: str, module: nn.Module, sources: Dict[str, Source], state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """{module key: view of the source tensor}, after checking that every key exists with its shape."""
    expected = module.state_dict(keep_vars=True)
    missing = [s.key for s in sources.values() if s.key not in state_dict]
    if missing:
        raise CheckpointError(
            f"the {name.replace('_', ' ')} is incomplete: {len(missing)} weights are missing, "
            f"e.g. {', '.join(sorted(set(missing))[:4])}"
        )
    tensors, mismatched = {}, []
    for key, source in sources.items():
        tensor = _view(state_dict[source.key], source, expected[key].shape)
        if tensor.shape != expected[key].shape:
            mismatched.append(f"{source.key} is {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
        tensors[key] = tensor
    if mismatched:
        raise CheckpointError(
            f"the {name.replace('_', ' ')} does not match the expected architecture "
            f"({len(mismatched)} tensors differ), e.g. {'; '.join(mismatched[:3])}"
        )
    return tensors


def assign_weights(name: str, module: nn.Module, sources: Dict[str, Source], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Fill a meta-device module with views of `state_dict`; a clear error on what is missing."""
    tensors = collect_views(name, module, sources, state_dict)
    module.load_state_dict(tensors, strict=False, assign=True)
    rebuild_buffers(module)
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"the {name.replace('_', ' ')} has tensors no key filled: {', '.join(leftover[:4])}")


def rebuild_buffers(module: nn.Module) -> None:
    """Recreate buffers that are not (reliably) in checkpoints: CLIP's position ids."""
    persistent = set(module.state_dict(keep_vars=True))
    for name, buffer in list(module.named_buffers()):
        if name.endswith("position_ids"):
            owner = module.get_submodule(name.rsplit(".", 1)[0])
            ids = torch.arange(buffer.shape[-1]).expand((1, -1))
            owner.register_buffer("position_ids", ids, persistent=name in persistent)


def load_modules(config: ModelConfig, state_dict: Mapping[str, torch.Tensor]) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
    """Modules of `config` whose weights are views of `state_dict` (zero copy)."""
    unet, vae, encoders = build_modules(config)
    for name, module, sources in part_sources(config, unet, vae, encoders):
        assign_weights(name, module, sources, state_dict)
        module.requires_grad_(False)
        module.eval()
    return unet, vae, encoders


def verify_layout(config: ModelConfig, state_dict: Mapping[str, torch.Tensor]) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
    """Check keys and shapes only (works on meta tensors); returns the empty modules."""
    unet, vae, encoders = build_modules(config)
    for name, module, sources in part_sources(config, unet, vae, encoders):
        collect_views(name, module, sources, state_dict)
    return unet, vae, encoders


def to_original_layout(config: ModelConfig, unet: nn.Module, vae: nn.Module, encoders: List[nn.Module]) -> Dict[str, torch.Tensor]:
    """The original single-file state dict of these modules (contiguous copies, ready to save)."""
    out: Dict[str, torch.Tensor] = {}
    fused: Dict[str, List[torch.Tensor]] = {}
    for _, module, sources in part_sources(config, unet, vae, encoders):
        state = module.state_dict()
        for key, source in sources.items():
            tensor = state[key]
            if source.chunk is not None:
                fused.setdefault(source.key, [None, None, None])[source.chunk] = tensor
                continue
            if source.transpose:
                tensor = tensor.t()
            if source.reshape_conv:
                tensor = tensor.reshape(*tensor.shape, 1, 1)
            out[source.key] = tensor.contiguous().clone()
    for key, chunks in fused.items():
        out[key] = torch.cat(chunks, dim=0).contiguous()
    return out
