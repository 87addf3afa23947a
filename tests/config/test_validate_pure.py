"""Validation: each problem comes back as one FieldError on the field the user has to change."""

import pytest

from lora_trainer.config import TrainConfig, check, config_warnings, from_dict, validate
from lora_trainer.errors import ConfigError


def _errors(**sections):
    config, errors = from_dict(sections)
    assert errors == [], errors
    return {e.path: e.message for e in validate(config)}


@pytest.mark.parametrize("sections, path, fragment", [
    # ranges and choices
    ({"network": {"rank": 0}}, "network.rank", "at least 1 (allowed: 1 to 1024)"),
    ({"network": {"rank": 5000}}, "network.rank", "at most 1024"),
    ({"train": {"unet_lr": 2.0}}, "train.unet_lr", "at most 1.0"),
    ({"model": {"clip_skip": 0}}, "model.clip_skip", "at least 1"),
    ({"train": {"scheduler": "cosin"}}, "train.scheduler", "did you mean 'cosine'?"),
    ({"model": {"family": "sd3"}}, "model.family", "must be one of auto, sd1, sd2, sdxl"),
    ({"train": {"mixed_precision": "fp32"}}, "train.mixed_precision", "no, fp16, bf16"),
    # conflicts
    ({"train": {"max_steps": 0, "epochs": 0}}, "train.max_steps", "both are 0"),
    ({"train": {"max_steps": 100, "warmup_steps": 101}}, "train.warmup_steps", "101 > max_steps 100"),
    ({"train": {"timestep_min": 500, "timestep_max": 400}}, "train.timestep_min", "below timestep_max"),
    ({"train": {"unet_lr": 0.0}, "network": {"train_text_encoder": False}}, "train.unet_lr", "nothing would train"),
    ({"network": {"type": "loha", "dora": True}}, "network.dora", "lora or locon"),
    ({"dataset": {"cache_text_encoder_outputs": True}}, "dataset.cache_text_encoder_outputs", "train_text_encoder = false"),
    ({"dataset": {"cache_text_encoder_outputs": True, "shuffle_tags": True}, "network": {"train_text_encoder": False}},
     "dataset.shuffle_tags", "cache_text_encoder_outputs"),
    ({"dataset": {"random_crop": True}}, "dataset.random_crop", "cache_latents"),
    ({"dataset": {"resolution": 1024, "max_bucket_reso": 768}}, "dataset.max_bucket_reso", "at least the resolution"),
    ({"dataset": {"resolution": 512, "min_bucket_reso": 768, "max_bucket_reso": 1024}}, "dataset.min_bucket_reso", "at most the resolution"),
    ({"dataset": {"resolution": 500}}, "dataset.resolution", "multiple of 8"),
    ({"dataset": {"dir": "/d", "reg_dir": "/d"}}, "dataset.reg_dir", "training folder itself"),
    ({"dataset": {"caption_extension": "txt"}}, "dataset.caption_extension", "starting with a dot"),
    ({"train": {"device": "gpu"}}, "train.device", "auto, cpu, cuda, cuda:N or mps"),
    ({"train": {"device": "cpu", "mixed_precision": "fp16"}}, "train.mixed_precision", "fp16 needs a GPU"),
    ({"train": {"device": "cpu", "optimizer": "adamw8bit"}}, "train.optimizer", "CUDA"),
    ({"sample": {"every_steps": 100}}, "sample.prompts", "every_steps > 0"),
    ({"sample": {"width": 500}}, "sample.width", "multiple of 8"),
    ({"output": {"name": "CON"}}, "output.name", "reserved"),
    ({"output": {"dir": ""}}, "output.dir", "required"),
])
def test_each_problem_is_reported_on_its_field(sections, path, fragment):
    errors = _errors(**sections)
    assert path in errors, errors
    assert fragment in errors[path]


