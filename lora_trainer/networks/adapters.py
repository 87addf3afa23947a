"""Injecting and removing adapters with peft: LoRA, LoCon, LoHa, LoKr, optional DoRA.

`inject(components, spec)` wraps the target layers of each component (UNet, text encoders)
in peft layers and returns an `AdapterSet`; `AdapterSet.remove()` puts the original layer
objects back (call it in `finally`). Base weights stay frozen; only adapter tensors train.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

import torch
from torch import nn

from lora_trainer.networks import dora as dora_module
from lora_trainer.networks.targets import Target, text_encoder_targets, unet_targets

NETWORK_TYPES = ("lora", "locon", "loha", "lokr")
ADAPTER = "default"


@dataclass(frozen=True)
class NetworkSpec:
    type: str = "lora"
    rank: int = 16
    alpha: float = 8.0
    conv_rank: int = 8
    conv_alpha: float = 4.0
    dora: bool = False
    dropout: float = 0.0

    @property
    def include_conv(self) -> bool:
        """LoCon adds ResNet/sampler layers; LoHa and LoKr adapt them too, as LyCORIS does."""
        return self.type in ("locon", "loha", "lokr")


@dataclass(frozen=True)
class LayerGroup:
    """Layers that share one rank and alpha (peft builds one config per group)."""

    paths: Tuple[str, ...]
    rank: int
    alpha: float


def training_groups(spec: NetworkSpec, targets: List[Target]) -> List[LayerGroup]:
    """The normal rank for Linear/1x1 layers, the conv rank for 3x3 convolutions."""
    groups = [
        LayerGroup(tuple(t.path for t in targets if not t.conv3x3), spec.rank, spec.alpha),
        LayerGroup(tuple(t.path for t in targets if t.conv3x3), spec.conv_rank, spec.conv_alpha),
    ]
    return [g for g in groups if g.paths]


def _peft_config(spec: NetworkSpec, group: LayerGroup):
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    paths = list(group.paths)
    if spec.type in ("lora", "locon"):
        return LoraConfig(r=group.rank, lora_alpha=group.alpha, target_modules=paths, lora_dropout=spec.dropout, init_lora_weights=True)
    if spec.type == "loha":
        return LoHaConfig(r=group.rank, alpha=group.alpha, target_modules=paths, module_dropout=spec.dropout, init_weights=True)
    if spec.type == "lokr":
        return LoKrConfig(r=group.rank, alpha=group.alpha, target_modules=paths, module_dropout=spec.dropout, init_weights=True)
    raise ValueError(f"unknown network type {spec.type!r}; expected one of {', '.join(NETWORK_TYPES)}")


def _tuner_class(spec: NetworkSpec):
    from peft.tuners.loha import LoHaModel
    from peft.tuners.lokr import LoKrModel
    from peft.tuners.lora import LoraModel

    return {"lora": LoraModel, "locon": LoraModel, "loha": LoHaModel, "lokr": LoKrModel}[spec.type]


def is_adapted(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


@dataclass
class AdapterSet:
    """The adapters injected into each component; `remove()` restores the original layers."""

    spec: NetworkSpec
    components: Dict[str, nn.Module]
    tuners: Dict[str, List[object]] = field(default_factory=dict)
    removed: bool = False

    def layers(self, component: str) -> Iterator[Tuple[str, nn.Module]]:
        """(module path, peft layer) of each adapted layer of a component."""
        for path, module in self.components[component].named_modules():
            if is_adapted(module):
                yield path, module

    def parameters(self, component: str) -> List[nn.Parameter]:
        return [p for _, layer in self.layers(component) for p in layer.parameters() if p.requires_grad]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Every trainable tensor by `<component>/<parameter name>`: for resume files."""
        out = {}
        for component, module in self.components.items():
            if component not in self.tuners:
                continue
            for name, param in module.named_parameters():
                if param.requires_grad:
                    out[f"{component}/{name}"] = param.detach()
        return out

    def load_state_dict(self, tensors: Dict[str, torch.Tensor]) -> None:
        for component, module in self.components.items():
            if component not in self.tuners:
                continue
            params = dict(module.named_parameters())
            for key, value in tensors.items():
                owner, name = key.split("/", 1)
                if owner == component:
                    with torch.no_grad():
                        params[name].copy_(value)

    def remove(self) -> None:
        """Put the original layer objects back (idempotent)."""
        if self.removed:
            return
        for component, tuners in self.tuners.items():
            for tuner in tuners:
                tuner.unload()  # the first one restores every peft layer of the component
            module = self.components[component]
            if hasattr(module, "peft_config"):
                del module.peft_config
        self.removed = True


def _attach_dora(adapters: AdapterSet, component: str) -> None:
    for _, layer in adapters.layers(component):
        base = layer.get_base_layer()
        dora_module.attach(layer, base.weight, lambda layer=layer: layer.get_delta_weight(ADAPTER))


def inject_groups(components: Dict[str, nn.Module], spec: NetworkSpec, groups: Dict[str, List[LayerGroup]]) -> AdapterSet:
    """Wrap the layers of each group; `groups` maps component names to their layer groups."""
    adapters = AdapterSet(spec, dict(components))
    tuner_class = _tuner_class(spec)
    try:
        for name, component_groups in groups.items():
            for group in component_groups:
                tuner = tuner_class(components[name], _peft_config(spec, group), ADAPTER)
                adapters.tuners.setdefault(name, []).append(tuner)
        for name in adapters.tuners:
            if spec.dora:  # after every tuner: peft freezes parameters without its own prefix
                _attach_dora(adapters, name)
            for param in adapters.parameters(name):
                param.data = param.data.float()  # fp32 adapters even over half-precision weights
    except Exception:
        adapters.remove()
        raise
    return adapters


def inject(components: Dict[str, nn.Module], spec: NetworkSpec) -> AdapterSet:
    """Wrap kohya's default target layers of each component (UNet, text encoders) for training."""
    groups = {}
    for name, module in components.items():
        targets = unet_targets(module, spec.include_conv) if name == "unet" else text_encoder_targets(module)
        groups[name] = training_groups(spec, targets)
    return inject_groups(components, spec, groups)
