"""`load_bundle`: any supported model source -> diffusers/transformers modules, zero copy.

Sources: a single-file checkpoint (`.safetensors`, or `.ckpt` through `weights_only`), a
diffusers folder, or a state-dict mapping such as the WebUI's live model. For mappings and
files the modules' parameters are views of the source tensors, so no second copy of the
weights is ever made.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from lora_trainer.errors import CheckpointError
from lora_trainer.models import checkpoint_io
from lora_trainer.models.detect import detect_family, normalize_keys
from lora_trainer.models.families import FAMILIES, PREDICTION_TYPES, ModelConfig, real_config
from lora_trainer.models.layout import load_modules

logger = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "lora_trainer.config"


@dataclass
class ModelBundle:
    """Everything training needs from one base model."""

    family: str
    prediction_type: str
    config: ModelConfig
    unet: nn.Module
    vae: nn.Module
    text_encoders: List[nn.Module]
    tokenizers: List[Any]
    noise_scheduler: Any
    name: str = ""  # checkpoint file stem, for metadata
    notes: List[str] = field(default_factory=list)  # warnings worth showing the user
    # Tensors of whoever owns these weights (the WebUI's model) that share our storages: when the
    # training moves a frozen module's storage (training/offload.py), they move with it.
    storage_owners: List[torch.Tensor] = field(default_factory=list)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def parameter_counts(self) -> Dict[str, Any]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {"unet": count(self.unet), "vae": count(self.vae), "text_encoders": [count(m) for m in self.text_encoders]}

    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def make_noise_scheduler(prediction_type: str):
    """The training schedule shared by SD1, SD2 and SDXL (scaled linear betas, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _check_choice(value: Optional[str], allowed, what: str) -> Optional[str]:
    if value in (None, "", "auto"):
        return None
    if value not in allowed:
        raise CheckpointError(f"{what} must be one of {', '.join(allowed)} (or auto), not {value!r}")
    return value


def _resolve_prediction_type(family: str, explicit: Optional[str], metadata: Dict[str, str], path: Optional[Path], state_dict: Mapping, notes: List[str]) -> str:
    if explicit:
        return explicit
    found = checkpoint_io.prediction_type_from_metadata(metadata)
    if found is None and path is not None:
        found = checkpoint_io.prediction_type_from_yaml(path)
    if found is None and "v_pred" in state_dict:
        found = "v_prediction"  # newer SDXL v-prediction files carry a marker key
    if found:
        return found
    if family == "sd2":
        note = (
            "SD2 epsilon and v-prediction models look the same from their weights; assuming epsilon "
            "(the 512-px base). For a 768-v model set prediction_type = \"v_prediction\" or put the "
            "model's .yaml beside it."
        )
        notes.append(note)
        logger.warning(note)
    return "epsilon"


def _config_for(family: str, metadata: Dict[str, str], explicit: Optional[ModelConfig]) -> ModelConfig:
    if explicit is not None:
        return explicit
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw:
        config = ModelConfig.from_json(raw)
        if config.family == family:
            return config
    return real_config(family)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(
    source: Union[str, Path, Mapping[str, torch.Tensor]],
    *,
    family: Optional[str] = None,
    prediction_type: Optional[str] = None,
    config: Optional[ModelConfig] = None,
    metadata: Optional[Dict[str, str]] = None,
    tokenizer_folder: Optional[Path] = None,
) -> ModelBundle:
    """Build a `ModelBundle` whose weights alias `source` (see module docstring).

    `family` and `prediction_type` override detection ("auto" or None detects); `config`
    gives the architecture explicitly (needed only for non-standard sizes such as the tiny
    test models when passed as a mapping without metadata).
    """
    family = _check_choice(family, FAMILIES, "family")
    prediction_type = _check_choice(prediction_type, PREDICTION_TYPES, "prediction_type")
    metadata = dict(metadata or {})
    path: Optional[Path] = None
    if isinstance(source, Mapping):
        raw = source
        name = ""
    else:
        path = Path(source)
        if path.is_dir():
            from lora_trainer.models.diffusers_folder import load_diffusers_folder

            return load_diffusers_folder(path, prediction_type=prediction_type)
        raw, file_metadata = checkpoint_io.read_checkpoint(path)
        metadata = {**file_metadata, **metadata}
        name = path.stem
    state_dict = normalize_keys(raw)
    detected = detect_family(state_dict)
    if family and family != detected:
        raise CheckpointError(f"{name or 'the model'} looks like {detected}, but family={family} was asked for; use family=auto")
    family = detected
    notes: List[str] = []
    resolved_prediction = _resolve_prediction_type(family, prediction_type, metadata, path, state_dict, notes)
    model_config = _config_for(family, metadata, config)
    unet, vae, encoders = load_modules(model_config, state_dict)

    from lora_trainer.models.tokenizers import tokenizers_for

    return ModelBundle(
        family=family,
        prediction_type=resolved_prediction,
        config=model_config,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers_for(model_config, folder=tokenizer_folder),
        noise_scheduler=make_noise_scheduler(resolved_prediction),
        name=name,
        notes=notes,
    )
