"""The kohya-format state dict of trained adapters, and an atomic, never-clobbering save.

Our own exporter (not diffusers' converter, which writes alpha = rank and mislabels SD1's
text encoder): names from `kohya_names`, `.alpha` = the alpha that was trained with, DoRA
`dora_scale` on the input axis, LoKr written so that consumers which ignore alpha for full
factors still apply the trained delta.
"""

import hashlib
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from lora_trainer.files import write_atomically
from lora_trainer.models.families import ModelConfig
from lora_trainer.networks.adapters import ADAPTER, AdapterSet
from lora_trainer.networks.kohya_names import kohya_name

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "float": torch.float32}


def _lora_tensors(layer: nn.Module) -> Dict[str, torch.Tensor]:
    return {
        "lora_down.weight": layer.lora_A[ADAPTER].weight,
        "lora_up.weight": layer.lora_B[ADAPTER].weight,
        "alpha": torch.tensor(float(layer.lora_alpha[ADAPTER])),
    }


def _loha_tensors(layer: nn.Module) -> Dict[str, torch.Tensor]:
    out = {name: getattr(layer, name)[ADAPTER] for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    for name in ("hada_t1", "hada_t2"):
        if ADAPTER in getattr(layer, name):
            out[name] = getattr(layer, name)[ADAPTER]
    out["alpha"] = torch.tensor(float(layer.alpha[ADAPTER]))
    return out


def lokr_trained_scale(layer: nn.Module) -> float:
    """The factor peft applies on top of kron(w1, w2): none in peft 0.13 (alpha is not used)."""
    return 1.0


def _lokr_tensors(layer: nn.Module) -> Dict[str, torch.Tensor]:
    out = {}
    for name in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"):
        if ADAPTER in getattr(layer, name):
            out[name] = getattr(layer, name)[ADAPTER]
    scale = lokr_trained_scale(layer)
    # Consumers (A1111 network_lokr, ComfyUI) scale by alpha / dim when a factor is decomposed,
    # dim being that decomposition's rank, and by 1 when both factors are full matrices.
    if "lokr_w2_b" in out:
        out["alpha"] = torch.tensor(float(out["lokr_w2_b"].shape[0]) * scale)
    elif "lokr_w1_b" in out:
        out["alpha"] = torch.tensor(float(out["lokr_w1_b"].shape[0]) * scale)
    else:
        out["lokr_w1"] = out["lokr_w1"] * scale
        out["alpha"] = torch.tensor(float(layer.alpha[ADAPTER]))
    return out


def layer_tensors(layer: nn.Module) -> Dict[str, torch.Tensor]:
    """Kohya tensors (by suffix) of one adapted layer."""
    if hasattr(layer, "lora_A"):
        out = _lora_tensors(layer)
    elif hasattr(layer, "hada_w1_a"):
        out = _loha_tensors(layer)
    elif hasattr(layer, "lokr_w1"):
        out = _lokr_tensors(layer)
    else:
        raise TypeError(f"unsupported adapter layer {type(layer).__name__}")
    if hasattr(layer, "dora"):
        out["dora_scale"] = layer.dora.dora_scale()
    return out


def kohya_state_dict(adapters: AdapterSet, config: ModelConfig, save_precision: str = "fp16") -> Dict[str, torch.Tensor]:
    """{`<kohya module name>.<suffix>`: tensor} for every adapted layer, in `save_precision`."""
    dtype = SAVE_DTYPES[save_precision]
    out: Dict[str, torch.Tensor] = {}
    for component in adapters.tuners:
        for path, layer in adapters.layers(component):
            name = kohya_name(config, component, path)
            for suffix, tensor in layer_tensors(layer).items():
                out[f"{name}.{suffix}"] = tensor.detach().to("cpu", dtype).contiguous()
    return out


def _data_region_sha256(blob: bytes) -> str:
    header_length = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header_length:]).hexdigest()


def with_hashes(tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> Dict[str, str]:
    """Add `sshs_model_hash` (A1111's "addnet" hash: sha256 of the tensor data) and `sshs_legacy_hash`."""
    from safetensors.torch import save

    blob = save(tensors, metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    legacy = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    return {**metadata, "sshs_model_hash": _data_region_sha256(blob), "sshs_legacy_hash": legacy}


def save_lora(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str], overwrite: bool = False) -> Path:
    """Save a LoRA file atomically; refuse to replace an existing file unless `overwrite`."""
    from safetensors.torch import save

    from lora_trainer.errors import UserError

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; choose another output name or allow overwriting")
    metadata = with_hashes(tensors, {k: str(v) for k, v in metadata.items()})
    write_atomically(path, save(tensors, metadata=metadata))
    return path
