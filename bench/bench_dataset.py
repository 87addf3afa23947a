"""Dataset library at tag-editor scale: 10,000 small images with captions.

Figures (goals from issue 3): `tags stats` as a user runs it (the CLI, a fresh process) on
a dataset seen before (decode cache warm) and first seen (every image decoded); a filter
over the in-memory index; a bulk add written to all 10,000 caption files; and its undo.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result, below

N_IMAGES = 10_000
VOCAB = ["1girl", "solo", "red circle", "simple background", "white background", "smile", "long hair", "short hair",
         "blue eyes", "red eyes", "outdoors", "indoors", "sky", "looking at viewer", "open mouth", "hat",
         r"poster \(object\)", "(masterpiece:1.2)", "black hair", "blonde hair"] + [f"tag {n}" for n in range(300)]


def make_dataset(root: Path, n: int = N_IMAGES, seed: int = 0) -> Path:
    """n distinct 24x24 PNGs in 4 kohya folders, each with a 10-25 tag caption."""
    from PIL import Image

    rng = random.Random(seed)
    for index in range(n):
        folder = root / f"{(index % 4) + 1}_concept{index % 4}"
        if index < 4:
            folder.mkdir(parents=True)
        color = (index % 256, (index // 256) % 256, (index * 7) % 256)
        Image.new("RGB", (24 + index % 3 * 8, 24), color).save(folder / f"img_{index:05d}.png", compress_level=1)
        tags = rng.sample(VOCAB, rng.randint(10, 25))
        (folder / f"img_{index:05d}.txt").write_text(", ".join(tags) + ("\n" if index % 2 else ""), encoding="utf-8")
    return root


def _cli_stats(root: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lora_trainer", "tags", "stats", str(root), "--json"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return elapsed


def run() -> list:
    from lora_trainer.dataset.library import DatasetIndex
    from lora_trainer.dataset.scan import STATE_FOLDER

    work = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        root = make_dataset(work / "data")
        cold = _cli_stats(root)  # decodes every image, fills the cache
        warm = min(_cli_stats(root) for _ in range(3))

        started = time.perf_counter()
        index = DatasetIndex.load(root)
        load = time.perf_counter() - started

        expression = "red circle AND NOT (simple background OR white background)"
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            hits = index.filter(expression)
            timings.append(time.perf_counter() - started)
        timings.sort()
        filter_time = timings[len(timings) // 2]
        if not hits:
            raise RuntimeError("the benchmark filter matched nothing")

        started, cpu = time.perf_counter(), time.process_time()
        report = index.add("new trigger", "front")
        bulk, bulk_cpu = time.perf_counter() - started, time.process_time() - cpu
        if len(report.changed) != N_IMAGES:
            raise RuntimeError(report.summary())

        started, cpu = time.perf_counter(), time.process_time()
        undone = index.undo()
        undo, undo_cpu = time.perf_counter() - started, time.process_time() - cpu
        if len(undone.changed) != N_IMAGES:
            raise RuntimeError(undone.summary())
        shutil.rmtree(root / STATE_FOLDER)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        below("tags stats, 10k images, CLI (decode cache warm)", warm, "s", 2.0),
        below("tags stats, 10k images, CLI (first run, every image decoded)", cold, "s", 2.0),
        Result("load index (scan + read + parse 10k captions)", round(load, 4), "s"),
        below("filter over 10k captions", filter_time * 1000, "ms", 50.0),
        below("bulk add + save of 10k captions", bulk, "s", 3.0),
        Result("  of which CPU time of this process", round(bulk_cpu, 4), "s"),
        below("undo of that bulk add", undo, "s", 3.0),
        Result("  of which CPU time of this process", round(undo_cpu, 4), "s"),
        Result("CPU cores / load average when measured", round(os.getloadavg()[0], 2), f"{os.cpu_count()} cores"),
    ]
