"""Import a kohya_ss GUI JSON or an sd-scripts TOML (argument style) into a TrainConfig.

Both become one flat dict of sd-scripts argument names first (the GUI's own keys such as
`LoRA_type`, `lr_warmup` in percent, `max_resolution`, `epoch`, `additional_parameters` are
translated), then mapped onto our fields. Every key we do not use is reported in `ignored`
with a reason; conversions that change a value's form are reported in `notes`. Empty strings
in a kohya JSON mean "unset". Secrets (API keys, tokens) are never echoed.
"""

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from lora_trainer.config.schema import TrainConfig, field_default, iter_fields
from lora_trainer.config.validate import coerce
from lora_trainer.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10 (A1111)
    import tomli as tomllib


@dataclass(frozen=True)
class IgnoredKey:
    key: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.reason}"


@dataclass
class ImportResult:
    config: TrainConfig
    ignored: List[IgnoredKey] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    source: str = ""

    @property
    def ignored_keys(self) -> List[str]:
        return [item.key for item in self.ignored]

    def report(self) -> str:
        lines = [f"imported from {self.source}"] if self.source else []
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  ignored {item}" for item in self.ignored]
        return "\n".join(lines)


# sd-scripts argument -> our field, where the meaning is the same.
DIRECT = {
    "pretrained_model_name_or_path": "model.checkpoint",
    "clip_skip": "model.clip_skip",
    "train_data_dir": "dataset.dir",
    "reg_data_dir": "dataset.reg_dir",
    "caption_extension": "dataset.caption_extension",
    "enable_bucket": "dataset.buckets",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_no_upscale": "dataset.bucket_no_upscale",
    "random_crop": "dataset.random_crop",
    "flip_aug": "dataset.flip",
    "shuffle_caption": "dataset.shuffle_tags",
    "keep_tokens": "dataset.keep_tokens",
    "caption_dropout_rate": "dataset.caption_dropout",
    "caption_tag_dropout_rate": "dataset.tag_dropout",
    "cache_latents": "dataset.cache_latents",
    "cache_text_encoder_outputs": "dataset.cache_text_encoder_outputs",
    "prior_loss_weight": "dataset.prior_loss_weight",
    "network_dim": "network.rank",
    "network_alpha": "network.alpha",
    "network_dropout": "network.dropout",
    "train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "lr_scheduler_num_cycles": "train.lr_scheduler_num_cycles",
    "lr_scheduler_power": "train.lr_scheduler_power",
    "seed": "train.seed",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "min_snr_gamma": "train.min_snr_gamma",
    "noise_offset": "train.noise_offset",
    "multires_noise_iterations": "train.multires_noise_iterations",
    "multires_noise_discount": "train.multires_noise_discount",
    "debiased_estimation_loss": "train.debiased_estimation",
    "zero_terminal_snr": "train.zero_terminal_snr",
    "min_timestep": "train.timestep_min",
    "max_timestep": "train.timestep_max",
    "huber_c": "train.huber_c",
    "max_grad_norm": "train.max_grad_norm",
    "output_dir": "output.dir",
    "output_name": "output.name",
    "save_every_n_steps": "output.save_every_steps",
    "logging_dir": "output.logs_dir",
    "sample_every_n_steps": "sample.every_steps",
}

