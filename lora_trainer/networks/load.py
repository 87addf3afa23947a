"""Reading kohya-format LoRA files (ours and kohya's) back into peft modules.

Used to resume from a saved file, to render samples and test grids with a finished LoRA,
and by the round-trip tests. `read_kohya` parses; `apply_kohya` injects adapters of the
file's shapes into a bundle's modules and copies the tensors in.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from lora_trainer.errors import CheckpointError
from lora_trainer.models.families import ModelConfig
from lora_trainer.networks.adapters import ADAPTER, AdapterSet, LayerGroup, NetworkSpec, inject_groups
from lora_trainer.networks.kohya_names import name_index

_HUGE_RANK = 1 << 20  # makes peft keep both LoKr factors as full matrices


@dataclass
class KohyaNetwork:
    modules: Dict[str, Dict[str, torch.Tensor]]  # kohya module name -> {suffix: tensor}
    metadata: Dict[str, str] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def network_type(self) -> str:
        suffixes = {s for tensors in self.modules.values() for s in tensors}
        if any(s.startswith("hada_") for s in suffixes):
            return "loha"
        if any(s.startswith("lokr_") for s in suffixes):
            return "lokr"
        for tensors in self.modules.values():
            down = tensors.get("lora_down.weight")
            if down is not None and down.dim() == 4 and down.shape[-1] > 1:
                return "locon"
        return "lora"

    @property
    def dora(self) -> bool:
        return any("dora_scale" in tensors for tensors in self.modules.values())

    def module_rank(self, tensors: Dict[str, torch.Tensor]) -> int:
        if "lora_down.weight" in tensors:
            return int(tensors["lora_down.weight"].shape[0])
        if "hada_w1_b" in tensors:
            return int(tensors["hada_w1_b"].shape[0])
        for key in ("lokr_w2_b", "lokr_w1_b"):
            if key in tensors:
                return int(tensors[key].shape[0])
        return _HUGE_RANK

    def module_alpha(self, tensors: Dict[str, torch.Tensor]) -> float:
        if "alpha" in tensors:
            return float(tensors["alpha"].float().item())
        return float(self.module_rank(tensors))

    @property
    def rank(self) -> int:
        ranks = Counter(self.module_rank(t) for t in self.modules.values())
        return ranks.most_common(1)[0][0] if ranks else 0

    @property
    def alpha(self) -> float:
        alphas = Counter(self.module_alpha(t) for t in self.modules.values())
        return alphas.most_common(1)[0][0] if alphas else 0.0


def parse_kohya(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None, path: Optional[Path] = None) -> KohyaNetwork:
    modules: Dict[str, Dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in tensors.items():
        name, _, suffix = key.partition(".")
        modules[name][suffix] = tensor
    return KohyaNetwork(dict(modules), dict(metadata or {}), path)


def read_kohya(path: Path) -> KohyaNetwork:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    if not any(key.startswith("lora_") for key in tensors):
        raise CheckpointError(f"{path}: no kohya-format LoRA keys (lora_unet_*, lora_te*_*) in this file")
    return parse_kohya(tensors, metadata, path)


def _assign(layer: nn.Module, tensors: Dict[str, torch.Tensor]) -> None:
    def put(target: torch.Tensor, value: torch.Tensor, what: str) -> None:
        if tuple(target.shape) != tuple(value.shape):
            raise CheckpointError(f"{what}: the file has shape {tuple(value.shape)}, the model needs {tuple(target.shape)}")
        target.copy_(value.to(target.dtype))

    with torch.no_grad():
        for suffix, value in tensors.items():
            if suffix == "alpha":
                continue
            if suffix == "lora_down.weight":
                put(layer.lora_A[ADAPTER].weight, value, suffix)
            elif suffix == "lora_up.weight":
                put(layer.lora_B[ADAPTER].weight, value, suffix)
            elif suffix == "dora_scale":
                put(layer.dora.magnitude, value.flatten(), suffix)
            elif suffix.startswith(("hada_", "lokr_")):
                store = getattr(layer, suffix, None)
                if store is None or ADAPTER not in store:
                    raise CheckpointError(f"{suffix}: this factor layout is not supported (a LoKr/LoHa made with other factor settings)")
                put(store[ADAPTER], value, suffix)
            else:
                raise CheckpointError(f"unsupported tensor kind {suffix!r} in the LoRA file")


def apply_kohya(network: KohyaNetwork, components: Dict[str, nn.Module], config: ModelConfig) -> AdapterSet:
    """Inject adapters shaped like the file's into `components` and load its weights."""
    index = name_index(config, components)
    unmatched = sorted(name for name in network.modules if name not in index)
    if unmatched:
        raise CheckpointError(
            f"{len(unmatched)} modules of the LoRA do not exist in this {config.family} model, e.g. {', '.join(unmatched[:3])}"
        )
    grouped: Dict[str, Dict[Tuple[int, float], List[str]]] = defaultdict(lambda: defaultdict(list))
    for name, tensors in network.modules.items():
        component, path = index[name]
        grouped[component][(network.module_rank(tensors), network.module_alpha(tensors))].append(path)
    groups = {
        component: [LayerGroup(tuple(paths), rank, alpha) for (rank, alpha), paths in by_rank.items()]
        for component, by_rank in grouped.items()
    }
    spec = NetworkSpec(type=network.network_type, rank=network.rank, alpha=network.alpha, dora=network.dora)
    adapters = inject_groups(components, spec, groups)
    try:
        by_path = {(component, path): name for name, (component, path) in index.items() if name in network.modules}
        for component in adapters.tuners:
            for path, layer in adapters.layers(component):
                _assign(layer, network.modules[by_path[(component, path)]])
    except Exception:
        adapters.remove()
        raise
    return adapters
