"""Soak: a long run on the tiny SD1 model with samples, intermediate saves and states on.

Goals: RSS grows by under 5 % from the end of warm-up to the last step; the run leaves no
open file handles (counted in /proc/self/fd before and after) and no temp files behind.
`python -m bench soak` runs it alone; LORA_SOAK_STEPS changes its length (default 5000).
"""

import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from bench.common import Result, below

STEPS = int(os.environ.get("LORA_SOAK_STEPS", "5000"))


def rss_bytes() -> int:
    """Current resident set size of this process (not the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def leftovers(root: Path) -> List[Path]:
    return [p for p in Path(root).rglob(".*") if p.name.endswith((".tmp", ".old"))]


def soak_config(root: Path, steps: int):
    """The soak's config: everything that writes files is on, at a pace that repeats it often."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.models.demo import write_demo_checkpoint

    config = TrainConfig()
    config.model.checkpoint = str(write_demo_checkpoint("sd1", root / "base.safetensors", seed=1))
    config.dataset.dir = str(_dataset(root / "data"))
    config.dataset.resolution, config.dataset.min_bucket_reso, config.dataset.max_bucket_reso = 64, 64, 128
    config.dataset.shuffle_tags, config.dataset.flip = True, True  # new captions keep arriving
    config.network.rank, config.network.alpha, config.network.train_text_encoder = 4, 2.0, False
    config.train.max_steps, config.train.batch_size, config.train.unet_lr = steps, 1, 1e-4
    config.output.dir, config.output.name = str(root / "out"), "soak"
    config.output.save_every_steps, config.output.keep_last = max(1, steps // 20), 3
    config.output.save_state_every_steps = max(1, steps // 10)
    config.sample.every_steps, config.sample.prompts, config.sample.steps = max(1, steps // 10), ["soak, red circle"], 2
    return config


def _dataset(folder: Path) -> Path:
    from PIL import Image, ImageDraw

    concept = folder / "2_soak"
    concept.mkdir(parents=True)
    for index in range(6):
        image = Image.new("RGB", (64, 64) if index % 2 else (96, 64), (40 * index, 90, 200))
        ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=(220, 30, 30))
        image.save(concept / f"{index}.png")
        tags = ["red circle", f"tag{index}", f"shade {index % 3}", "simple background", "centered", "flat colors", "bright"]
        (concept / f"{index}.txt").write_text(", ".join(["soak"] + tags))  # shuffled: a new caption almost every step
    return folder


def soak(root: Path, steps: int, warmup: int) -> Dict[str, float]:
    """Train `steps` steps; RSS at the end of warm-up and at the end, fds and temp files around the run."""
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.trainer import train

    config = soak_config(root, steps)
    marks: Dict[str, float] = {}

    def watch(event) -> None:
        if event.kind == "step" and event.data["step"] in (warmup, steps):
            marks[f"rss_{event.data['step']}"] = rss_bytes()

    fds_before, started = open_fds(), time.perf_counter()
    result = train(config, events=EventBus([watch]))
    seconds = time.perf_counter() - started
    assert result.status == "done", result
    return {"rss_warm": marks[f"rss_{warmup}"], "rss_end": marks[f"rss_{steps}"], "fds_gained": open_fds() - fds_before,
            "temp_files": len(leftovers(root)), "seconds_per_step": seconds / steps}


def run() -> List[Result]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        figures = soak(Path(folder), STEPS, warmup=max(1, STEPS // 10))
    growth = 100.0 * (figures["rss_end"] - figures["rss_warm"]) / figures["rss_warm"]
    return [
        below(f"soak {STEPS} steps: RSS growth after warm-up", growth, "%", 5.0),
        Result(f"soak: RSS at the end", round(figures["rss_end"] / 2 ** 20, 1), "MiB"),
        below("soak: file handles left open", figures["fds_gained"], "fds", 1),
        below("soak: temp files left behind", figures["temp_files"], "files", 1),
        Result("soak: seconds per step (samples, saves, states on)", round(figures["seconds_per_step"], 4), "s"),
    ]
