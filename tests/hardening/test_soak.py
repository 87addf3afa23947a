"""A shortened soak (the full 5,000 steps are `python -m bench soak`): samples, saves and states
every few steps leave no file handle open and no temp file behind, and every file the run
wrote is a safetensors, JSON, JSONL, PNG or text file that parses as one (no pickle)."""

import json
import os
from pathlib import Path

from PIL import Image
from safetensors import safe_open

from bench.bench_soak import soak_config

from .helpers import all_files, leftovers

SAFE_SUFFIXES = {".safetensors", ".json", ".jsonl", ".png", ".txt"}


def _parses_as_its_suffix(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            list(handle.keys())
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".jsonl":
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    elif suffix == ".png":
        with Image.open(path) as image:
            image.verify()
    else:
        path.read_text(encoding="utf-8")


def test_a_long_run_leaks_no_handles_or_temp_files_and_writes_only_safe_formats(tmp_path, one_thread):
    from lora_trainer.training.trainer import train

    config = soak_config(tmp_path, steps=120)  # a save every 6 steps, a sample and a state every 12
    fds = set(os.listdir("/proc/self/fd"))
    result = train(config)
    assert result.status == "done"
    opened = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds
              if os.path.exists(f"/proc/self/fd/{fd}")}
    assert opened == {}, opened
    assert leftovers(tmp_path) == []

    written = [p for p in all_files(tmp_path) if p.name != "base.safetensors"]
    assert {p.suffix for p in written} <= SAFE_SUFFIXES, sorted({p.suffix for p in written})
    for path in written:
        _parses_as_its_suffix(path)
    assert len(list((Path(config.output.dir)).glob("soak-step*.safetensors"))) == 3  # keep_last
    assert len(list((config.logs_dir / "samples").glob("*.png"))) == 10


def test_frozen_text_encodings_are_kept_within_a_budget_and_not_at_all_when_every_step_shuffles(base_models, one_thread):
    """A run with shuffled tags sees a new caption nearly every step: held encodings must not pile up."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.models import load_bundle
    from lora_trainer.training.trainer import Conditioner

    bundle = load_bundle(base_models["sd1"])
    captions = [f"subject, tag {i}, other {i * 7}" for i in range(60)]
    hidden = Conditioner(bundle, TrainConfig(), False)([captions[0]]).hidden_states  # SD1: no pooled output
    size = hidden.numel() * hidden.element_size()
    bounded = Conditioner(bundle, TrainConfig(), False, cache_bytes=10 * size)
    for caption in captions:
        bounded([caption, caption])
    assert len(bounded._cache) == 10 and list(bounded._cache)[-1] == captions[-1]
    shuffled = TrainConfig()
    shuffled.dataset.shuffle_tags = True
    varying = Conditioner(bundle, shuffled, False)
    for caption in captions:
        varying([caption])
    assert len(varying._cache) == 0
