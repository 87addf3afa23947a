"""Named presets: partial configs with the defaults users converge on, applied over the defaults.

A preset sets only the keys it cares about; anything else keeps its default (or the user's
file/overrides, which are applied after the preset).
"""

from typing import Any, Dict

PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "SD1.5 character": {
        "dataset": {"resolution": 512, "keep_tokens": 1, "shuffle_tags": True, "flip": False},
        "network": {"type": "lora", "rank": 16, "alpha": 8, "train_text_encoder": True},
        "train": {"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 1500,
                  "batch_size": 2, "min_snr_gamma": 5.0},
    },
    "SD1.5 style": {
        "dataset": {"resolution": 512, "keep_tokens": 0, "shuffle_tags": True, "flip": True},
        "network": {"type": "locon", "rank": 32, "alpha": 16, "conv_rank": 16, "conv_alpha": 8, "train_text_encoder": True},
        "train": {"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 3000,
                  "batch_size": 2, "min_snr_gamma": 5.0, "noise_offset": 0.05},
    },
    "SDXL character": {
        "dataset": {"resolution": 1024, "max_bucket_reso": 2048, "min_bucket_reso": 512, "cache_text_encoder_outputs": True, "keep_tokens": 1},
        "network": {"type": "lora", "rank": 32, "alpha": 16, "train_text_encoder": False},
        "train": {"unet_lr": 1e-4, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 2000, "batch_size": 1,
                  "mixed_precision": "bf16", "gradient_checkpointing": True, "min_snr_gamma": 5.0},
    },
    "Low memory": {
        "dataset": {"cache_latents": True, "cache_text_encoder_outputs": True},
        "network": {"rank": 8, "alpha": 4, "train_text_encoder": False},
        "train": {"batch_size": 1, "gradient_checkpointing": True, "optimizer": "adafactor", "mixed_precision": "fp16"},
    },
}


def preset(name: str) -> Dict[str, Dict[str, Any]]:
    from lora_trainer.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return {section: dict(values) for section, values in PRESETS[name].items()}
