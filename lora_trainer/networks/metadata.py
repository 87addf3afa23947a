"""The metadata written into a LoRA file (`ss_*` as kohya sd-scripts writes them, `modelspec.*`)
and the `<name>.json` sidecar A1111 reads. All values are strings; nested ones are JSON.

A1111 decides which base models a LoRA card shows for from `ss_base_model_version` / `ss_v2`,
and uses `ss_output_name` as the name inserted into the prompt, so that must be the file stem.
"""

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

BASE_MODEL_VERSION = {("sd1", False): "sd_v1", ("sd2", False): "sd_v2", ("sd2", True): "sd_v2_v", ("sdxl", False): "sdxl_base_v1-0", ("sdxl", True): "sdxl_base_v1-0"}
MODELSPEC_ARCHITECTURE = {
    ("sd1", False): "stable-diffusion-v1", ("sd2", False): "stable-diffusion-v2-512", ("sd2", True): "stable-diffusion-v2-768-v",
    ("sdxl", False): "stable-diffusion-xl-v1-base", ("sdxl", True): "stable-diffusion-xl-v1-base",
}
SIDECAR_VERSION = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}


@dataclass
class DatasetFacts:
    """What the metadata says about the data: kohya folder names, counts, tags, buckets."""

    dirs: Dict[str, Dict[str, int]] = field(default_factory=dict)  # {"10_name": {"n_repeats": 10, "img_count": 25}}
    tag_frequency: Dict[str, Dict[str, int]] = field(default_factory=dict)  # {"10_name": {"tag": n}}
    num_train_images: int = 0  # with repeats
    num_reg_images: int = 0
    buckets: Dict[str, int] = field(default_factory=dict)  # {"512x512": n}


def network_module_and_args(network) -> Tuple[str, Dict[str, str]]:
    """`ss_network_module` and `ss_network_args` for our network settings."""
    args: Dict[str, str] = {}
    if network.type in ("locon", "loha", "lokr"):
        args["conv_dim"] = str(network.conv_rank)
        args["conv_alpha"] = str(network.conv_alpha)
    if network.type in ("loha", "lokr") or network.dora:
        args["algo"] = {"lora": "lora", "locon": "locon", "loha": "loha", "lokr": "lokr"}[network.type]
        if network.dora:
            args["dora_wd"] = "True"
            args["wd_on_output"] = "False"
        return "lycoris.kohya", args
    return "networks.lora", args


