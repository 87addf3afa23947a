"""Tiny demo checkpoints, written once per test session."""

import pytest


@pytest.fixture(scope="session")
def demo_checkpoints(tmp_path_factory):
    from lora_trainer.models.demo import write_demo_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    return {family: write_demo_checkpoint(family, folder / f"tiny-{family}.safetensors", seed=7) for family in ("sd1", "sd2", "sd2-v", "sdxl")}
