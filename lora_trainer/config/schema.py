"""One `TrainConfig`: sections of typed fields, each with its help text and allowed values.

Loaded from TOML or JSON (plus `--set section.key=value` overrides), validated into a list of
field-level errors (`FieldError(path, message)`) so the UI can show each next to its field and
the CLI can print them all at once. Torch-free: also used by the tag tools and the UI.
"""

import difflib
import json
import os
import re
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lora_trainer.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10 (A1111)
    import tomli as tomllib


def _f(default, help: str, choices: Sequence = (), low: Optional[float] = None, high: Optional[float] = None):
    """A config field with its help text and constraints (rendered by the UI as `info=`)."""
    meta = {"help": help, "choices": tuple(choices), "low": low, "high": high}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    checkpoint: str = _f("", "Base model: a .safetensors/.ckpt file or a diffusers folder (in the WebUI: the loaded checkpoint).")
    family: str = _f("auto", "Model family; auto detects it from the weights.", ("auto", "sd1", "sd2", "sdxl"))
    prediction_type: str = _f("auto", "epsilon or v_prediction; auto reads it from the file (SD2 768-v models need v_prediction).", ("auto", "epsilon", "v_prediction"))
    clip_skip: int = _f(1, "Use the text encoder's N-th layer from the end (2 for many anime SD1 models).", low=1, high=12)


@dataclass
class DatasetSection:
    dir: str = _f("", "Dataset folder: kohya subfolders like 10_name/ (10 repeats) or a flat folder of images + .txt captions.")
    reg_dir: str = _f("", "Optional regularization images (same layout); empty for none.")
    caption_extension: str = _f(".txt", "Caption file extension next to each image (.txt or .caption).")
    resolution: int = _f(512, "Training resolution (SD1.5: 512, SDXL: 1024); images are bucketed around this area.", low=64, high=4096)
    buckets: bool = _f(True, "Aspect-ratio buckets: train non-square images without cropping them square.")
    min_bucket_reso: int = _f(256, "Smallest bucket side.", low=64, high=4096)
    max_bucket_reso: int = _f(1024, "Largest bucket side.", low=64, high=8192)
    bucket_no_upscale: bool = _f(False, "Never upscale small images to fill a bucket.")
    random_crop: bool = _f(False, "Crop at a random place instead of the centre.")
    flip: bool = _f(False, "Random horizontal flips (not for asymmetric subjects or text).")
    recursive: bool = _f(False, "Also read images in subfolders of each folder.")
    shuffle_tags: bool = _f(False, "Shuffle the tags of each caption every step (after the first keep_tokens).")
    keep_tokens: int = _f(1, "How many leading tags stay in place when shuffling (your trigger word).", low=0, high=50)
    caption_dropout: float = _f(0.0, "Chance to train a step with an empty caption.", low=0.0, high=1.0)
    tag_dropout: float = _f(0.0, "Chance to drop each tag (except the kept ones) in a step.", low=0.0, high=1.0)
    cache_latents: bool = _f(True, "Encode every image with the VAE once, before training.")
    cache_text_encoder_outputs: bool = _f(False, "Encode captions once (only when the text encoders are not trained).")
    prior_loss_weight: float = _f(1.0, "Loss weight of regularization images.", low=0.0, high=10.0)
    trigger_word: str = _f("", "Trigger word written to the LoRA's activation text; empty: the first tag shared by all captions.")


@dataclass
class NetworkSection:
    type: str = _f("lora", "lora (attention/MLP), locon (adds ResNet convs), loha, lokr (LyCORIS).", ("lora", "locon", "loha", "lokr"))
    dora: bool = _f(False, "DoRA: also learn a per-input-channel magnitude (loads in A1111, Forge, ComfyUI).")
    rank: int = _f(16, "Network dimension: capacity and file size (8-32 for most characters).", low=1, high=1024)
    alpha: float = _f(8.0, "Scale = alpha / rank; lower alpha = smaller steps (commonly rank / 2).", low=0.0, high=1024.0)
    conv_rank: int = _f(8, "Rank of 3x3 convolutions (locon, loha, lokr).", low=1, high=1024)
    conv_alpha: float = _f(4.0, "Alpha of 3x3 convolutions.", low=0.0, high=1024.0)
    dropout: float = _f(0.0, "Dropout inside the network.", low=0.0, high=1.0)
    train_text_encoder: bool = _f(True, "Also train the text encoder(s) (usually off for SDXL).")


