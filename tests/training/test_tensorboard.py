"""`[output] tensorboard = true`: TensorBoard reads loss, lr, it/s and the sample images back from logs_dir."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.config import save_config
from lora_trainer.training.trainer import train

REPO = Path(__file__).resolve().parents[2]


def test_events_hold_loss_lr_speed_and_sample_images(make_config):
    pytest.importorskip("tensorboard")  # requirements-dev.txt installs it in both profiles
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config("sd1", train={"max_steps": 4}, output={"tensorboard": True},
                         sample={"every_steps": 2, "prompts": ["tinychar, red circle"], "steps": 2})
    result = train(config)
    assert result.status == "done"

    events = EventAccumulator(str(config.logs_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", "lr", "it_per_s"} <= set(tags["scalars"])
    for tag in ("loss", "lr", "it_per_s"):
        assert [scalar.step for scalar in events.Scalars(tag)] == [1, 2, 3, 4]
    losses = [json.loads(line)["loss"] for line in (config.logs_dir / "metrics.jsonl").read_text().splitlines()]
    assert [scalar.value for scalar in events.Scalars("loss")] == pytest.approx(losses, rel=1e-6)
    assert events.Scalars("lr")[0].value == pytest.approx(1e-3)
    assert all(scalar.value > 0 for scalar in events.Scalars("it_per_s"))

    images = events.Images("sample_0")
    assert [image.step for image in images] == [2, 4]
    picture = Image.open(io.BytesIO(images[-1].encoded_image_string))
    assert picture.size == (64, 64)


def test_missing_tensorboard_is_a_clear_message_before_training(make_config, tmp_path):
    """Where tensorboard is installed, a package that fails to import stands in for a missing one."""
    shadow = tmp_path / "shadow"
    (shadow / "tensorboard").mkdir(parents=True)
    (shadow / "tensorboard" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tensorboard'\")\n")
    config = make_config("sd1", output={"tensorboard": True})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), str(REPO)]))
    result = subprocess.run([sys.executable, "-m", "lora_trainer", "train", str(save_config(tmp_path / "tb.toml", config))],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pip install tensorboard" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "tiny.safetensors").exists()
