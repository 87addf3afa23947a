"""Reading checkpoint files safely, with one clear message per kind of bad file.

Only safetensors and `torch.load(weights_only=True)` are used: a pickle that needs more than
plain tensors is refused, never executed.
"""

import json
import pickle
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from lora_trainer.errors import CheckpointError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def read_safetensors_metadata(path: Path) -> Dict[str, str]:
    """The header's `__metadata__` (all strings); empty when there is none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types, plus OSError
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _load_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _load_pickle(path: Path) -> Dict[str, torch.Tensor]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: this pickle file contains Python objects besides tensors, and loading it would run "
            f"code from the file; it was refused. Convert it to .safetensors with a trusted tool, or use a "
            f".safetensors download of the same model. ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a state dict of tensors")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def read_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(state dict, metadata) of a single-file checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if path.suffix.lower() == ".safetensors":
        metadata = read_safetensors_metadata(path)
        return _load_safetensors(path), metadata
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return _load_pickle(path), {}
    raise CheckpointError(f"{path}: unknown checkpoint type; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")


def prediction_type_from_yaml(path: Path) -> Optional[str]:
    """A1111's convention: `<checkpoint>.yaml` beside the file; `parameterization: "v"` means v-prediction."""
    yaml_path = Path(path).with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    text = yaml_path.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"^\s*parameterization:\s*[\"']?(\w+)", text, re.MULTILINE)
    if match is None:
        return "epsilon"
    return "v_prediction" if match.group(1) == "v" else "epsilon"


def prediction_type_from_metadata(metadata: Dict[str, str]) -> Optional[str]:
    value = metadata.get("lora_trainer.prediction_type") or metadata.get("modelspec.prediction_type")
    if not value:
        return None
    value = value.strip().lower()
    if value in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if value in ("epsilon", "eps"):
        return "epsilon"
    return None


def metadata_json(metadata: Dict[str, str], key: str):
    raw = metadata.get(key)
    return json.loads(raw) if raw else None
