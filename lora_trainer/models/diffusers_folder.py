"""A diffusers-format model folder (model_index.json, unet/, vae/, text_encoder*/, tokenizer*/)."""

import json
from pathlib import Path
from typing import List, Optional

from lora_trainer.errors import CheckpointError
from lora_trainer.models.families import CLIP_L, OPEN_CLIP, ModelConfig


def _family_from_unet_config(unet_config: dict) -> str:
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if unet_config.get("cross_attention_dim") == 1024 or unet_config.get("use_linear_projection"):
        return "sd2"
    return "sd1"


def _public_config(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _load_text_encoder(cls, folder: Path):
    """A text encoder from its folder, never unpickling anything but tensors.

    transformers before 4.37 reads `pytorch_model.bin` with a plain `torch.load` (which on torch
    2.1 runs any code the pickle holds), so such weights are read here with `weights_only=True`
    and handed over as a state dict; `.safetensors` weights go through `from_pretrained`.
    """
    from transformers import CLIPTextConfig

    from lora_trainer.models.checkpoint_io import read_checkpoint

    if any(folder.glob("*.safetensors")):
        return cls.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    weights = sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise CheckpointError(f"{folder}: no text encoder weights (model.safetensors or pytorch_model.bin)")
    state = {}
    for path in weights:
        state.update(read_checkpoint(path)[0])
    return cls.from_pretrained(None, config=CLIPTextConfig.from_pretrained(folder), state_dict=state)


def load_diffusers_folder(folder: Path, prediction_type: Optional[str] = None):
    """Load each part with its own `from_pretrained` (local files only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from lora_trainer.models.bundle import ModelBundle, make_noise_scheduler
    from lora_trainer.models.tokenizers import load_clip_tokenizer

    folder = Path(folder)
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        raise CheckpointError(f"{folder}: not a diffusers model folder (no model_index.json and unet/)")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: could not load the UNet/VAE: {exc}") from exc
    family = _family_from_unet_config(unet.config)
    encoders, tokenizers, specs = [], [], []
    subfolders = ["text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for index, sub in enumerate(subfolders):
        with_projection = family == "sdxl" and index == 1
        cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
        encoder = _load_text_encoder(cls, folder / sub)
        kind = OPEN_CLIP if (family == "sd2" or index == 1) else CLIP_L
        tokenizer_dir = folder / sub.replace("text_encoder", "tokenizer")
        tokenizers.append(load_clip_tokenizer(kind, folder=tokenizer_dir if tokenizer_dir.is_dir() else None))
        encoders.append(encoder)
        specs.append({"kind": kind, "with_projection": with_projection, "config": encoder.config.to_diff_dict()})
    for module in [unet, vae] + encoders:
        module.requires_grad_(False)
        module.eval()
    if prediction_type is None:
        scheduler_config = folder / "scheduler" / "scheduler_config.json"
        prediction_type = "epsilon"
        if scheduler_config.is_file():
            prediction_type = json.loads(scheduler_config.read_text()).get("prediction_type", "epsilon")
    config = ModelConfig(family, _public_config(unet.config), _public_config(vae.config), specs)
    return ModelBundle(family, prediction_type, config, unet, vae, encoders, tokenizers, make_noise_scheduler(prediction_type), name=folder.name)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def write_diffusers_configs(config: ModelConfig, folder: Path, tokenizers: Optional[List] = None, prediction_type: str = "epsilon") -> Path:
    """Config-only diffusers folder for `config` (what `from_single_file(config=...)` reads)."""
    import diffusers
    from transformers import CLIPTextConfig

    from lora_trainer.models.bundle import make_noise_scheduler

    folder = Path(folder)
    version = diffusers.__version__
    _write_json(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", "_diffusers_version": version, **config.unet})
    _write_json(folder / "vae" / "config.json", {"_class_name": "AutoencoderKL", "_diffusers_version": version, **config.vae})
    pipeline = "StableDiffusionXLPipeline" if config.family == "sdxl" else "StableDiffusionPipeline"
    index = {"_class_name": pipeline, "_diffusers_version": version, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"]}
    for i, spec in enumerate(config.text_encoders):
        suffix = "" if i == 0 else f"_{i + 1}"
        cls = "CLIPTextModelWithProjection" if spec["with_projection"] else "CLIPTextModel"
        te_config = CLIPTextConfig(**spec["config"])
        te_config.architectures = [cls]
        te_config.save_pretrained(folder / f"text_encoder{suffix}")
        index[f"text_encoder{suffix}"] = ["transformers", cls]
        index[f"tokenizer{suffix}"] = ["transformers", "CLIPTokenizer"]
        if tokenizers:
            tokenizers[i].save_pretrained(folder / f"tokenizer{suffix}")
    make_noise_scheduler(prediction_type).save_config(folder / "scheduler")
    _write_json(folder / "model_index.json", index)
    return folder
