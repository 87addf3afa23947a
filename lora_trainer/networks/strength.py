"""A LoRA's strength (the 0.8 of `<lora:name:0.8>`) for adapters loaded in our modules.

Consumers apply W + s * dW. Every adapted layer is linear in its weight, so its output at
strength s is base(x) + s * (adapted(x) - base(x)), which holds for LoRA, LoHa, LoKr and DoRA
alike. A pre-hook (run before DoRA's) keeps the original input for the base branch.
"""

from typing import List

import torch

from lora_trainer.networks.adapters import AdapterSet


def set_strength(adapters: AdapterSet, strength: float) -> None:
    """Set (or change) the strength of every adapted layer; 1.0 is the trained network."""
    adapters.strength = float(strength)
    if getattr(adapters, "_strength_hooks", None):
        return
    handles: List = []
    for component in adapters.tuners:
        for _, layer in adapters.layers(component):
            handles.append(layer.register_forward_pre_hook(_keep_input, prepend=True))
            handles.append(layer.register_forward_hook(lambda module, args, output, a=adapters: _blend(module, output, a.strength)))
    adapters._strength_hooks = handles


def _keep_input(module, args):
    module._strength_input = args[0]


def _blend(module, output: torch.Tensor, strength: float) -> torch.Tensor:
    x = module.__dict__.pop("_strength_input", None)
    if strength == 1.0 or x is None:
        return output
    base = module.get_base_layer()(x)
    return base + strength * (output - base)