_ATTENTION = "attention always runs through PyTorch SDPA"
REASONS = {
    "xformers": _ATTENTION, "sdpa": _ATTENTION, "mem_eff_attn": _ATTENTION, "spda": _ATTENTION,
    "cache_latents_to_disk": "latents are cached in memory",
    "vae": "the checkpoint's own VAE is used",
    "no_half_vae": "the VAE precision is chosen by the trainer", "sdxl_no_half_vae": "the VAE precision is chosen by the trainer",
    "full_fp16": "not supported: LoRA weights train in float32 under mixed precision",
    "full_bf16": "not supported: LoRA weights train in float32 under mixed precision",
    "fp8_base": "fp8 base weights are not supported", "fp8_base_unet": "fp8 base weights are not supported",
    "lowram": "memory handling is automatic", "highvram": "memory handling is automatic",
    "max_token_length": "not supported: captions use the standard 75-token windows",
    "save_model_as": "LoRAs are always saved as .safetensors",
    "save_every_n_epochs": "saving by epochs is not supported; use output.save_every_steps",
    "save_last_n_epochs": "use output.keep_last with output.save_every_steps",
    "sample_every_n_epochs": "sampling by epochs is not supported; use sample.every_steps",
    "sample_sampler": "samples use the trainer's sampler",
    "caption_dropout_every_n_epochs": "not supported; use dataset.caption_dropout",
    "color_aug": "not supported", "face_crop_aug_range": "not supported",
    "scale_v_pred_loss_like_noise_pred": "not supported", "v_pred_like_loss": "not supported",
    "adaptive_noise_scale": "not supported", "ip_noise_gamma": "not supported", "noise_offset_random_strength": "not supported",
    "ip_noise_gamma_random_strength": "not supported",
    "stop_text_encoder_training": "not supported: the text encoder trains for the whole run",
    "scale_weight_norms": "not supported", "weighted_captions": "not supported", "masked_loss": "not supported",
    "network_weights": "starting from an existing LoRA is not supported", "dim_from_weights": "starting from an existing LoRA is not supported",
    "resume": "resume with the trainer's --resume and a state folder",
    "dataset_config": "a separate dataset TOML is not read: point dataset.dir at the kohya folder layout",
    "in_json": "fine-tuning metadata JSON is not supported: use caption files",
    "huber_schedule": "huber_c is constant over timesteps here",
    "lr_scheduler_args": "scheduler arguments are not supported",
    "lr_scheduler_type": "custom scheduler classes are not supported",
    "wandb_api_key": "wandb is not supported", "wandb_run_name": "wandb is not supported", "use_wandb": "wandb is not supported",
    "log_tracker_name": "wandb is not supported", "log_tracker_config": "wandb is not supported",
    "training_comment": "not stored in the LoRA",
    "bucket_reso_steps": "bucket sides step by the trainer's fixed amount",
    "max_data_loader_n_workers": "data loading is handled by the trainer",
    "persistent_data_loader_workers": "data loading is handled by the trainer",
    "vae_batch_size": "latents are encoded by the trainer's own batch size",
    "save_state_on_train_end": "the state is always saved at the end",
    "save_last_n_steps_state": "old states are replaced by the newest",
    "block_lr_zero_threshold": "block-wise settings are not supported",
}
for _key in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight"):
    REASONS[_key] = "block-wise ranks and learning rates are not supported"
for _key in ("gpu_ids", "multi_gpu", "num_processes", "num_machines", "main_process_port", "num_cpu_threads_per_process",
             "dynamo_backend", "dynamo_mode", "dynamo_use_fullgraph", "dynamo_use_dynamic", "extra_accelerate_launch_args",
             "ddp_timeout", "ddp_gradient_as_bucket_view", "ddp_static_graph"):
    REASONS[_key] = "accelerate launch settings are not used (one device per run)"

# Values that mean "default/unused" in a kohya_ss JSON: not worth reporting as ignored.
QUIET_DEFAULTS = {
    "save_model_as": "safetensors", "num_cpu_threads_per_process": 2, "num_processes": 1, "num_machines": 1, "bucket_reso_steps": 64,
    "max_token_length": 75, "sample_sampler": "euler_a", "factor": -1, "train_on_input": True, "unit": 1, "huber_schedule": "snr",
    "dynamo_backend": "no", "dynamo_mode": "default", "main_process_port": 0, "save_every_n_epochs": 1, "model_list": None,
    "save_as_bool": None, "vae_batch_size": 0, "max_data_loader_n_workers": 0, "LyCORIS_preset": "full", "mixed_precision": "no",
}
_SECRET = re.compile(r"(api_?key|password|secret|(^|_)token$)", re.IGNORECASE)

OPTIMIZERS = {"adamw": "adamw", "adamw8bit": "adamw8bit", "pagedadamw8bit": "adamw8bit", "lion": "lion", "lion8bit": "lion",
              "pagedlion8bit": "lion", "prodigy": "prodigy", "adafactor": "adafactor"}
