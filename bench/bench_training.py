"""Training speed on CPU, one thread: seconds per step, peak RSS, overhead share, FLOP efficiency.

For the tiny models and an SD1.5-shaped UNet (random weights) at 64 px. "Overhead" is the
share of a full `Loop.step()` spent outside the forward (`micro_loss`), the backward and the
optimizer's update (gradient clipping, `step`, `zero_grad`): the loop's own bookkeeping;
FLOP efficiency is the step's counted FLOPs per second over a matmul's FLOP/s in this run.

Beside it, the roofline: a LoRA step must read every frozen weight at least twice (forward,
and backward for the input gradient), so `2 x weight bytes / read bandwidth` (measured here) is
a floor on its time; the step's FLOPs over `max(floor, FLOPs / matmul peak)` is the efficiency
against what this machine allows for that step. At 64 px the UNet's deepest levels are 2x2 and
1x1 maps, where PyTorch's CPU convolutions ran at a tenth of the matmul rate; the loop computes
those as one matrix product (`training/cpu_convs.py`), executing the same counted FLOPs. What
is left at batch 1 are matrix products with 1 to 4 rows over the largest weights (the BLAS
streams them at a quarter of the read bandwidth); at batch 8 the step is compute-bound.

The 50 % goal is judged on the SD1.5-shaped step at batch 8, the one whose work is mostly
arithmetic. The others are shown against it but not judged: a tiny model's step is some 5,000
operations of ~40 kFLOP each, bound by PyTorch's per-operation cost (microseconds each) in any
kernel, and batch 1 at 64 px is bound by the products with few rows named above.
"""

import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import torch

from bench.common import Result, above, below, peak_rss_bytes


def _dataset(root: Path) -> Path:
    from PIL import Image

    folder = root / "1_bench"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for i in range(8):
        Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3))).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("bench, subject")
    return root


def _matmul_flops_per_s() -> float:
    """The fastest of ten 1024x1024 fp32 matmuls (steps are timed by their fastest too)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    fastest = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * 1024 ** 3 / fastest


def _read_bytes_per_s() -> float:
    big = torch.ones(64 * 2**20)  # 256 MiB: far beyond the caches
    big.sum()
    start, runs = time.perf_counter(), 5
    for _ in range(runs):
        big.sum()
    return big.numel() * big.element_size() * runs / (time.perf_counter() - start)


def _frozen_bytes(bundle) -> int:
    return sum(p.numel() * p.element_size() for p in bundle.unet.parameters() if not p.requires_grad)


def _loop(bundle, root: Path, batch_size: int = 1):
    from lora_trainer.config import TrainConfig
    from lora_trainer.networks.adapters import inject
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.outputs import OutputWriter
    from lora_trainer.training.prepare import prepare_items
    from lora_trainer.training.trainer import Loop, RunContext, _components, _network_spec

    config = TrainConfig()
    config.dataset.dir, config.dataset.resolution = str(_dataset(root)), 64
    config.dataset.min_bucket_reso = 64
    config.network.train_text_encoder = False
    config.train.batch_size, config.train.max_steps = batch_size, 100
    device = torch.device("cpu")
    items, facts = prepare_items(config, bundle, device, EventBus(), lambda: False)
    ctx = RunContext(config, bundle, items, facts, device, EventBus(), OutputWriter(root / "out", "b", root / "logs"), lambda: False, lambda: None)
    adapters = inject(_components(bundle, False), _network_spec(config))
    bundle.unet.train()
    return Loop(ctx, adapters, 100), adapters


@contextmanager
def _timing(loop) -> Iterator[List[float]]:
    """Seconds spent in the loop's forward, backward and optimizer (gradient clipping, step and
    zero_grad), as they happen; the rest of a step is the loop's own overhead."""
    spent: List[float] = []

    def timed(fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - started)
        return wrapper

    # (owner, attribute): what each was is put back after, the LR scheduler's own wrapper of
    # `optimizer.step` included
    targets = [(loop, "micro_loss"), (loop, "clip_gradients"), (loop.optimizer, "step"),
               (loop.optimizer, "zero_grad"), (torch.Tensor, "backward")]
    originals = [getattr(owner, name) for owner, name in targets]
    for (owner, name), original in zip(targets, originals):
        setattr(owner, name, timed(original))
    try:
        yield spent
    finally:
        for (owner, name), original in zip(targets, originals):
            setattr(owner, name, original)


def _efficiency(name: str, percent: float, judged: bool) -> Result:
    return above(name, percent, "%", 50.0) if judged else Result(name, round(percent, 4), "%")


def _measure(name: str, bundle, steps: int, batch_size: int = 1, judged: bool = False) -> list:
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as temp:
        loop, adapters = _loop(bundle, Path(temp), batch_size)
        try:
            loop.step()  # warm-up
            # The forward (`micro_loss`), backward and optimizer are timed inside each full
            # step, so the overhead is measured within one step rather than as a difference of two
            # runs (this machine's speed drifts by more than 5 % between runs of seconds each).
            full, compute = [], []
            with _timing(loop) as inside:
                for _ in range(steps):
                    inside.clear()
                    started = time.perf_counter()
                    loop.step()
                    full.append(time.perf_counter() - started)
                    compute.append(sum(inside))
            per_step = min(full)
            overhead = sorted(100.0 * (f - c) / f for f, c in zip(full, compute))[len(full) // 2]
            compute = min(compute)
            with FlopCounterMode(display=False) as counter:
                loop.micro_loss(loop.next_batch()).backward()
            loop.optimizer.zero_grad(set_to_none=True)
            flops = counter.get_total_flops()
        finally:
            adapters.remove()
    peak = _matmul_flops_per_s()
    floor = 2 * _frozen_bytes(bundle) / _read_bytes_per_s()
    attainable = max(floor, flops / peak)
    return [
        Result(f"{name}: seconds per step", round(per_step, 4), "s"),
        below(f"{name}: share of step outside fwd/bwd/optimizer", overhead, "%", 5.0),
        _efficiency(f"{name}: FLOP efficiency vs matmul", 100.0 * (flops / compute) / peak, judged),
        Result(f"{name}: weight-read floor per step", round(floor, 4), "s"),
        Result(f"{name}: FLOP efficiency vs roofline", round(100.0 * attainable / compute, 1), "%"),
        Result(f"{name}: peak RSS", round(peak_rss_bytes() / 2**20, 1), "MiB"),
    ]


def run() -> list:
    from lora_trainer.models import load_bundle
    from lora_trainer.models.demo import demo_state_dict
    from lora_trainer.models.families import ModelConfig, real_config
    from lora_trainer.models.layout import build_modules, to_original_layout

    torch.set_num_threads(1)
    results = []
    for family in ("sd1", "sdxl"):
        state, metadata = demo_state_dict(family)
        bundle = load_bundle(state, config=ModelConfig.from_json(metadata["lora_trainer.config"]))
        results += _measure(f"tiny {family} @64px", bundle, steps=30)
    config = real_config("sd1")
    shapes = to_original_layout(config, *build_modules(config))
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.empty(v.shape).normal_(0, 0.02, generator=generator) for k, v in shapes.items()}
    bundle = load_bundle(state)
    # Batch 1 shows the kernels' efficiency on few positions; batch 8 that of the same step on enough.
    results += _measure("SD1.5-shaped UNet @64px batch 1", bundle, steps=5)
    results += _measure("SD1.5-shaped UNet @64px batch 8", bundle, steps=4, batch_size=8, judged=True)
    return results