def test_the_defaults_and_sensible_variations_are_valid():
    assert validate(TrainConfig()) == []
    assert _errors(train={"max_steps": 0, "epochs": 10, "warmup_steps": 50}) == {}  # epochs: length unknown here
    assert _errors(train={"device": "cuda:1", "mixed_precision": "fp16", "optimizer": "adamw8bit"}) == {}
    assert _errors(dataset={"buckets": False, "resolution": 1024}) == {}  # bucket limits matter only with buckets
    assert _errors(train={"unet_lr": 0.0}) == {}  # text-encoder-only training is allowed


def test_wrong_types_set_directly_are_caught_too():
    config = TrainConfig()
    config.network.rank = "16"
    config.dataset.flip = 1
    config.network.alpha = 8  # an int where a float is expected is fine
    errors = {e.path: e.message for e in validate(config)}
    assert set(errors) == {"network.rank", "dataset.flip"}
    assert "whole number" in errors["network.rank"] and "true/false" in errors["dataset.flip"]


def test_type_errors_from_files_name_the_key_and_the_value():
    _, errors = from_dict({"network": {"rank": "abc", "type": ["lora"]}, "train": {"unet_lr": float("nan"), "seed": True}})
    messages = {e.path: e.message for e in errors}
    assert messages["network.rank"] == "must be a whole number, not 'abc'"
    assert messages["network.type"] == "must be text, not ['lora']"
    assert "finite" in messages["train.unet_lr"]
    assert messages["train.seed"] == "must be a whole number, not True"


def test_lenient_where_the_meaning_is_plain():
    config, errors = from_dict({"network": {"rank": "32", "alpha": 16}, "dataset": {"flip": "yes"}, "train": {"max_steps": 2e3}})
    assert errors == []
    assert (config.network.rank, config.network.alpha, config.dataset.flip, config.train.max_steps) == (32, 16.0, True, 2000)


def test_unknown_keys_get_a_did_you_mean_or_the_right_section():
    _, errors = from_dict({"train": {"unet_l": 1e-4, "rank": 4}, "output": {"save_evry_steps": 5}, "trainn": {}})
    messages = {e.path: e.message for e in errors}
    assert messages["train.unet_l"] == "unknown setting; did you mean 'unet_lr'?"
    assert messages["train.rank"] == "unknown setting; it belongs in [network]"
    assert "did you mean 'save_every_steps'" in messages["output.save_evry_steps"]
    assert "did you mean 'train'" in messages["trainn"]


def test_one_config_error_lists_everything():
    config = TrainConfig()
    config.network.rank, config.train.unet_lr = 0, -1.0
    with pytest.raises(ConfigError) as info:
        check(config)
    assert "2 problems" in str(info.value)
    assert "network.rank: must be at least 1" in str(info.value) and "train.unet_lr: must be at least 0.0" in str(info.value)
    assert [e.path for e in info.value.errors] == ["network.rank", "train.unet_lr"]


def test_paths_are_checked_only_when_asked(tmp_path):
    config = TrainConfig()
    config.dataset.dir = str(tmp_path / "missing")
    config.model.checkpoint = str(tmp_path / "none.safetensors")
    assert validate(config) == []
    errors = {e.path: e.message for e in validate(config, check_paths=True)}
    assert "does not exist" in errors["dataset.dir"] and "does not exist" in errors["model.checkpoint"]
    (tmp_path / "missing").mkdir()
    (tmp_path / "none.safetensors").write_bytes(b"x")
    assert validate(config, check_paths=True) == []
    config.dataset.dir = ""
    assert "required" in {e.path: e.message for e in validate(config, check_paths=True)}["dataset.dir"]


def test_warnings_flag_legal_but_odd_settings():
    config = TrainConfig()
    config.train.epochs = 5
    config.network.alpha = 64.0
    config.model.family = "sdxl"
    warnings = {w.path for w in config_warnings(config)}
    assert {"train.epochs", "network.alpha", "dataset.resolution"} <= warnings
    assert config_warnings(TrainConfig()) == []
