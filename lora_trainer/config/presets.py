"""Named presets: partial configs (only the keys they set) applied over the defaults.

Built-in presets ship here as data; user presets are JSON files in a folder the caller picks
(`save_user_preset`, `list_presets`, `load_preset`). A preset is a training recipe: by default
a saved user preset leaves out paths and the output name, so applying it keeps your dataset.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from lora_trainer.config.io import atomic_write_text, merge
from lora_trainer.config.names import sanitize_output_name
from lora_trainer.config.schema import TrainConfig, iter_fields
from lora_trainer.config.validate import parse_dict, raise_for
from lora_trainer.errors import ConfigError

Partial = Dict[str, Dict[str, Any]]

PRESETS: Dict[str, Partial] = {
    "SD1.5 character": {
        "dataset": {"resolution": 512, "min_bucket_reso": 256, "max_bucket_reso": 1024, "keep_tokens": 1, "shuffle_tags": True,
                    "flip": False, "cache_text_encoder_outputs": False},
        "network": {"type": "lora", "rank": 16, "alpha": 8, "train_text_encoder": True},
        "train": {"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 1500,
                  "batch_size": 2, "min_snr_gamma": 5.0},
    },
    "SD1.5 style": {
        "dataset": {"resolution": 512, "min_bucket_reso": 256, "max_bucket_reso": 1024, "keep_tokens": 0, "shuffle_tags": True,
                    "flip": True, "cache_text_encoder_outputs": False},
        "network": {"type": "locon", "rank": 32, "alpha": 16, "conv_rank": 16, "conv_alpha": 8, "train_text_encoder": True},
        "train": {"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 3000,
                  "batch_size": 2, "min_snr_gamma": 5.0, "noise_offset": 0.05},
    },
    "SDXL character": {
        "dataset": {"resolution": 1024, "max_bucket_reso": 2048, "min_bucket_reso": 512, "cache_text_encoder_outputs": True,
                    "keep_tokens": 1, "shuffle_tags": False},
        "network": {"type": "lora", "rank": 32, "alpha": 16, "train_text_encoder": False},
        "train": {"unet_lr": 1e-4, "optimizer": "adamw", "scheduler": "cosine", "max_steps": 2000, "batch_size": 1,
                  "mixed_precision": "bf16", "gradient_checkpointing": True, "min_snr_gamma": 5.0},
    },
    "Low memory": {
        "dataset": {"cache_latents": True, "cache_text_encoder_outputs": True, "shuffle_tags": False},
        "network": {"rank": 8, "alpha": 4, "train_text_encoder": False},
        "train": {"batch_size": 1, "grad_accum": 1, "gradient_checkpointing": True, "optimizer": "adafactor", "mixed_precision": "fp16"},
    },
}

# Left out of user presets unless asked for: they belong to one run, not to a recipe.
RUN_SPECIFIC = ("model.checkpoint", "dataset.dir", "dataset.reg_dir", "dataset.trigger_word", "output.dir", "output.name",
                "output.logs_dir", "sample.prompts")


def _copy(partial: Partial) -> Partial:
    return {section: dict(values) for section, values in partial.items()}


def _builtin(name: str) -> Optional[str]:
    folded = name.strip().casefold()
    return next((key for key in PRESETS if key.casefold() == folded), None)


def preset(name: str) -> Partial:
    """A built-in preset's partial dict (a copy)."""
    key = _builtin(name)
    if key is None:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return _copy(PRESETS[key])


def _user_file(folder: Union[str, Path], name: str) -> Path:
    return Path(folder) / f"{sanitize_output_name(name)}.json"


def _read_user(path: Path) -> Partial:
    """A user preset file: a JSON object of sections, like a config file that sets only some keys."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"preset file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"preset file {path} is not a preset (a JSON object of sections such as \"train\")")
    return data


def list_presets(folder: Optional[Union[str, Path]] = None) -> List[str]:
    """Built-in preset names, then the user presets saved in `folder` (sorted; unreadable files skipped)."""
    names = list(PRESETS)
    if folder is not None and Path(folder).is_dir():
        users = []
        for path in Path(folder).glob("*.json"):
            try:
                _read_user(path)
            except ConfigError:
                continue
            if not _builtin(path.stem):
                users.append(path.stem)
        names.extend(sorted(users, key=str.casefold))
    return names


def load_preset(name: str, folder: Optional[Union[str, Path]] = None) -> Partial:
    """The partial dict of a built-in preset or of a user preset saved in `folder` (checked for bad keys)."""
    if _builtin(name):
        return preset(name)
    if folder is None:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    try:
        path = _user_file(folder, name)
    except ConfigError as exc:
        raise ConfigError(f"unknown preset {name!r}: {exc}") from exc
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets(folder))}")
    partial = _read_user(path)
    _, errors = parse_dict(partial)
    raise_for(errors, f"preset {name!r} ({path})")
    return _copy(partial)


def apply_preset(preset_or_name: Union[str, Partial], config: Optional[TrainConfig] = None,
                 folder: Optional[Union[str, Path]] = None) -> TrainConfig:
    """`config` (default: the defaults) with the preset's keys set; other keys keep their values."""
    partial = load_preset(preset_or_name, folder) if isinstance(preset_or_name, str) else preset_or_name
    out, errors = parse_dict(partial, base=config)
    raise_for(errors, "the preset")
    return out


def diff_from_defaults(config: TrainConfig, *, include_run_specific: bool = False) -> Partial:
    """Only the keys whose value differs from the defaults, as a partial dict."""
    defaults = TrainConfig()
    out: Partial = {}
    for path, _ in iter_fields():
        if not include_run_specific and path in RUN_SPECIFIC:
            continue
        if config.get(path) != defaults.get(path):
            section, key = path.split(".", 1)
            out.setdefault(section, {})[key] = config.get(path)
    return out


def save_user_preset(folder: Union[str, Path], name: str, config: Union[TrainConfig, Partial], *,
                     include_run_specific: bool = False, overwrite: bool = True) -> Path:
    """Save `config` (its differences from the defaults) as user preset `name` in `folder`.

    The file is `<sanitised name>.json` (atomic write), a JSON object of sections holding only the
    keys that differ from the defaults; built-in names are refused so a user preset never hides one.
    `list_presets` shows it under the sanitised name.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a preset needs a name")
    if _builtin(name):
        raise ConfigError(f"{name!r} is a built-in preset; save yours under another name")
    path = _user_file(folder, name)
    if path.exists() and not overwrite:
        raise ConfigError(f"a preset named {name!r} already exists")
    if isinstance(config, TrainConfig):
        partial = diff_from_defaults(config, include_run_specific=include_run_specific)
    else:
        _, errors = parse_dict(config)
        raise_for(errors, f"preset {name!r}")
        partial = merge({}, config)
    return atomic_write_text(path, json.dumps(partial, indent=2, ensure_ascii=False) + "\n")
