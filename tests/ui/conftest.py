"""Fixtures shared with the training tests: a tiny dataset and tiny base models."""

import random
from pathlib import Path

import pytest


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


@pytest.fixture
def make_config(tiny_dataset, base_models, tmp_path):
    from lora_trainer.config import TrainConfig

    def build(family="sd1", **sections):
        config = TrainConfig()
        config.model.checkpoint = str(base_models[family])
        config.dataset.dir = str(tiny_dataset)
        config.dataset.resolution = 64
        config.dataset.min_bucket_reso = 64
        config.dataset.max_bucket_reso = 128
        config.network.rank, config.network.alpha = 4, 2.0
        config.network.conv_rank, config.network.conv_alpha = 2, 1.0
        config.train.max_steps, config.train.batch_size, config.train.seed = 20, 2, 3
        config.train.unet_lr, config.train.text_encoder_lr = 1e-3, 5e-4
        config.train.scheduler = "constant"
        config.output.dir = str(tmp_path / "out")
        config.output.name = "tiny"
        for section, values in sections.items():
            for key, value in values.items():
                setattr(getattr(config, section), key, value)
        return config

    return build
