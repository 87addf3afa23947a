"""Types, ranges and cross-field rules, reported as field-level errors (`FieldError(path, message)`).

`parse_dict` collects every problem in a nested dict (unknown sections/keys with a did-you-mean,
wrong types); `validate` checks a built config (ranges, choices, conflicts). Both return lists so
the UI can put each message next to its field; `raise_for` turns a list into one ConfigError.
"""

import difflib
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from lora_trainer.config.names import sanitize_output_name
from lora_trainer.config.schema import SECTION_CLASSES, FieldError, TrainConfig, field_default
from lora_trainer.errors import ConfigError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")


def suggest(name: str, options: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest option, or ""."""
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce(value: Any, default: Any, path: str) -> Tuple[Any, Optional[FieldError]]:
    """`value` converted to the type of `default`, or an error saying what was expected.

    Lenient where the meaning is plain ("16" for an int, "true" for a bool, 16.0 for an int, one
    string for a list of strings); strict otherwise (no bools as numbers, no NaN, no lists as text).
    """
    kind = type(default)
    if value is None:
        return default, FieldError(path, f"must be set (a {_kind_name(kind)}), not empty/null")
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE, None
        return default, FieldError(path, f"must be true or false, not {_show(value)}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return default, FieldError(path, f"must be a {_kind_name(kind)}, not {_show(value)}")
        try:
            number = float(value.strip()) if isinstance(value, str) else value
        except ValueError:
            return default, FieldError(path, f"must be a {_kind_name(kind)}, not {_show(value)}")
        if isinstance(number, float) and not math.isfinite(number):
            return default, FieldError(path, f"must be a finite number, not {_show(value)}")
        if kind is int:
            if isinstance(number, float) and not number.is_integer():
                return default, FieldError(path, f"must be a whole number, not {_show(value)}")
            return int(number), None
        return float(number), None
    if kind is list:
        if isinstance(value, str):
            return [line.strip() for line in value.splitlines() if line.strip()], None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value), None
        return default, FieldError(path, f"must be a list of strings, not {_show(value)}")
    if not isinstance(value, str):
        return default, FieldError(path, f"must be text, not {_show(value)}")
    return value, None


def _kind_name(kind: type) -> str:
    return {bool: "true/false value", int: "whole number", float: "number", list: "list of strings", str: "text"}[kind]


def _section_of(key: str) -> Optional[str]:
    for section, cls in SECTION_CLASSES.items():
        if key in {f.name for f in fields(cls)}:
            return section
    return None


def parse_dict(data: Any, base: Optional[TrainConfig] = None) -> Tuple[TrainConfig, List[FieldError]]:
    """`base` (default: the defaults) updated by a nested dict, plus every unknown-key/type error.

    Bad values leave the base value in place, so the returned config is always complete.
    """
    config = base.copy() if base is not None else TrainConfig()
    errors: List[FieldError] = []
    if not isinstance(data, dict):
        return config, [FieldError("(file)", "must be a table of sections such as [train]")]
    for section_name, values in data.items():
        if section_name not in SECTION_CLASSES:
            home = _section_of(section_name)
            if home and not isinstance(values, dict):
                errors.append(FieldError(section_name, f"settings belong in a section: put it under [{home}]"))
            else:
                errors.append(FieldError(section_name, f"unknown section{suggest(section_name, SECTION_CLASSES)} "
                                                       f"(sections: {', '.join(SECTION_CLASSES)})"))
            continue
        if not isinstance(values, dict):
            errors.append(FieldError(section_name, f"must be a table of settings ([{section_name}]), not {_show(values)}"))
            continue
        section = getattr(config, section_name)
        known = [f.name for f in fields(section)]
        for key, value in values.items():
            path = f"{section_name}.{key}"
            if key not in known:
                hint = suggest(key, known)
                home = _section_of(key)
                if not hint and home:
                    hint = f"; it belongs in [{home}]"
                errors.append(FieldError(path, f"unknown setting{hint}"))
                continue
            coerced, error = coerce(value, field_default(next(f for f in fields(section) if f.name == key)), path)
            if error:
                errors.append(error)
            else:
                setattr(section, key, coerced)
    return config, errors


def from_dict(data: Any, base: Optional[TrainConfig] = None) -> Tuple[TrainConfig, List[FieldError]]:
    """(config, errors) from a nested dict: the same as `parse_dict` (the UI's entry point).

    `TrainConfig.from_dict(data)` is the raising form.
    """
    return parse_dict(data, base)


def _range_message(meta: Dict[str, Any], value: Any) -> str:
    low, high = meta.get("low"), meta.get("high")
    allowed = f" (allowed: {low} to {high})" if low is not None and high is not None else ""
    if low is not None and value < low:
        return f"must be at least {low}{allowed}, not {value}"
    return f"must be at most {high}{allowed}, not {value}"


def validate(config: TrainConfig, *, check_paths: bool = False) -> List[FieldError]:
    """Range, choice and cross-field checks; an empty list means the config can run.

    Paths are only checked for existence with `check_paths=True` (the trainer checks them anyway).
    """
    errors: List[FieldError] = []
    wrong_types = False

    def error(path: str, message: str) -> None:
        if not any(e.path == path and e.message == message for e in errors):
            errors.append(FieldError(path, message))

    for section_name, cls in SECTION_CLASSES.items():
        section = getattr(config, section_name)
        for f in fields(cls):
            value, meta, path = getattr(section, f.name), f.metadata, f"{section_name}.{f.name}"
            expected = type(field_default(f))
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                if not (expected is float and isinstance(value, int) and not isinstance(value, bool)):
                    error(path, f"must be a {_kind_name(expected)}, not {_show(value)}")
                    wrong_types = True
                    continue
            if isinstance(value, str) and (meta.get("path") or f.name == "caption_extension") and "\x00" in value:
                error(path, "must not contain a NUL character (\\0); no file name can hold one")
                continue
            if meta.get("choices") and value not in meta["choices"]:
                error(path, f"must be one of {', '.join(meta['choices'])}, not {_show(value)}{suggest(str(value), meta['choices'])}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    error(path, f"must be a finite number, not {value}")
                elif (meta.get("low") is not None and value < meta["low"]) or (meta.get("high") is not None and value > meta["high"]):
                    error(path, _range_message(meta, value))
    if wrong_types:  # cross-field rules assume the right types
        return errors

    def fine(*paths: str) -> bool:
        """Cross-field rules compare only values that are right on their own (one message per problem)."""
        return not any(e.path in paths for e in errors)

    dataset, network, train, output, sample = config.dataset, config.network, config.train, config.output, config.sample
    # how long to train
    if train.max_steps == 0 and train.epochs == 0:
        error("train.max_steps", "set max_steps or epochs above 0 (both are 0)")
    if train.max_steps > 0 and train.warmup_steps > train.max_steps and fine("train.max_steps", "train.warmup_steps"):
        error("train.warmup_steps", f"is longer than the run ({train.warmup_steps} > max_steps {train.max_steps})")
    if train.timestep_min >= train.timestep_max and fine("train.timestep_min", "train.timestep_max"):
        error("train.timestep_min", f"must be below timestep_max ({train.timestep_min} >= {train.timestep_max})")
    # what trains
    if train.unet_lr == 0 and (train.text_encoder_lr == 0 or not network.train_text_encoder):
        error("train.unet_lr", "nothing would train: set a learning rate above 0")
    if network.dora and network.type not in ("lora", "locon"):
        error("network.dora", f"DoRA works with network type lora or locon, not {network.type}")
    # hardware
    if not _DEVICE.match(train.device):
        error("train.device", f"must be auto, cpu, cuda, cuda:N or mps, not {_show(train.device)}")
    elif train.device in ("cpu", "mps"):
        if train.mixed_precision == "fp16" and train.device == "cpu":
            error("train.mixed_precision", "fp16 needs a GPU; use no or bf16 on the CPU")
        if train.optimizer == "adamw8bit":
            error("train.optimizer", f"adamw8bit needs a CUDA GPU (bitsandbytes); use adamw or adafactor on {train.device}")
    # data
    if dataset.reg_dir and dataset.dir and Path(dataset.reg_dir) == Path(dataset.dir):
        error("dataset.reg_dir", "is the training folder itself; use a separate folder of regularization images or leave it empty")
    if not dataset.caption_extension.startswith(".") or len(dataset.caption_extension) < 2 or "/" in dataset.caption_extension \
            or "\\" in dataset.caption_extension:
        error("dataset.caption_extension", f"must be an extension starting with a dot, e.g. .txt (not {_show(dataset.caption_extension)})")
    if dataset.resolution % 8 and fine("dataset.resolution"):
        error("dataset.resolution", f"must be a multiple of 8 (e.g. {dataset.resolution // 64 * 64 or 64}), not {dataset.resolution}")
    if dataset.buckets and fine("dataset.resolution", "dataset.min_bucket_reso", "dataset.max_bucket_reso"):
        if dataset.min_bucket_reso > dataset.max_bucket_reso:
            error("dataset.min_bucket_reso", f"must not exceed max_bucket_reso ({dataset.min_bucket_reso} > {dataset.max_bucket_reso})")
        if dataset.min_bucket_reso > dataset.resolution:
            error("dataset.min_bucket_reso", f"must be at most the resolution ({dataset.min_bucket_reso} > {dataset.resolution})")
        if dataset.max_bucket_reso < dataset.resolution:
            error("dataset.max_bucket_reso", f"must be at least the resolution ({dataset.max_bucket_reso} < {dataset.resolution}); "
                                             f"{2 * dataset.resolution} is common")
    if dataset.cache_text_encoder_outputs:
        if network.train_text_encoder:
            error("dataset.cache_text_encoder_outputs", "needs network.train_text_encoder = false (trained encoders change their outputs)")
        for key, on in (("shuffle_tags", dataset.shuffle_tags), ("caption_dropout", dataset.caption_dropout > 0),
                        ("tag_dropout", dataset.tag_dropout > 0)):
            if on:
                error(f"dataset.{key}", "changes the caption every step, so it cannot be used with cache_text_encoder_outputs")
    if dataset.cache_latents and dataset.random_crop:
        error("dataset.random_crop", "crops differ every step, so it cannot be used with cache_latents; turn one off")
    # output
    try:
        sanitize_output_name(output.name)
    except ConfigError as exc:
        error("output.name", str(exc))
    if not output.dir.strip():
        error("output.dir", "required: the folder the LoRA is written to")
    # samples
    if sample.every_steps and not [p for p in sample.prompts if p.strip()]:
        error("sample.prompts", "needed when sample.every_steps > 0 (one prompt per line)")
    for key in ("width", "height"):
        if getattr(sample, key) % 8:
            error(f"sample.{key}", f"must be a multiple of 8 (or 0 for the training resolution), not {getattr(sample, key)}")
    if check_paths:
        errors.extend(_path_errors(config))
    return errors


def _path_errors(config: TrainConfig) -> List[FieldError]:
    errors = []
    checks = [("model.checkpoint", config.model.checkpoint, "file_or_dir", False),
              ("dataset.dir", config.dataset.dir, "dir", False), ("dataset.reg_dir", config.dataset.reg_dir, "dir", True)]
    for path, value, kind, optional in checks:
        if not value and path == "dataset.dir":
            errors.append(FieldError(path, "required: the folder with your training images"))
            continue
        if not value and optional:
            continue
        if not value and path == "model.checkpoint":
            continue  # the WebUI trains its loaded model
        target = Path(value).expanduser()
        if kind == "dir" and not target.is_dir():
            errors.append(FieldError(path, f"folder {value} does not exist" if not target.exists() else f"{value} is not a folder"))
        elif kind == "file_or_dir" and not target.exists():
            errors.append(FieldError(path, f"{value} does not exist"))
    out = Path(config.output.dir).expanduser()
    if out.exists() and not out.is_dir():
        errors.append(FieldError("output.dir", f"{config.output.dir} is a file, not a folder"))
    return errors


def config_warnings(config: TrainConfig) -> List[FieldError]:
    """Legal but probably unintended settings (the UI shows them, the CLI prints them; nothing fails)."""
    out: List[FieldError] = []
    train, dataset, network, model = config.train, config.dataset, config.network, config.model
    if train.max_steps and train.epochs:
        out.append(FieldError("train.epochs", f"ignored: max_steps ({train.max_steps}) is set; set max_steps = 0 to train by epochs"))
    if network.train_text_encoder and train.text_encoder_lr == 0:
        out.append(FieldError("train.text_encoder_lr", "is 0, so the text encoder will not change; turn off train_text_encoder to save memory"))
    if network.alpha > network.rank:
        out.append(FieldError("network.alpha", f"is above rank ({network.alpha:g} > {network.rank}): updates are scaled up; rank / 2 is common"))
    if config.output.keep_last and not config.output.save_every_steps:
        out.append(FieldError("output.keep_last", "has no effect without save_every_steps"))
    if model.family == "sdxl" and dataset.resolution < 768:
        out.append(FieldError("dataset.resolution", f"{dataset.resolution} is small for SDXL (trained at 1024)"))
    if model.family in ("sd1", "sd2") and dataset.resolution > 1024:
        out.append(FieldError("dataset.resolution", f"{dataset.resolution} is large for {model.family} (512 or 768 are usual)"))
    if train.zero_terminal_snr and model.prediction_type == "epsilon":
        out.append(FieldError("train.zero_terminal_snr", "is meant for v_prediction models"))
    if train.optimizer == "prodigy" and train.unet_lr < 0.1:
        out.append(FieldError("train.unet_lr", f"prodigy sets its own step size; use a learning rate of 1, not {train.unet_lr:g}"))
    if train.loss_type != "huber" and train.huber_c != 0.1:
        out.append(FieldError("train.huber_c", "only used with loss_type = huber"))
    return out


def raise_for(errors: List[FieldError], what: str = "the configuration") -> None:
    """One ConfigError listing every problem, one line each (nothing when the list is empty)."""
    if errors:
        error = ConfigError(f"{what} has {len(errors)} problem{'s' if len(errors) > 1 else ''}:\n  "
                            + "\n  ".join(str(e) for e in errors))
        error.errors = list(errors)
        raise error


def check(config: TrainConfig, *, check_paths: bool = False) -> TrainConfig:
    """`config` if it validates, else ConfigError listing every problem."""
    raise_for(validate(config, check_paths=check_paths))
    return config