SCHEDULERS = {"constant": "constant", "constant_with_warmup": "constant_with_warmup", "cosine": "cosine",
              "cosine_with_restarts": "cosine_with_restarts", "linear": "linear", "polynomial": "polynomial",
              "adafactor": "constant", "cosine_with_min_lr": "cosine"}
LORA_TYPES = {"standard": "lora", "kohya locon": "locon", "lycoris/locon": "locon", "lycoris/loha": "loha", "lycoris/lokr": "lokr"}
_PROMPT_OPTIONS = {"n": "sample.negative_prompt", "w": "sample.width", "h": "sample.height", "d": "sample.seed",
                   "l": "sample.cfg_scale", "s": "sample.steps"}


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _off(value: Any) -> bool:
    return _unset(value) or value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0) \
        or (isinstance(value, str) and value.strip().lower() in ("0", "false", "none", "0.0")) or value == []


def _number(value: Any) -> Optional[float]:
    if _unset(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


class _Importer:
    def __init__(self, source: str):
        self.source = source
        self.values: Dict[str, Tuple[Any, str]] = {}
        self.ignored: List[IgnoredKey] = []
        self.notes: List[str] = []
        self._defaults = {path: field_default(f) for path, f in iter_fields()}

    def set(self, path: str, value: Any, key: str) -> None:
        self.values[path] = (value, key)

    def ignore(self, key: str, value: Any, reason: str) -> None:
        if _SECRET.search(key):
            value = "***"
        self.ignored = [item for item in self.ignored if item.key != key]
        self.ignored.append(IgnoredKey(key, value, reason))

    def build(self) -> ImportResult:
        config = TrainConfig()
        for path, (value, key) in self.values.items():
            coerced, error = coerce(value, self._defaults[path], path)
            if error:
                self.ignore(key, value, f"cannot be used as {path}: {error.message}")
                continue
            section, name = path.split(".", 1)
            setattr(getattr(config, section), name, coerced)
        return ImportResult(config, self.ignored, self.notes, self.source)


def _parse_kv_list(value: Any) -> List[Tuple[str, str]]:
    """network_args / optimizer_args: ["k=v", ...] or "k=v k=v" -> [(k, v)]."""
    items = value if isinstance(value, (list, tuple)) else shlex.split(str(value)) if not _unset(value) else []
    out = []
    for item in items:
        key, _, val = str(item).partition("=")
        out.append((key.strip(), val.strip().strip('"').strip("'")))
    return out


def parse_cli_args(text: str) -> Dict[str, Any]:
    """`--key value --flag --key=value --network_args "a=1" "b=2"` -> {key: value} (flags: True)."""
    try:
        tokens = shlex.split(text or "")
    except ValueError:
        tokens = (text or "").split()
    out: Dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("--"):
            continue
        key, eq, value = token[2:].partition("=")
        if eq:
            out[key] = value
            continue
        values = []
        while index < len(tokens) and not tokens[index].startswith("--"):
            values.append(tokens[index])
            index += 1
        out[key] = True if not values else values[0] if len(values) == 1 and key not in ("network_args", "optimizer_args") else values
    return out


def _parse_prompts(text: str) -> List[Tuple[str, Dict[str, str]]]:
    """sd-scripts prompt lines: `prompt --n negative --w 512 --h 768 --d 42 --l 7 --s 28`."""
    out = []
    for line in str(text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(" --")
        options = {}
        for part in parts[1:]:
            code, _, value = part.strip().partition(" ")
            options[code] = value.strip()
        out.append((parts[0].strip(), options))
    return out


def _resolution(value: Any) -> Tuple[Optional[int], Optional[str]]:
    if isinstance(value, (list, tuple)):
        sides = list(value)
    else:
        sides = [s for s in re.split(r"[,x ]+", str(value).strip()) if s]
    try:
        numbers = [int(float(s)) for s in sides]
    except (TypeError, ValueError):
        return None, None
    if len(numbers) == 1 or (len(numbers) == 2 and numbers[0] == numbers[1]):
        return numbers[0], None
    if len(numbers) == 2:
        side = int(round(math.sqrt(numbers[0] * numbers[1]) / 64) * 64)
        return side, f"resolution {numbers[0]}x{numbers[1]} became {side} (same area; buckets keep each image's aspect)"
    return None, None


def _map_args(imp: _Importer, args: Dict[str, Any], *, gui: bool) -> None:
    """sd-scripts arguments (flat dict) onto our fields; reports everything it does not use."""
    used = set()

    def take(key: str) -> Any:
        used.add(key)
        return args.get(key)

    for key, path in DIRECT.items():
        value = take(key)
        if not _unset(value):
            imp.set(path, value, key)

    # family and prediction
    sdxl, v2, vparam = _truthy(take("sdxl")), _truthy(take("v2")), _truthy(take("v_parameterization"))
    if sdxl:
        imp.set("model.family", "sdxl", "sdxl")
    elif v2:
        imp.set("model.family", "sd2", "v2")
    if vparam:
        imp.set("model.prediction_type", "v_prediction", "v_parameterization")
    elif v2:
        imp.set("model.prediction_type", "epsilon", "v2")

    # resolution
    value = take("resolution")
    if not _unset(value):
        side, note = _resolution(value)
        if side is None:
            imp.ignore("resolution", value, "not a resolution like 512 or 512,512")
        else:
            imp.set("dataset.resolution", side, "resolution")
            if note:
                imp.notes.append(note)

    # network
    module, net_args = take("network_module"), take("network_args")
    module = "networks.lora" if _unset(module) else str(module).strip()
    parsed = dict(_parse_kv_list(net_args))
    algo = parsed.pop("algo", "").lower()
    for key in ("conv_dim", "conv_alpha"):
        if key in parsed:
            imp.set("network." + ("conv_rank" if key == "conv_dim" else "conv_alpha"), parsed.pop(key), f"network_args {key}")
    has_conv = any(path == "network.conv_rank" for path in imp.values)
    if "dropout" in parsed:
        imp.set("network.dropout", parsed.pop("dropout"), "network_args dropout")
    if "dora_wd" in parsed:
        imp.set("network.dora", parsed.pop("dora_wd"), "network_args dora_wd")
    for key, val in parsed.items():
        if key == "preset" and val.lower() in ("full", "default", ""):
            continue
        if key == "factor" and val.strip() == "-1":
            continue
        imp.ignore(f"network_args {key}", val, "network argument not supported")
    if module == "networks.lora":
        imp.set("network.type", "locon" if has_conv else "lora", "network_module")
    elif module == "lycoris.kohya":
        if algo in ("", "lora", "locon"):
            imp.set("network.type", "locon" if has_conv or algo == "locon" else "lora", "network_module")
        elif algo in ("loha", "lokr"):
            imp.set("network.type", algo, "network_args algo")
        else:
            imp.ignore("network_args algo", algo, "LyCORIS algorithm not supported (lora, locon, loha, lokr are); using lora")
    else:
        imp.ignore("network_module", module, "only networks.lora and lycoris.kohya are supported; using lora")

    # what trains, learning rates
    lr, unet, te = _number(take("learning_rate")), take("unet_lr"), take("text_encoder_lr")
    if isinstance(te, (list, tuple)):
        if len(set(te)) > 1:
            imp.notes.append(f"text_encoder_lr {list(te)}: one rate is used for both text encoders ({te[0]})")
        te = te[0] if te else None
    unet_n, te_n = _number(unet), _number(te)
    unet_only, te_only = _truthy(take("network_train_unet_only")), _truthy(take("network_train_text_encoder_only"))
    if gui and not unet_n and not te_n:
        unet_n = te_n = lr
    else:
        if unet_n is None:
            unet_n = lr
        if te_n is None:
            te_n = lr
        if te_n == 0 and unet_n:
            unet_only = True
            te_n = None
        if unet_n == 0 and te_n:
            te_only = True
    if unet_n is not None:
        imp.set("train.unet_lr", unet_n, "unet_lr" if not _unset(unet) else "learning_rate")
    if te_n is not None:
        imp.set("train.text_encoder_lr", te_n, "text_encoder_lr" if not _unset(te) else "learning_rate")
    if unet_only:
        imp.set("network.train_text_encoder", False, "network_train_unet_only")
    if te_only:
        imp.set("train.unet_lr", 0.0, "network_train_text_encoder_only")

    # optimizer
    name = take("optimizer_type")
    if not _unset(name):
        short = str(name).strip().split(".")[-1].lower()
        if short in OPTIMIZERS:
            imp.set("train.optimizer", OPTIMIZERS[short], "optimizer_type")
            if short != OPTIMIZERS[short]:
                imp.notes.append(f"optimizer {name} runs as {OPTIMIZERS[short]}")
        else:
            imp.ignore("optimizer" if gui else "optimizer_type", name, f"optimizer not supported ({', '.join(sorted(set(OPTIMIZERS.values())))}); using adamw")
    for key, val in _parse_kv_list(take("optimizer_args")):
        if key == "weight_decay":
            imp.set("train.weight_decay", val, "optimizer_args weight_decay")
        else:
            imp.ignore(f"optimizer_args {key}", val, "optimizer argument not supported")

    # schedule
    name = take("lr_scheduler")
    if not _unset(name):
        key = str(name).strip().lower()
        if key in SCHEDULERS:
            imp.set("train.scheduler", SCHEDULERS[key], "lr_scheduler")
            if key != SCHEDULERS[key]:
                imp.notes.append(f"lr_scheduler {name} runs as {SCHEDULERS[key]}")
        else:
            imp.ignore("lr_scheduler", name, f"scheduler not supported ({', '.join(sorted(set(SCHEDULERS.values())))}); using cosine")

    # length
    steps, epochs = _number(take("max_train_steps")), _number(take("max_train_epochs"))
    gui_epoch = _number(take("epoch"))
    max_steps = None
    if epochs and epochs > 0:
        imp.set("train.epochs", epochs, "max_train_epochs")
        imp.set("train.max_steps", 0, "max_train_epochs")
        if steps:
            imp.notes.append(f"max_train_epochs ({epochs:g}) overrides max_train_steps ({steps:g}), as in sd-scripts")
    elif steps and steps > 0:
        imp.set("train.max_steps", steps, "max_train_steps")
        imp.set("train.epochs", 0, "max_train_steps")
        max_steps = steps
        if gui_epoch:
            imp.ignore("epoch", args.get("epoch"), "max_train_steps is set, so the run length is in steps")
    elif gui and gui_epoch and gui_epoch > 0:
        imp.set("train.epochs", gui_epoch, "epoch")
        imp.set("train.max_steps", 0, "epoch")
    elif not gui:
        imp.set("train.max_steps", 1600, "max_train_steps")
        max_steps = 1600
        imp.notes.append("no max_train_steps or max_train_epochs: sd-scripts' default of 1600 steps")

    # warm-up: GUI in percent of the run, sd-scripts in steps (or a ratio below 1)
    percent, warm = _number(take("lr_warmup")), take("lr_warmup_steps")
    warm_n = _number(warm)
    if percent:
        if max_steps:
            imp.set("train.warmup_steps", int(round(max_steps * percent / 100)), "lr_warmup")
            imp.notes.append(f"lr_warmup {percent:g}% of {max_steps:g} steps = {int(round(max_steps * percent / 100))} warm-up steps")
        else:
            imp.ignore("lr_warmup", args.get("lr_warmup"), "a percentage of a run measured in epochs: set train.warmup_steps yourself")
    elif warm_n:
        if 0 < warm_n < 1:
            if max_steps:
                imp.set("train.warmup_steps", int(round(max_steps * warm_n)), "lr_warmup_steps")
            else:
                imp.ignore("lr_warmup_steps", warm, "a ratio of a run measured in epochs: set train.warmup_steps yourself")
        else:
            imp.set("train.warmup_steps", warm_n, "lr_warmup_steps")

    # precision
    value = take("mixed_precision")
    if not _unset(value):
        if str(value).lower() in ("no", "fp16", "bf16"):
            imp.set("train.mixed_precision", str(value).lower(), "mixed_precision")
        else:
            imp.ignore("mixed_precision", value, "use no, fp16 or bf16")
    value = take("save_precision")
    if not _unset(value):
        mapped = {"float": "fp32", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "bf16": "bf16"}.get(str(value).lower())
        if mapped:
            imp.set("output.save_precision", mapped, "save_precision")
        else:
            imp.ignore("save_precision", value, "use fp16, bf16 or float")

    # loss
    value = take("loss_type")
    if not _unset(value):
        if str(value).lower() in ("l2", "huber"):
            imp.set("train.loss_type", str(value).lower(), "loss_type")
        else:
            imp.ignore("loss_type", value, "only l2 and huber are supported; using l2")

    # saving, logs
    save_every = _number(args.get("save_every_n_steps")) or 0
    value = take("save_last_n_steps")
    if _number(value):
        if save_every:
            imp.set("output.keep_last", math.ceil(_number(value) / save_every), "save_last_n_steps")
        else:
            imp.ignore("save_last_n_steps", value, "no effect without save_every_n_steps")
    if _truthy(take("save_state")):
        if save_every:
            imp.set("output.save_state_every_steps", save_every, "save_state")
        else:
            imp.notes.append("save_state: the resumable state is saved when training stops and at the end")
    value = take("log_with")
    if not _unset(value):
        if str(value).lower() in ("tensorboard", "all"):
            imp.set("output.tensorboard", True, "log_with")
        if str(value).lower() in ("wandb", "all"):
            imp.ignore("log_with", value, "wandb is not supported" + ("; TensorBoard is on" if str(value).lower() == "all" else ""))

    # sample prompts: the GUI has the text, sd-scripts a file
    value = take("sample_prompts")
    if not _unset(value):
        text = value if gui else None
        if not gui:
            candidate = Path(str(value)).expanduser()
            if candidate.suffix.lower() == ".txt" and candidate.is_file():
                text = candidate.read_text(encoding="utf-8-sig", errors="replace")
            else:
                imp.ignore("sample_prompts", value, "prompt file not read (only an existing .txt file is); put the prompts in sample.prompts")
        if text is not None:
            _apply_prompts(imp, text)

    for key, value in args.items():
        if key in used or _off(value):
            continue
        if key in QUIET_DEFAULTS and str(QUIET_DEFAULTS[key]).lower() == str(value).strip().lower():
            continue
        if key == "huber_schedule" and args.get("loss_type") != "huber":
            continue
        imp.ignore(key, value, REASONS.get(key, "not supported by this trainer"))


def _apply_prompts(imp: _Importer, text: str) -> None:
    prompts = _parse_prompts(text)
    if not prompts:
        return
    imp.set("sample.prompts", [prompt for prompt, _ in prompts], "sample_prompts")
    first = prompts[0][1]
    for code, value in first.items():
        if code in _PROMPT_OPTIONS:
            imp.set(_PROMPT_OPTIONS[code], value, f"sample_prompts --{code}")
        else:
            imp.ignore(f"sample_prompts --{code}", value, "prompt option not supported")
    if any(options != first for _, options in prompts[1:]):
        imp.notes.append("sample prompts had different options per line; the first line's (--n, --w, --h, --d, --l, --s) apply to all")


def _gui_to_args(data: Dict[str, Any], imp: _Importer) -> Dict[str, Any]:
    """kohya_ss GUI keys -> sd-scripts argument names (network type, optimizer, resolution, extras)."""
    args = {key: value for key, value in data.items() if not _unset(value)}
    if "optimizer" in args:
        args["optimizer_type"] = args.pop("optimizer")
    if "max_resolution" in args:
        args["resolution"] = args.pop("max_resolution")
    if "sdxl_cache_text_encoder_outputs" in args:
        args["cache_text_encoder_outputs"] = args.pop("sdxl_cache_text_encoder_outputs")
    args.pop("model_list", None)

    # network: LoRA_type picks the module; conv_dim/alpha and dora_wd become network_args
    lora_type = args.pop("LoRA_type", "Standard")
    conv_dim, conv_alpha, dora = args.pop("conv_dim", None), args.pop("conv_alpha", None), args.pop("dora_wd", None)
    kind = LORA_TYPES.get(str(lora_type).strip().lower())
    net_args = _parse_kv_list(args.pop("network_args", None))
    if kind is None:
        imp.ignore("LoRA_type", lora_type, "network type not supported (Standard, Kohya LoCon, LyCORIS/LoCon, LoHa, LoKr are); using lora")
        kind = "lora"
    if kind == "lora":
        args["network_module"] = "networks.lora"
    elif kind == "locon" and str(lora_type).lower().startswith("kohya"):
        args["network_module"] = "networks.lora"
    else:
        args["network_module"] = "lycoris.kohya"
        net_args.insert(0, ("algo", kind))
    if kind != "lora":
        if not _unset(conv_dim):
            net_args.append(("conv_dim", str(conv_dim)))
        if not _unset(conv_alpha):
            net_args.append(("conv_alpha", str(conv_alpha)))
        if kind == "locon" and _unset(conv_dim):
            net_args.append(("conv_dim", "8"))
    if _truthy(dora):
        net_args.append(("dora_wd", "true"))

    # noise: the GUI passes either the offset or the multires settings
    noise_type = str(args.pop("noise_offset_type", "")).strip().lower()
    if noise_type == "multires":
        if not _off(args.pop("noise_offset", None)):
            imp.ignore("noise_offset", data.get("noise_offset"), "noise_offset_type is Multires")
    elif noise_type == "original":
        for key in ("multires_noise_iterations", "multires_noise_discount"):
            if not _off(args.pop(key, None)) and key == "multires_noise_iterations":
                imp.ignore(key, data.get(key), "noise_offset_type is Original")

    # free-form extra arguments, appended last on the GUI's command line: they win
    extra = args.pop("additional_parameters", "")
    parsed = parse_cli_args(str(extra)) if not _unset(extra) else {}
    if "network_args" in parsed:
        extra_net = parsed.pop("network_args")
        net_args.extend(_parse_kv_list(extra_net if isinstance(extra_net, list) else [extra_net]))
    if net_args:
        args["network_args"] = [f"{k}={v}" for k, v in net_args]
    args.update(parsed)
    return args


def import_kohya_json(source: Union[str, Path, Dict[str, Any]]) -> ImportResult:
    """A kohya_ss GUI config (JSON file or its dict) -> ImportResult(config, ignored, notes)."""
    data = _load(source, "json") if not isinstance(source, dict) else source
    if not isinstance(data, dict):
        raise ConfigError("a kohya_ss config must be a JSON object")
    imp = _Importer(f"kohya_ss GUI JSON{'' if isinstance(source, dict) else f' {source}'}")
    _map_args(imp, _gui_to_args(data, imp), gui=True)
    return imp.build()


def import_sd_scripts_toml(source: Union[str, Path, Dict[str, Any]]) -> ImportResult:
    """An sd-scripts `--config_file` TOML (flat, or in tables that sd-scripts flattens) -> ImportResult."""
    data = _load(source, "toml") if not isinstance(source, dict) else source
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    imp = _Importer(f"sd-scripts TOML{'' if isinstance(source, dict) else f' {source}'}")
    _map_args(imp, flat, gui=False)
    return imp.build()


def import_config(path: Union[str, Path]) -> ImportResult:
    """A kohya_ss JSON or an sd-scripts TOML/JSON, chosen by content."""
    path = Path(path)
    data = _load(path, "json" if path.suffix.lower() == ".json" else "toml")
    gui_keys = {"LoRA_type", "max_resolution", "epoch", "lr_warmup", "optimizer", "additional_parameters", "model_list"}
    if path.suffix.lower() == ".json" and gui_keys & set(data):
        return import_kohya_json(data)
    return import_sd_scripts_toml(data)


def _load(path: Union[str, Path], kind: str) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read it as {kind.upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings")
    return data
