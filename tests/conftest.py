"""Test session set-up shared by every profile.

Files named `test_*_pure.py` need neither torch nor gradio: they also run under Python 3.10
without torch (`make test-py310`). Where torch is missing, every other test file is skipped
at collection.
"""

import importlib.util
import random
from pathlib import Path

import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path: Path, config):  # noqa: ARG001
    name = collection_path.name
    if not HAVE_TORCH and name.startswith("test_") and name.endswith(".py"):
        return not name.endswith("_pure.py")
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "forge_only: needs Forge's pins (run in .venv-forge only)")
    config.addinivalue_line("markers", "both_profiles: runs in the A1111 and the Forge profile")


# --- shared fixtures: a tiny captioned dataset and tiny base models (imports stay lazy: torch-free files use this too)
def make_dataset(root: Path, count: int = 6, seed: int = 0) -> Path:
    from PIL import Image, ImageDraw

    folder = root / "5_tinychar"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(count):
        size = rng.choice([(64, 64), (128, 64), (64, 128)])
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=(220, 30, 30))
        image.save(folder / f"img{index}.png")
        (folder / f"img{index}.txt").write_text(f"tinychar, red circle, {'smile' if index % 2 else 'plain'} background")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def base_models(tmp_path_factory):
    from lora_trainer.models.demo import write_demo_checkpoint

    folder = tmp_path_factory.mktemp("bases")
    return {family: write_demo_checkpoint(family, folder / f"{family}.safetensors", seed=11) for family in ("sd1", "sd2-v", "sdxl")}
