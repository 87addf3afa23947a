"""Architectures of the supported model families, as small config dicts (no hub, no download).

A `ModelConfig` holds the diffusers/transformers constructor arguments of each part. The real
families' configs are here; `tiny_config` shrinks widths and depths but keeps the real block
structure, so every key name of a tiny checkpoint is a real one.
"""

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

FAMILIES = ("sd1", "sd2", "sdxl")
PREDICTION_TYPES = ("epsilon", "v_prediction")

# Text-encoder kinds: how the original checkpoint stores them and how they pad.
CLIP_L = "clip_l"  # OpenAI CLIP ViT-L/14 text tower (SD1, SDXL TE1); pads with <|endoftext|>
OPEN_CLIP = "open_clip"  # OpenCLIP ViT-H (SD2) / ViT-bigG (SDXL TE2); pads with id 0 ("!")

_SD1_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "use_linear_projection": False,
}

_SD2_UNET = dict(
    _SD1_UNET,
    sample_size=96,
    attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024,
    use_linear_projection=True,
)

_SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "norm_num_groups": 32,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

_CLIP_L = {
    "kind": CLIP_L,
    "with_projection": False,
    "config": {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
}

# SD2 uses the penultimate layer of OpenCLIP ViT-H; like diffusers and kohya we build 23 layers
# and leave the unused last one out.
_OPEN_CLIP_H = {
    "kind": OPEN_CLIP,
    "with_projection": False,
    "drop_last_layers": 1,
    "config": {
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 512,
    },
}

_OPEN_CLIP_BIGG = {
    "kind": OPEN_CLIP,
    "with_projection": True,
    "drop_last_layers": 0,
    "config": {
        "vocab_size": 49408,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
}


@dataclass
class ModelConfig:
    """Constructor arguments of every part of one model; JSON-serialisable."""

    family: str
    unet: Dict[str, Any]
    vae: Dict[str, Any]
    text_encoders: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        data = json.loads(text)
        return cls(family=data["family"], unet=data["unet"], vae=data["vae"], text_encoders=data["text_encoders"])


def real_config(family: str) -> ModelConfig:
    """The full-size architecture of a family (SD1.x, SD2.x 512/768, SDXL base)."""
    if family == "sd1":
        return ModelConfig("sd1", copy.deepcopy(_SD1_UNET), copy.deepcopy(_VAE), [copy.deepcopy(_CLIP_L)])
    if family == "sd2":
        return ModelConfig("sd2", copy.deepcopy(_SD2_UNET), copy.deepcopy(_VAE), [copy.deepcopy(_OPEN_CLIP_H)])
    if family == "sdxl":
        vae = dict(copy.deepcopy(_VAE), sample_size=1024, scaling_factor=0.13025)
        return ModelConfig("sdxl", copy.deepcopy(_SDXL_UNET), vae, [copy.deepcopy(_CLIP_L), copy.deepcopy(_OPEN_CLIP_BIGG)])
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def tiny_config(family: str) -> ModelConfig:
    """A few-MB version of a family: same block structure and key names, small widths and depths."""
    cfg = real_config(family)
    # Different widths per kind, as in the real models (768 vs 1024/1280): diffusers' single-file
    # loader tells SDXL's two encoders apart by width.
    widths = {CLIP_L: 32, OPEN_CLIP: 48}
    for te in cfg.text_encoders:
        width = widths[te["kind"]]
        te["config"].update(hidden_size=width, intermediate_size=2 * width, num_attention_heads=4, projection_dim=width)
        te["config"]["num_hidden_layers"] = 3 - te.get("drop_last_layers", 0)
    unet = cfg.unet
    levels = len(unet["block_out_channels"])
    unet["block_out_channels"] = [32, 64, 64, 64][:levels]
    unet["norm_num_groups"] = 8
    unet["sample_size"] = 8
    unet["cross_attention_dim"] = sum(te["config"]["hidden_size"] for te in cfg.text_encoders)
    if family == "sd1":
        unet["attention_head_dim"] = 4
    else:
        unet["attention_head_dim"] = [2, 4, 4, 4][:levels]
    if family == "sdxl":
        unet["transformer_layers_per_block"] = [1, 2, 2]
        unet["addition_time_embed_dim"] = 8
        unet["projection_class_embeddings_input_dim"] = 6 * 8 + cfg.text_encoders[1]["config"]["projection_dim"]
    cfg.vae.update(block_out_channels=[32, 32, 64, 64], norm_num_groups=8, sample_size=64)
    return cfg
