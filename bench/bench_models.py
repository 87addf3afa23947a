"""Checkpoint -> bundle: time and peak memory growth for a full-size SD1.5-shaped state dict.

The state dict is built in memory with random fp16 weights in the original layout (as the
WebUI holds it); the figure is how long `load_bundle` takes to turn it into diffusers
modules and how much the peak RSS grows while it does (goal: far less than one copy).
"""

import time
from pathlib import Path

import torch

from bench.common import Result, below
from lora_trainer.models import load_bundle
from lora_trainer.models.families import real_config
from lora_trainer.models.layout import build_modules, to_original_layout


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def sd15_state_dict(dtype=torch.float16) -> dict:
    """Every key and shape of an SD1.5 checkpoint, filled in place with random values."""
    config = real_config("sd1")
    shapes = to_original_layout(config, *build_modules(config))  # meta tensors: shapes only
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, meta in shapes.items():
        tensor = torch.empty(meta.shape, dtype=dtype)
        tensor.uniform_(-0.05, 0.05, generator=generator)
        state[key] = tensor
    return state


def run() -> list:
    torch.set_num_threads(1)
    state = sd15_state_dict()
    model_bytes = sum(t.numel() * t.element_size() for t in state.values())
    load_bundle(state)  # warm-up: imports and tokenizer files, not part of the figure
    _reset_peak_rss()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    bundle = load_bundle(state)
    seconds = time.perf_counter() - start
    growth = (_status_kib("VmHWM") - before) * 1024
    assert bundle.family == "sd1"
    return [
        below("sd15 bundle from in-memory state dict", seconds, "s", 1.0),
        below("sd15 bundle peak RSS growth / model size", 100.0 * growth / model_bytes, "%", 5.0),
        Result("sd15 model size", round(model_bytes / 2**30, 3), "GiB"),
    ]