@dataclass
class TrainSection:
    max_steps: int = _f(1000, "Optimizer steps to train; 0 to use epochs instead.", low=0, high=10_000_000)
    epochs: int = _f(0, "Passes over the dataset (with repeats), used when max_steps is 0.", low=0, high=100_000)
    batch_size: int = _f(1, "Images per step.", low=1, high=1024)
    grad_accum: int = _f(1, "Gradient accumulation: micro-batches per optimizer step.", low=1, high=1024)
    unet_lr: float = _f(1e-4, "UNet learning rate.", low=0.0, high=1.0)
    text_encoder_lr: float = _f(5e-5, "Text-encoder learning rate.", low=0.0, high=1.0)
    optimizer: str = _f("adamw", "Optimizer (adamw8bit needs CUDA and bitsandbytes).", ("adamw", "adamw8bit", "lion", "prodigy", "adafactor"))
    weight_decay: float = _f(0.01, "Optimizer weight decay.", low=0.0, high=1.0)
    scheduler: str = _f("cosine", "Learning-rate schedule.", ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial"))
    warmup_steps: int = _f(0, "Steps of linear warm-up.", low=0, high=10_000_000)
    lr_scheduler_num_cycles: int = _f(1, "Restarts for cosine_with_restarts.", low=1, high=1000)
    lr_scheduler_power: float = _f(1.0, "Power of the polynomial schedule.", low=0.0, high=10.0)
    seed: int = _f(42, "Random seed: the same seed and data give the same LoRA on CPU.", low=0, high=2**32 - 1)
    mixed_precision: str = _f("no", "Half-precision compute: fp16 or bf16 on GPUs; no on CPU.", ("no", "fp16", "bf16"))
    gradient_checkpointing: bool = _f(False, "Trade speed for memory.")
    min_snr_gamma: float = _f(0.0, "Min-SNR weighting (5 is common; 0 = off).", low=0.0, high=100.0)
    noise_offset: float = _f(0.0, "Noise offset (0.05-0.1 helps very dark/bright images).", low=0.0, high=1.0)
    multires_noise_iterations: int = _f(0, "Multi-resolution noise iterations (6-10; 0 = off).", low=0, high=20)
    multires_noise_discount: float = _f(0.3, "Multi-resolution noise discount.", low=0.0, high=1.0)
    debiased_estimation: bool = _f(False, "Debiased estimation loss weighting.")
    zero_terminal_snr: bool = _f(False, "Rescale the schedule to zero terminal SNR (for v-prediction models made for it).")
    timestep_min: int = _f(0, "Lowest training timestep.", low=0, high=999)
    timestep_max: int = _f(1000, "Highest training timestep (exclusive).", low=1, high=1000)
    loss_type: str = _f("l2", "Loss: l2 or huber (robust to outliers).", ("l2", "huber"))
    huber_c: float = _f(0.1, "Huber loss threshold.", low=0.0, high=10.0)
    max_grad_norm: float = _f(1.0, "Gradient clipping (0 = off).", low=0.0, high=1000.0)
    device: str = _f("auto", "auto, cpu, cuda, cuda:1, mps.")


@dataclass
class OutputSection:
    dir: str = _f("output", "Where the LoRA file is written (in the WebUI: its Lora folder).")
    name: str = _f("my_lora", "File name of the LoRA, and the name in <lora:name:0.8>.")
    overwrite: bool = _f(False, "Replace an existing file of the same name.")
    save_every_steps: int = _f(0, "Also save <name>-stepNNNNNN.safetensors every N steps (0 = off).", low=0, high=10_000_000)
    keep_last: int = _f(0, "Keep only the last N intermediate files (0 = keep all).", low=0, high=10_000)
    save_state_every_steps: int = _f(0, "Save a resumable state every N steps (it is also saved on stop and at the end).", low=0, high=10_000_000)
    save_precision: str = _f("fp16", "Precision of the saved weights.", ("fp16", "bf16", "fp32"))
    logs_dir: str = _f("", "metrics.jsonl, samples, TensorBoard events and the resumable state (default: <dir>/<name>_logs).")
    tensorboard: bool = _f(False, "Write TensorBoard events to logs_dir (needs the tensorboard package).")


@dataclass
class SampleSection:
    every_steps: int = _f(0, "Render sample images every N steps (0 = off).", low=0, high=10_000_000)
    prompts: List[str] = _f([], "Sample prompts, one image each.")
    negative_prompt: str = _f("", "Negative prompt for samples.")
    seed: int = _f(1234, "Seed of the sample images (the same for every step, to compare).", low=0, high=2**32 - 1)
    steps: int = _f(20, "Sampling steps.", low=1, high=150)
    cfg_scale: float = _f(7.0, "Guidance scale.", low=0.0, high=30.0)
    width: int = _f(0, "Sample width (0 = the training resolution).", low=0, high=4096)
    height: int = _f(0, "Sample height (0 = the training resolution).", low=0, high=4096)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    sample: SampleSection = field(default_factory=SampleSection)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return asdict(self)

    @property
    def logs_dir(self) -> Path:
        return Path(self.output.logs_dir) if self.output.logs_dir else Path(self.output.dir) / f"{self.output.name}_logs"


SECTIONS = {f.name: f.type for f in fields(TrainConfig)}
SECTION_CLASSES = {"model": ModelSection, "dataset": DatasetSection, "network": NetworkSection,
                   "train": TrainSection, "output": OutputSection, "sample": SampleSection}


@dataclass(frozen=True)
class FieldError:
    path: str  # "train.unet_lr"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def field_info(section: str, key: str) -> Dict[str, Any]:
    """Help text, choices and range of one field (for the UI)."""
    for f in fields(SECTION_CLASSES[section]):
        if f.name == key:
            default = f.default_factory() if f.default is MISSING else f.default
            return {**f.metadata, "default": default, "type": type(default).__name__}
    raise KeyError(f"{section}.{key}")


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(value: Any, default: Any, path: str) -> Tuple[Any, Optional[FieldError]]:
    """Value converted to the field's type, or an error saying what was expected."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on"), None
        return default, FieldError(path, f"must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return default, FieldError(path, f"must be a whole number, not {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if float(number) != int(float(number)):
                raise ValueError
            return int(float(number)), None
        except ValueError:
            return default, FieldError(path, f"must be a whole number, not {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return default, FieldError(path, f"must be a number, not {value!r}")
        try:
            return float(value), None
        except ValueError:
            return default, FieldError(path, f"must be a number, not {value!r}")
    if kind is list:
        if isinstance(value, str):
            return [line for line in value.splitlines() if line.strip()], None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value), None
        return default, FieldError(path, f"must be a list of strings, not {value!r}")
    if not isinstance(value, str):
        return default, FieldError(path, f"must be text, not {value!r}")
    return value, None


def from_dict(data: Dict[str, Any]) -> Tuple[TrainConfig, List[FieldError]]:
    """Build a config from nested dicts, collecting every type/unknown-key error."""
    config, errors = TrainConfig(), []
    if not isinstance(data, dict):
        return config, [FieldError("(file)", "must be a table of sections such as [train]")]
    for section_name, values in data.items():
        if section_name not in SECTION_CLASSES:
            errors.append(FieldError(section_name, f"unknown section{_suggest(section_name, SECTION_CLASSES)} (sections: {', '.join(SECTION_CLASSES)})"))
            continue
        if not isinstance(values, dict):
            errors.append(FieldError(section_name, "must be a table of settings"))
            continue
        section = getattr(config, section_name)
        known = {f.name for f in fields(section)}
        for key, value in values.items():
            path = f"{section_name}.{key}"
            if key not in known:
                errors.append(FieldError(path, f"unknown setting{_suggest(key, known)}"))
                continue
            coerced, error = _coerce(value, getattr(section, key), path)
            if error:
                errors.append(error)
            else:
                setattr(section, key, coerced)
    return config, errors


def validate(config: TrainConfig) -> List[FieldError]:
    """Range, choice and cross-field checks; an empty list means the config can run."""
    errors: List[FieldError] = []
    for section_name, cls in SECTION_CLASSES.items():
        section = getattr(config, section_name)
        for f in fields(cls):
            value, meta, path = getattr(section, f.name), f.metadata, f"{section_name}.{f.name}"
            if meta.get("choices") and value not in meta["choices"]:
                errors.append(FieldError(path, f"must be one of {', '.join(meta['choices'])}, not {value!r}{_suggest(str(value), meta['choices'])}"))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if meta.get("low") is not None and value < meta["low"]:
                    errors.append(FieldError(path, f"must be at least {meta['low']}, not {value}"))
                if meta.get("high") is not None and value > meta["high"]:
                    errors.append(FieldError(path, f"must be at most {meta['high']}, not {value}"))
    train, dataset, output = config.train, config.dataset, config.output
    if train.max_steps == 0 and train.epochs == 0:
        errors.append(FieldError("train.max_steps", "set max_steps or epochs above 0 (both are 0)"))
    if train.max_steps and train.warmup_steps > train.max_steps:
        errors.append(FieldError("train.warmup_steps", f"is longer than the run ({train.warmup_steps} > max_steps {train.max_steps})"))
    if train.timestep_min >= train.timestep_max:
        errors.append(FieldError("train.timestep_min", "must be below timestep_max"))
    if dataset.min_bucket_reso > dataset.max_bucket_reso:
        errors.append(FieldError("dataset.min_bucket_reso", "must not exceed max_bucket_reso"))
    if train.unet_lr == 0 and (train.text_encoder_lr == 0 or not config.network.train_text_encoder):
        errors.append(FieldError("train.unet_lr", "nothing would train: set a learning rate above 0"))
    if not dataset.caption_extension.startswith("."):
        errors.append(FieldError("dataset.caption_extension", f"must start with a dot, e.g. .txt (not {dataset.caption_extension!r})"))
    if config.dataset.cache_text_encoder_outputs and config.network.train_text_encoder:
        errors.append(FieldError("dataset.cache_text_encoder_outputs", "needs network.train_text_encoder = false (trained encoders change their outputs)"))
    try:
        sanitize_output_name(output.name)
    except ConfigError as exc:
        errors.append(FieldError("output.name", str(exc)))
    return errors


def raise_for(errors: List[FieldError]) -> None:
    if errors:
        raise ConfigError("the configuration has problems:\n  " + "\n  ".join(str(e) for e in errors))


# --- names and paths ---------------------------------------------------------------------
_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
MAX_NAME = 120


def sanitize_output_name(name: str) -> str:
    """A safe file stem: no folders, no control characters, not a reserved device name.

    Letters of any script are kept (A1111 shows unicode names). A trailing `.safetensors` is
    dropped. What cannot be made safe (empty, only dots, reserved) is refused with a message.
    """
    text = unicodedata.normalize("NFC", str(name or "")).strip()
    if text.lower().endswith(".safetensors"):
        text = text[: -len(".safetensors")]
    if "/" in text or "\\" in text or text.startswith("~"):
        raise ConfigError(f"{name!r} is a path; give a plain file name such as my_lora (the folder is output.dir)")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = re.sub(r'[<>:"|?*]', "_", text).strip().rstrip(". ")
    if not text or set(text) <= {"."}:
        raise ConfigError(f"{name!r} is not a usable file name; use letters, digits, - or _")
    if text.split(".")[0].lower() in _RESERVED:
        raise ConfigError(f"{text!r} is a reserved device name on Windows; choose another name")
    if len(text.encode("utf-8")) > MAX_NAME:
        raise ConfigError(f"the name is {len(text)} characters long; keep it under {MAX_NAME // 2} characters")
    return text


def resolve_inside(folder: Path, filename: str) -> Path:
    """`folder/filename`, refusing anything that would land outside `folder` (symlinks included)."""
    root = Path(folder).resolve()
    target = (root / filename).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"{filename!r} would be written outside {root}")
    return target


# --- files and overrides -----------------------------------------------------------------
def parse_override(text: str) -> Tuple[str, str, str]:
    """`section.key=value` -> (section, key, raw value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set expects section.key=value (e.g. train.max_steps=500), not {text!r}")
    path, value = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    return section, key, value.strip()


def _raw_override_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_file(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from exc


def load_config(path: Optional[Path] = None, overrides: Sequence[str] = (), base: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Defaults <- preset/base dict <- file <- `--set` overrides; raises ConfigError listing every problem."""
    data: Dict[str, Any] = _merge({}, base or {})
    if path is not None:
        data = _merge(data, read_file(path))
    for text in overrides:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = _raw_override_value(value)
    config, errors = from_dict(data)
    raise_for(errors + validate(config))
    return config


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def to_toml(config: TrainConfig) -> str:
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def save_config(path: Path, config: TrainConfig) -> Path:
    """TOML or JSON by suffix, written atomically."""
    path = Path(path)
    text = json.dumps(config.to_dict(), indent=2, ensure_ascii=False) if path.suffix.lower() == ".json" else to_toml(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
    return path
