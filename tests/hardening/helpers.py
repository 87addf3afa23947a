"""Helpers for the hardening tests: tiny configs, the CLI as a real process, leftover temp files.

Child processes run torch on one thread (the CI machine has two cores; an oversubscribed
OpenMP pool makes a tiny step ten times slower) and never write bytecode.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def tiny_config(base: Path, dataset: Path, out: Path, /, **sections: Dict):
    """A TrainConfig for the tiny SD1 model and dataset; `sections` override (e.g. train={...})."""
    from lora_trainer.config import TrainConfig

    config = TrainConfig()
    config.model.checkpoint = str(base)
    config.dataset.dir = str(dataset)
    config.dataset.resolution, config.dataset.min_bucket_reso, config.dataset.max_bucket_reso = 64, 64, 128
    config.network.rank, config.network.alpha = 4, 2.0
    config.train.max_steps, config.train.batch_size, config.train.seed = 12, 2, 3
    config.train.unet_lr, config.train.text_encoder_lr, config.train.scheduler = 1e-3, 5e-4, "constant"
    config.output.dir, config.output.name = str(out), "tiny"
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    return config


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_trainer", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=CHILD_ENV, **kwargs)


def popen(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lora_trainer", *map(str, args)], cwd=REPO, env=CHILD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def leftovers(root: Path) -> List[Path]:
    """Hidden temp files and folders of a writer (ours: `.<name>.<pid>[.<n>].tmp` / `.old`) under `root`."""
    return sorted(p for p in Path(root).rglob(".*") if p.name.endswith((".tmp", ".old")))


def all_files(root: Path) -> List[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())
