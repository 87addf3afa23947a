"""Base models as diffusers/transformers modules: `load_bundle(source) -> ModelBundle`."""

from lora_trainer.models.bundle import ModelBundle, load_bundle

__all__ = ["ModelBundle", "load_bundle"]
