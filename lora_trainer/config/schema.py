"""The settings themselves: sections of typed fields, each with help text, allowed values and range.

Every field carries metadata the UI renders (`info=` help, dropdown choices, slider range):
`help`, `choices` (empty: free value), `low`/`high` (inclusive range, None: open), and `path`
("file", "dir" or "file_or_dir" for fields naming something on disk, else None).
"""

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple


def _f(default, help: str, choices: Sequence = (), low: Optional[float] = None, high: Optional[float] = None,
       path: Optional[str] = None):
    """A config field with its help text and constraints (rendered by the UI as `info=`)."""
    meta = {"help": help, "choices": tuple(choices), "low": low, "high": high, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


FAMILIES = ("auto", "sd1", "sd2", "sdxl")
PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")
NETWORK_TYPES = ("lora", "locon", "loha", "lokr")
OPTIMIZERS = ("adamw", "adamw8bit", "lion", "prodigy", "adafactor")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
LOSS_TYPES = ("l2", "huber")
MAX_STEPS = 10_000_000


@dataclass
class ModelSection:
    checkpoint: str = _f("", "Base model: a .safetensors/.ckpt file or a diffusers folder (in the WebUI: the loaded checkpoint).", path="file_or_dir")
    family: str = _f("auto", "Model family; auto detects it from the weights.", FAMILIES)
    prediction_type: str = _f("auto", "epsilon or v_prediction; auto reads it from the file (SD2 768-v models need v_prediction).", PREDICTION_TYPES)
    clip_skip: int = _f(1, "Use the text encoder's N-th layer from the end (2 for many anime SD1 models).", low=1, high=12)


@dataclass
class DatasetSection:
    dir: str = _f("", "Dataset folder: kohya subfolders like 10_name/ (10 repeats) or a flat folder of images + .txt captions.", path="dir")
    reg_dir: str = _f("", "Optional regularization images (same layout); empty for none.", path="dir")
    caption_extension: str = _f(".txt", "Caption file extension next to each image (.txt or .caption).")
    resolution: int = _f(512, "Training resolution (SD1.5: 512, SDXL: 1024); images are bucketed around this area.", low=64, high=4096)
    buckets: bool = _f(True, "Aspect-ratio buckets: train non-square images without cropping them square.")
    min_bucket_reso: int = _f(256, "Smallest bucket side (at most the resolution).", low=64, high=4096)
    max_bucket_reso: int = _f(1024, "Largest bucket side (at least the resolution; 2 x resolution is common).", low=64, high=8192)
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
    type: str = _f("lora", "lora (attention/MLP), locon (adds ResNet convs), loha, lokr (LyCORIS).", NETWORK_TYPES)
    dora: bool = _f(False, "DoRA: also learn a per-input-channel magnitude (lora and locon; loads in A1111, Forge, ComfyUI).")
    rank: int = _f(16, "Network dimension: capacity and file size (8-32 for most characters).", low=1, high=1024)
    alpha: float = _f(8.0, "Scale = alpha / rank; lower alpha = smaller steps (commonly rank / 2).", low=0.0, high=1024.0)
    conv_rank: int = _f(8, "Rank of 3x3 convolutions (locon, loha, lokr).", low=1, high=1024)
    conv_alpha: float = _f(4.0, "Alpha of 3x3 convolutions.", low=0.0, high=1024.0)
    dropout: float = _f(0.0, "Dropout inside the network.", low=0.0, high=1.0)
    train_text_encoder: bool = _f(True, "Also train the text encoder(s) (usually off for SDXL).")


@dataclass
class TrainSection:
    max_steps: int = _f(1000, "Optimizer steps to train; 0 to use epochs instead.", low=0, high=MAX_STEPS)
    epochs: int = _f(0, "Passes over the dataset (with repeats), used when max_steps is 0.", low=0, high=100_000)
    batch_size: int = _f(1, "Images per step.", low=1, high=1024)
    grad_accum: int = _f(1, "Gradient accumulation: micro-batches per optimizer step.", low=1, high=1024)
    unet_lr: float = _f(1e-4, "UNet learning rate.", low=0.0, high=1.0)
    text_encoder_lr: float = _f(5e-5, "Text-encoder learning rate.", low=0.0, high=1.0)
    optimizer: str = _f("adamw", "Optimizer (adamw8bit needs CUDA and bitsandbytes; prodigy wants lr = 1).", OPTIMIZERS)
    weight_decay: float = _f(0.01, "Optimizer weight decay.", low=0.0, high=1.0)
    scheduler: str = _f("cosine", "Learning-rate schedule.", SCHEDULERS)
    warmup_steps: int = _f(0, "Steps of linear warm-up.", low=0, high=MAX_STEPS)
    lr_scheduler_num_cycles: int = _f(1, "Restarts for cosine_with_restarts.", low=1, high=1000)
    lr_scheduler_power: float = _f(1.0, "Power of the polynomial schedule.", low=0.0, high=10.0)
    seed: int = _f(42, "Random seed: the same seed and data give the same LoRA on CPU.", low=0, high=2**32 - 1)
    mixed_precision: str = _f("no", "Half-precision compute: fp16 or bf16 on GPUs; no on CPU.", PRECISIONS)
    gradient_checkpointing: bool = _f(False, "Trade speed for memory.")
    min_snr_gamma: float = _f(0.0, "Min-SNR weighting (5 is common; 0 = off).", low=0.0, high=100.0)
    noise_offset: float = _f(0.0, "Noise offset (0.05-0.1 helps very dark/bright images).", low=0.0, high=1.0)
    multires_noise_iterations: int = _f(0, "Multi-resolution noise iterations (6-10; 0 = off).", low=0, high=20)
    multires_noise_discount: float = _f(0.3, "Multi-resolution noise discount.", low=0.0, high=1.0)
    debiased_estimation: bool = _f(False, "Debiased estimation loss weighting.")
    zero_terminal_snr: bool = _f(False, "Rescale the schedule to zero terminal SNR (for v-prediction models made for it).")
    timestep_min: int = _f(0, "Lowest training timestep.", low=0, high=999)
    timestep_max: int = _f(1000, "Highest training timestep (exclusive).", low=1, high=1000)
    loss_type: str = _f("l2", "Loss: l2 or huber (robust to outliers).", LOSS_TYPES)
    huber_c: float = _f(0.1, "Huber loss threshold.", low=0.0, high=10.0)
    max_grad_norm: float = _f(1.0, "Gradient clipping (0 = off).", low=0.0, high=1000.0)
    device: str = _f("auto", "auto, cpu, cuda, cuda:1, mps.")


@dataclass
class OutputSection:
    dir: str = _f("output", "Where the LoRA file is written (in the WebUI: its Lora folder).", path="dir")
    name: str = _f("my_lora", "File name of the LoRA, and the name in <lora:name:0.8>.")
    overwrite: bool = _f(False, "Replace an existing file of the same name.")
    save_every_steps: int = _f(0, "Also save <name>-stepNNNNNN.safetensors every N steps (0 = off).", low=0, high=MAX_STEPS)
    keep_last: int = _f(0, "Keep only the last N intermediate files (0 = keep all).", low=0, high=10_000)
    save_state_every_steps: int = _f(0, "Save a resumable state every N steps (it is also saved on stop and at the end).", low=0, high=MAX_STEPS)
    save_precision: str = _f("fp16", "Precision of the saved weights.", SAVE_PRECISIONS)
    logs_dir: str = _f("", "metrics.jsonl, samples, TensorBoard events and the resumable state (default: <dir>/<name>_logs).", path="dir")
    tensorboard: bool = _f(False, "Write TensorBoard events to logs_dir (needs the tensorboard package).")


@dataclass
class SampleSection:
    every_steps: int = _f(0, "Render sample images every N steps (0 = off).", low=0, high=MAX_STEPS)
    prompts: List[str] = _f([], "Sample prompts, one image each.")
    negative_prompt: str = _f("", "Negative prompt for samples.")
    seed: int = _f(1234, "Seed of the sample images (the same for every step, to compare).", low=0, high=2**32 - 1)
    steps: int = _f(20, "Sampling steps.", low=1, high=150)
    cfg_scale: float = _f(7.0, "Guidance scale.", low=0.0, high=30.0)
    width: int = _f(0, "Sample width (0 = the training resolution).", low=0, high=4096)
    height: int = _f(0, "Sample height (0 = the training resolution).", low=0, high=4096)


SECTION_CLASSES = {"model": ModelSection, "dataset": DatasetSection, "network": NetworkSection,
                   "train": TrainSection, "output": OutputSection, "sample": SampleSection}


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    sample: SampleSection = field(default_factory=SampleSection)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Nested plain dicts ({"train": {"unet_lr": 1e-4, ...}, ...}); JSON/TOML-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Defaults updated by a (partial) nested dict; raises ConfigError listing every bad key/type.

        Values are type-checked here; ranges and cross-field rules are `validate`'s job.
        """
        from lora_trainer.config.validate import parse_dict, raise_for

        config, errors = parse_dict(data)
        raise_for(errors)
        return config

    def copy(self) -> "TrainConfig":
        return copy.deepcopy(self)

    def get(self, path: str) -> Any:
        """Value at "section.key"."""
        section, key = path.split(".", 1)
        return getattr(getattr(self, section), key)

    @property
    def output_stem(self) -> str:
        """The LoRA's file stem: `output.name` as `sanitize_output_name` cleans it (ConfigError if
        it is no usable name). Every file of a run is named from this, never from the raw name."""
        from lora_trainer.config.names import sanitize_output_name

        return sanitize_output_name(self.output.name)

    @property
    def logs_dir(self) -> Path:
        return Path(self.output.logs_dir) if self.output.logs_dir else Path(self.output.dir) / f"{self.output_stem}_logs"


SECTIONS = {f.name: f.type for f in fields(TrainConfig)}


@dataclass(frozen=True)
class FieldError:
    """One problem with one setting: `path` is "section.key" (or a section, or "(file)")."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def field_default(f) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def field_type(default: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list[str]"}[type(default)]


def iter_fields() -> Iterator[Tuple[str, Any]]:
    """("section.key", dataclass field) for every setting, in display order."""
    for section, cls in SECTION_CLASSES.items():
        for f in fields(cls):
            yield f"{section}.{f.name}", f


def field_info(section: str, key: Optional[str] = None) -> Dict[str, Any]:
    """Help text, choices, range, default and type of one field (`field_info("train.unet_lr")` also works)."""
    if key is None:
        section, _, key = section.partition(".")
    for f in fields(SECTION_CLASSES[section]):
        if f.name == key:
            default = field_default(f)
            return {**f.metadata, "default": default, "type": field_type(default)}
    raise KeyError(f"{section}.{key}")


def schema() -> Dict[str, List[Dict[str, Any]]]:
    """Every section's fields with name, type, default, help, choices, low, high, path (for the UI)."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for path, f in iter_fields():
        section, name = path.split(".", 1)
        out.setdefault(section, []).append({"name": name, **field_info(section, name)})
    return out


def to_flat(config: TrainConfig) -> Dict[str, Any]:
    """{"train.unet_lr": 1e-4, ...}: one entry per field (the UI binds components to these paths)."""
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}
