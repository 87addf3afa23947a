"""UNet names: diffusers `UNet2DConditionModel` paths <-> the original (LDM/SGM) layout.

One pure function, `unet_path_to_original`, works for parameter keys and for module paths
alike, so the same rule converts a checkpoint and names the LoRA modules of SDXL files
(`lora_unet_input_blocks_4_1_...`). The tensors themselves need no reshaping: every UNet
weight has the same shape in both layouts.
"""

from typing import Dict, List

_RESNET_RENAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _resnet_inner(rest: List[str]) -> str:
    if not rest:
        return ""
    head = _RESNET_RENAMES.get(rest[0], rest[0])
    return _join(head, ".".join(rest[1:]))


def _up_block_has_attention(config: Dict, block: int) -> bool:
    return "CrossAttn" in config["up_block_types"][block]


def unet_path_to_original(path: str, config: Dict) -> str:
    """Map a diffusers UNet key or module path to its original-layout name (without prefix).

    `down_blocks.1.attentions.0.proj_in.weight` -> `input_blocks.4.1.proj_in.weight` for a
    UNet with two layers per block. Raises KeyError for a path that has no counterpart.
    """
    for new, old in _TOP_LEVEL.items():
        if path == new or path.startswith(new + "."):
            return old + path[len(new):]
    parts = path.split(".")
    per_level = config["layers_per_block"]
    head = parts[0]
    if head == "down_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "resnets":
            return _join(f"input_blocks.{1 + block * (per_level + 1) + index}.0", _resnet_inner(rest))
        if kind == "attentions":
            return _join(f"input_blocks.{1 + block * (per_level + 1) + index}.1", ".".join(rest))
        if kind == "downsamplers" and rest[:1] == ["conv"]:
            return _join(f"input_blocks.{(block + 1) * (per_level + 1)}.0.op", ".".join(rest[1:]))
    elif head == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        if kind == "resnets":
            return _join(f"middle_block.{2 * index}", _resnet_inner(rest))
        if kind == "attentions":
            return _join("middle_block.1", ".".join(rest))
    elif head == "up_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "resnets":
            return _join(f"output_blocks.{block * (per_level + 1) + index}.0", _resnet_inner(rest))
        if kind == "attentions":
            return _join(f"output_blocks.{block * (per_level + 1) + index}.1", ".".join(rest))
        if kind == "upsamplers" and rest[:1] == ["conv"]:
            slot = 2 if _up_block_has_attention(config, block) else 1
            return _join(f"output_blocks.{block * (per_level + 1) + per_level}.{slot}.conv", ".".join(rest[1:]))
    raise KeyError(f"no original-layout name for UNet path {path!r}")