def _s(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def lora_metadata(config, *, family: str, prediction_type: str, output_name: str, data: DatasetFacts,
                  started_at: float, finished_at: float, steps: int, epoch: int, total_steps: int,
                  base_model_name: str = "", base_model_sha256: str = "", base_model_legacy_hash: str = "",
                  trigger: str = "", num_processes: int = 1) -> Dict[str, str]:
    """Every `ss_*` and `modelspec.*` key for a LoRA trained with `config` (a TrainConfig).

    `num_processes`: data-parallel processes; kohya's total batch is per-device batch x processes x accumulation.
    """
    v_pred = prediction_type == "v_prediction"
    module, args = network_module_and_args(config.network)
    train, dataset, network = config.train, config.dataset, config.network
    resolution = int(dataset.resolution)
    meta = {
        "ss_output_name": output_name,
        "ss_base_model_version": BASE_MODEL_VERSION[(family, v_pred)],
        "ss_v2": _s(family == "sd2"),
        "ss_network_module": module,
        "ss_network_dim": _s(network.rank),
        "ss_network_alpha": _s(float(network.alpha)),
        "ss_network_args": json.dumps(args),
        "ss_network_dropout": _s(network.dropout),
        "ss_tag_frequency": json.dumps(data.tag_frequency),
        "ss_dataset_dirs": json.dumps(data.dirs),
        "ss_bucket_info": json.dumps({"buckets": {str(i): {"resolution": [int(x) for x in k.split("x")], "count": n} for i, (k, n) in enumerate(sorted(data.buckets.items()))}}),
        "ss_num_train_images": _s(data.num_train_images),
        "ss_num_reg_images": _s(data.num_reg_images),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_enable_bucket": _s(dataset.buckets),
        "ss_flip_aug": _s(dataset.flip),
        "ss_shuffle_caption": _s(dataset.shuffle_tags),
        "ss_keep_tokens": _s(dataset.keep_tokens),
        "ss_caption_dropout_rate": _s(dataset.caption_dropout),
        "ss_caption_tag_dropout_rate": _s(dataset.tag_dropout),
        "ss_cache_latents": _s(dataset.cache_latents),
        "ss_sd_model_name": base_model_name,
        "ss_new_sd_model_hash": base_model_sha256,
        "ss_sd_model_hash": base_model_legacy_hash,
        "ss_clip_skip": _s(config.model.clip_skip),
        "ss_training_started_at": _s(round(started_at, 2)),
        "ss_training_finished_at": _s(round(finished_at, 2)),
        "ss_steps": _s(steps),
        "ss_epoch": _s(epoch),
        "ss_max_train_steps": _s(total_steps),
        "ss_learning_rate": _s(train.unet_lr),
        "ss_unet_lr": _s(train.unet_lr),
        "ss_text_encoder_lr": _s(train.text_encoder_lr if network.train_text_encoder else 0),
        "ss_optimizer": train.optimizer,
        "ss_lr_scheduler": train.scheduler,
        "ss_lr_warmup_steps": _s(train.warmup_steps),
        "ss_max_grad_norm": _s(train.max_grad_norm),
        "ss_gradient_checkpointing": _s(train.gradient_checkpointing),
        "ss_gradient_accumulation_steps": _s(train.grad_accum),
        "ss_batch_size_per_device": _s(train.batch_size),
        "ss_total_batch_size": _s(train.batch_size * num_processes * train.grad_accum),
        "ss_mixed_precision": train.mixed_precision,
        "ss_seed": _s(train.seed),
        "ss_min_snr_gamma": _s(train.min_snr_gamma),
        "ss_noise_offset": _s(train.noise_offset),
        "ss_multires_noise_iterations": _s(train.multires_noise_iterations),
        "ss_multires_noise_discount": _s(train.multires_noise_discount),
        "ss_debiased_estimation": _s(train.debiased_estimation),
        "ss_zero_terminal_snr": _s(train.zero_terminal_snr),
        "ss_loss_type": train.loss_type,
        "ss_prior_loss_weight": _s(dataset.prior_loss_weight),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": MODELSPEC_ARCHITECTURE[(family, v_pred)] + "/" + ("lora" if network.type in ("lora", "locon") and not network.dora else "lycoris"),
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl" else "diffusers",
        "modelspec.title": output_name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": datetime.datetime.fromtimestamp(finished_at).isoformat(timespec="seconds"),
        "modelspec.prediction_type": "v" if v_pred else "epsilon",
        "modelspec.implementation_version": "sd-webui-lora-trainer",
    }
    if config.model.clip_skip and int(config.model.clip_skip) > 1:
        meta["modelspec.encoder_layer"] = _s(config.model.clip_skip)
    if trigger:
        meta["modelspec.trigger_phrase"] = trigger
    return meta


def common_leading_tags(captions: List[List[str]], limit: int = 3) -> str:
    """The first tag(s) every caption shares: the trigger users expect in `activation text`."""
    if not captions:
        return ""
    shared: List[str] = []
    for position in range(limit):
        values = {tags[position].strip().lower() if len(tags) > position else None for tags in captions}
        if len(values) != 1 or None in values:
            break
        shared.append(captions[0][position].strip())
    return ", ".join(shared)


def sidecar(family: str, activation_text: str, preferred_weight: float = 0.8, description: str = "", notes: str = "") -> Dict[str, Any]:
    """The `<name>.json` A1111 reads beside the LoRA (card settings)."""
    return {
        "description": description,
        "sd version": SIDECAR_VERSION[family],
        "activation text": activation_text,
        "preferred weight": preferred_weight,
        "negative text": "",
        "notes": notes,
    }



def training_resolution(metadata: Dict[str, str], default: int = 512) -> int:
    """The side a LoRA was trained at, from `ss_resolution` ("(512, 512)", "512,768"): the size
    test images of it are best rendered at."""
    import re

    numbers = [int(n) for n in re.findall(r"\d+", metadata.get("ss_resolution", "") or "")]
    return min(numbers) if numbers else default


def file_metadata(path) -> Dict[str, str]:
    """The metadata of a .safetensors file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})
