"""Presets: built-in recipes apply over the defaults; user presets are saved and found again by name."""

import json

import pytest

from lora_trainer.config import (PRESETS, TrainConfig, apply_preset, list_presets, load_preset, save_user_preset, validate)
from lora_trainer.errors import ConfigError


def test_builtin_presets_set_what_they_promise():
    sd15 = apply_preset("SD1.5 character")
    assert (sd15.network.rank, sd15.network.alpha, sd15.train.unet_lr, sd15.train.text_encoder_lr) == (16, 8.0, 1e-4, 5e-5)
    assert (sd15.train.optimizer, sd15.train.scheduler, sd15.dataset.resolution) == ("adamw", "cosine", 512)
    sdxl = apply_preset("sdxl character")  # names match case-insensitively
    assert (sdxl.network.rank, sdxl.network.alpha, sdxl.dataset.resolution) == (32, 16.0, 1024)
    assert sdxl.network.train_text_encoder is False and sdxl.dataset.cache_text_encoder_outputs is True
    low = apply_preset("Low memory")
    assert low.train.gradient_checkpointing and low.train.optimizer in ("adamw8bit", "adafactor")
    assert low.train.batch_size == 1 and low.dataset.cache_latents
    assert "SD1.5 style" in PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_builtin_preset_is_valid_over_the_defaults_and_over_another_preset(name):
    assert validate(apply_preset(name)) == []
    for other in PRESETS:
        assert validate(apply_preset(name, apply_preset(other))) == [], (other, name)


def test_a_preset_only_touches_its_own_keys():
    config = TrainConfig()
    config.dataset.dir, config.output.name, config.train.seed = "/my/data", "mine", 7
    applied = apply_preset("SDXL character", config)
    assert (applied.dataset.dir, applied.output.name, applied.train.seed) == ("/my/data", "mine", 7)
    assert config.network.rank == 16  # the input is not modified


def test_unknown_preset_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="SD1.5 character"):
        load_preset("nope", tmp_path)


def test_user_preset_round_trip_keeps_settings_but_not_paths(tmp_path):
    config = apply_preset("SD1.5 style")
    config.train.unet_lr, config.network.rank = 3e-4, 24
    config.dataset.dir, config.output.name = "/data/one_run", "one_run"
    path = save_user_preset(tmp_path, "My style: v2", config)
    assert path.parent == tmp_path and path.name == "My style_ v2.json"
    assert list_presets(tmp_path) == list(PRESETS) + ["My style_ v2"]
    partial = load_preset("My style: v2", tmp_path)
    assert partial["train"]["unet_lr"] == 3e-4 and partial["network"]["rank"] == 24
    assert "dir" not in partial.get("dataset", {}) and "name" not in partial.get("output", {})
    target = TrainConfig()
    target.dataset.dir = "/data/next"
    restored = apply_preset("My style_ v2", target, folder=tmp_path)
    assert restored.network.type == "locon" and restored.train.unet_lr == 3e-4 and restored.dataset.dir == "/data/next"
    assert validate(restored) == []


def test_user_preset_names_cannot_escape_or_shadow(tmp_path):
    for bad in ("../evil", "/etc/x", "CON", ""):
        with pytest.raises(ConfigError):
            save_user_preset(tmp_path, bad, TrainConfig())
    with pytest.raises(ConfigError, match="built-in"):
        save_user_preset(tmp_path, "Low Memory", TrainConfig())
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "evil.json").exists()


def test_user_presets_folder_tolerates_junk_and_bad_files_are_named(tmp_path):
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "typo.json").write_text(json.dumps({"train": {"unet_l": 1e-4}}), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    assert list_presets(tmp_path) == list(PRESETS) + ["typo"]
    assert list_presets(tmp_path / "missing") == list(PRESETS)
    with pytest.raises(ConfigError, match="did you mean 'unet_lr'"):
        load_preset("typo", tmp_path)
    with pytest.raises(ConfigError, match="broken.json"):
        load_preset("broken", tmp_path)


def test_save_refuses_to_replace_when_asked(tmp_path):
    save_user_preset(tmp_path, "mine", TrainConfig())
    with pytest.raises(ConfigError, match="already exists"):
        save_user_preset(tmp_path, "mine", TrainConfig(), overwrite=False)
