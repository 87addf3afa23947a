"""Kohya module names: `lora_unet_...`, `lora_te_...`, `lora_te1_...`, `lora_te2_...`.

SD1/SD2 UNet names are the diffusers path with `.` -> `_`; SDXL UNet names use the original
layout (`lora_unet_input_blocks_4_1_...`), as kohya sd-scripts writes them. Text encoders are
the transformers path (always starting `text_model_`).
"""

from typing import Dict, Iterable, Tuple

from torch import nn

from lora_trainer.models.families import ModelConfig
from lora_trainer.models.keymap_unet import unet_path_to_original

UNET = "unet"


def text_encoder_component(index: int) -> str:
    return f"text_encoder_{index}"


def text_encoder_prefix(family: str, index: int) -> str:
    if family == "sdxl":
        return f"lora_te{index + 1}_"
    return "lora_te_"


def kohya_name(config: ModelConfig, component: str, path: str) -> str:
    """The kohya module name of `path` inside `component` ("unet" or "text_encoder_<i>")."""
    if component == UNET:
        if config.family == "sdxl":
            path = unet_path_to_original(path, config.unet)
        return "lora_unet_" + path.replace(".", "_")
    index = int(component.rsplit("_", 1)[1])
    return text_encoder_prefix(config.family, index) + path.replace(".", "_")


def adaptable_layers(module: nn.Module) -> Iterable[Tuple[str, nn.Module]]:
    for path, child in module.named_modules():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            yield path, child


def name_index(config: ModelConfig, components: Dict[str, nn.Module]) -> Dict[str, Tuple[str, str]]:
    """{kohya name: (component, module path)} for every Linear/Conv layer of the components.

    For SDXL the UNet also answers to diffusers-style names, which some trainers write and
    A1111/ComfyUI accept.
    """
    index: Dict[str, Tuple[str, str]] = {}
    for component, module in components.items():
        for path, _ in adaptable_layers(module):
            index[kohya_name(config, component, path)] = (component, path)
            if component == UNET and config.family == "sdxl":
                index.setdefault("lora_unet_" + path.replace(".", "_"), (component, path))
    return index
