"""`inspect` for LoRA files: what it is, and with `check`, whether every key names a real module.

The check builds the family's architecture on the meta device (no memory) and maps each kohya
module name to a layer, the way A1111/ComfyUI would; it also compares shapes. A LoRA trained
on a non-standard base (our tiny test models) records that base's architecture in its
metadata (`lora_trainer.base_config`), and is checked against it.
"""

from pathlib import Path
from typing import Dict, List, Optional

from lora_trainer.models.families import ModelConfig, real_config
from lora_trainer.networks.kohya_names import name_index
from lora_trainer.networks.load import KohyaNetwork, read_kohya

BASE_CONFIG_KEY = "lora_trainer.base_config"


def lora_family(network: KohyaNetwork) -> Optional[str]:
    version = network.metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or network.metadata.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    names = network.modules.keys()
    if any(n.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_")) for n in names):
        return "sdxl"
    for name, tensors in network.modules.items():
        if name.startswith("lora_te_") and name.endswith("_q_proj") and "lora_down.weight" in tensors:
            return "sd2" if tensors["lora_down.weight"].shape[1] == 1024 else "sd1"
    return None


def base_config(network: KohyaNetwork, family: str) -> ModelConfig:
    raw = network.metadata.get(BASE_CONFIG_KEY)
    return ModelConfig.from_json(raw) if raw else real_config(family)


def _expected_shape(tensors: Dict, layer) -> Optional[tuple]:
    """The base weight shape a module's tensors imply (LoRA/LoCon only; others are not shape-checked)."""
    down, up = tensors.get("lora_down.weight"), tensors.get("lora_up.weight")
    if down is None or up is None:
        return None
    return (up.shape[0], down.shape[1]) + tuple(down.shape[2:])


def check_keys(network: KohyaNetwork, family: str) -> List[str]:
    """Problems: module names with no layer in the architecture, or shapes that do not fit."""
    from lora_trainer.models.layout import build_modules

    config = base_config(network, family)
    unet, _, encoders = build_modules(config)
    components = {"unet": unet, **{f"text_encoder_{i}": e for i, e in enumerate(encoders)}}
    index = name_index(config, components)
    layers = {name: components[c].get_submodule(p) for name, (c, p) in index.items()}
    problems = []
    for name, tensors in sorted(network.modules.items()):
        if name not in layers:
            problems.append(f"{name}: no such module in a {family} model")
            continue
        implied = _expected_shape(tensors, layers[name])
        actual = tuple(layers[name].weight.shape)
        if implied is not None and implied != actual[: len(implied)]:
            problems.append(f"{name}: shaped for a {implied} weight, the model's is {actual}")
    return problems


def inspect_lora(path: Path, check: bool = False) -> Dict:
    network = read_kohya(path)
    family = lora_family(network)
    unet = sum(1 for n in network.modules if n.startswith("lora_unet_"))
    report = {
        "kind": "lora",
        "file": str(path),
        "family": family,
        "network": network.network_type + ("+dora" if network.dora else ""),
        "rank": network.rank,
        "alpha": network.alpha,
        "modules": {"unet": unet, "text_encoder": len(network.modules) - unet},
        "metadata": {k: v for k, v in network.metadata.items() if k != BASE_CONFIG_KEY},
    }
    if check:
        report["unmatched"] = check_keys(network, family) if family else ["cannot tell the base model family from this file"]
    return report
