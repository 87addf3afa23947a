"""Text-encoder names: transformers `CLIPTextModel` keys <-> the original layouts.

CLIP-L (SD1, SDXL TE1) is stored in the original checkpoint as a transformers model already
(`...transformer.text_model.*`). OpenCLIP (SD2, SDXL TE2) has its own names and a fused
attention input projection (`in_proj_weight` = q, k, v stacked), which the loader splits
into three views; its `text_projection` is stored transposed.
"""

import re
from dataclasses import dataclass
from typing import Optional

from lora_trainer.models.families import CLIP_L, OPEN_CLIP

# Where each family keeps its text encoders in the original single-file layout.
TEXT_ENCODER_PREFIXES = {
    "sd1": ["cond_stage_model."],
    "sd2": ["cond_stage_model."],
    "sdxl": ["conditioner.embedders.0.", "conditioner.embedders.1."],
}


@dataclass(frozen=True)
class Source:
    """Where a target tensor comes from: a source key plus the view that turns it into the target."""

    key: str
    chunk: Optional[int] = None  # q/k/v: chunk i of 3 along dim 0
    transpose: bool = False
    reshape_conv: bool = False  # [C, C, 1, 1] <-> [C, C]


_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)$")
_OPEN_CLIP_LAYER_RENAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def clip_l_source(key: str) -> Source:
    """CLIP-L keys are transformers keys already (under `transformer.`)."""
    return Source("transformer." + key)


def open_clip_source(key: str) -> Source:
    """Map a transformers CLIP key to its OpenCLIP original (relative to the embedder)."""
    if key in _OPEN_CLIP_TOP:
        return Source("model." + _OPEN_CLIP_TOP[key])
    if key == "text_projection.weight":
        return Source("model.text_projection", transpose=True)
    match = _LAYER.match(key)
    if match:
        layer, rest = match.group(1), match.group(2)
        base = f"model.transformer.resblocks.{layer}."
        if rest.startswith("self_attn.") and rest.split(".")[1] in _QKV:
            projection, leaf = rest.split(".")[1], rest.split(".")[2]
            return Source(f"{base}attn.in_proj_{leaf}", chunk=_QKV[projection])
        for new, old in _OPEN_CLIP_LAYER_RENAMES.items():
            if rest.startswith(new + "."):
                return Source(base + old + rest[len(new):])
    raise KeyError(f"no OpenCLIP name for text-encoder key {key!r}")


def text_encoder_source(kind: str, key: str) -> Source:
    if kind == CLIP_L:
        return clip_l_source(key)
    if kind == OPEN_CLIP:
        return open_clip_source(key)
    raise ValueError(f"unknown text encoder kind {kind!r}")
