"""Every loss/noise/precision option runs and trains (finite losses, weights change)."""

import json
import math

import pytest

from lora_trainer.training.events import EventBus
from lora_trainer.training.trainer import train


@pytest.mark.parametrize(
    "train_options",
    [
        {"loss_type": "huber", "huber_c": 0.1},
        {"min_snr_gamma": 5.0, "noise_offset": 0.1},
        {"multires_noise_iterations": 4, "multires_noise_discount": 0.3},
        {"debiased_estimation": True, "timestep_min": 100, "timestep_max": 900},
        {"zero_terminal_snr": True},
        {"mixed_precision": "bf16"},
        {"optimizer": "adafactor", "scheduler": "cosine_with_restarts", "warmup_steps": 2},
        {"grad_accum": 2, "scheduler": "polynomial", "gradient_checkpointing": True},
    ],
    ids=["huber", "min-snr+offset", "multires", "debiased", "ztsnr", "bf16", "adafactor", "accum+ckpt"],
)
def test_option_trains_with_finite_losses(make_config, train_options):
    config = make_config("sd1", train={"max_steps": 4, **train_options})
    losses = []
    result = train(config, events=EventBus([lambda e: losses.append(e.data["loss"]) if e.kind == "step" else None]))
    assert result.status == "done" and len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)


def test_regularization_images_are_used_with_their_weight(make_config, tmp_path):
    from tests.conftest import make_dataset

    reg = make_dataset(tmp_path / "reg", count=2, seed=9)
    config = make_config("sd2-v", dataset={"reg_dir": str(reg), "prior_loss_weight": 0.5}, train={"max_steps": 3})
    seen = []
    result = train(config, events=EventBus([lambda e: seen.append(e.data) if e.kind == "start" else None]))
    assert result.status == "done"
    assert seen[0]["images"] == 8  # 6 training + 2 regularization images


def test_missing_optional_optimizer_package_says_what_to_install(make_config):
    from lora_trainer.errors import UserError

    config = make_config("sd1", train={"optimizer": "adamw8bit"})
    with pytest.raises(UserError, match="CUDA"):
        train(config)


def test_a_run_gives_the_same_losses_whatever_cached_the_latents_before(make_config, tmp_path):
    """The disk latent cache is shared by every run on a dataset; it must never change a result."""
    from tests.conftest import make_dataset

    def losses(data, out, **dataset):
        config = make_config(dataset={"dir": str(data), **dataset}, train={"max_steps": 3}, output={"dir": str(tmp_path / out)})
        train(config)
        return [json.loads(line)["loss"] for line in (config.logs_dir / "metrics.jsonl").read_text().splitlines()]

    fresh = losses(make_dataset(tmp_path / "fresh"), "a")
    warmed = make_dataset(tmp_path / "warmed")
    losses(warmed, "b", flip=True)  # encodes both orientations of every image, in another order
    assert losses(warmed, "c") == pytest.approx(fresh, rel=1e-6)
