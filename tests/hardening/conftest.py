"""`config_file`: a tiny config written as a real TOML file (see helpers.tiny_config)."""

import pytest

from .helpers import tiny_config


@pytest.fixture
def config_file(tmp_path, base_models, tiny_dataset):
    """Write a tiny config as TOML (the file a user would give the CLI); returns (path, config)."""
    from lora_trainer.config import save_config

    def build(name: str = "run.toml", **sections):
        config = tiny_config(base_models["sd1"], tiny_dataset, tmp_path / "out", **sections)
        return save_config(tmp_path / name, config), config

    return build


@pytest.fixture
def one_thread():
    """Torch on one thread for in-process runs, as in the child processes (see helpers)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
