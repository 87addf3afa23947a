"""Named presets (kept for older imports): the data and functions live in `lora_trainer.config.presets`."""

from lora_trainer.config.presets import PRESETS, apply_preset, list_presets, load_preset, preset, save_user_preset

__all__ = ["PRESETS", "preset", "load_preset", "apply_preset", "list_presets", "save_user_preset"]
