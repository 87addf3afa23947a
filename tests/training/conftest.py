"""`make_config`: a TrainConfig on the tiny dataset and base models (see tests/conftest.py)."""

import pytest


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
