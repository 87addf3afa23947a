"""TrainConfig from files and overrides: every mistake gets a message naming its key."""

import json
from pathlib import Path

import pytest

from lora_trainer.config import (TrainConfig, field_info, from_dict, load_config, resolve_inside, sanitize_output_name,
                                 save_config, validate)
from lora_trainer.errors import ConfigError
from lora_trainer.presets import PRESETS, preset

ISSUE_EXAMPLE = """
[model]
checkpoint = "base.safetensors"
family = "auto"
prediction_type = "auto"
clip_skip = 1
[dataset]
dir = "data"
reg_dir = ""
caption_extension = ".txt"
resolution = 512
buckets = true
flip = false
shuffle_tags = false
keep_tokens = 1
caption_dropout = 0.0
tag_dropout = 0.0
cache_latents = true
[network]
type = "lora"
dora = false
rank = 16
alpha = 8
conv_rank = 8
conv_alpha = 4
train_text_encoder = true
[train]
max_steps = 1000
epochs = 0
batch_size = 1
grad_accum = 1
unet_lr = 1e-4
text_encoder_lr = 5e-5
optimizer = "adamw"
scheduler = "cosine"
warmup_steps = 0
seed = 42
mixed_precision = "no"
gradient_checkpointing = false
min_snr_gamma = 0
noise_offset = 0
max_grad_norm = 1.0
[output]
dir = "out"
name = "mine"
save_every_steps = 0
keep_last = 0
save_precision = "fp16"
logs_dir = "logs"
[sample]
every_steps = 0
prompts = ["a photo of mine"]
seed = 1234
steps = 20
"""


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path)
    assert config.network.alpha == 8.0 and isinstance(config.network.alpha, float)
    assert config.train.unet_lr == 1e-4 and config.sample.prompts == ["a photo of mine"]
    assert config.logs_dir == Path("logs")


def test_toml_and_json_round_trip(tmp_path):
    config = TrainConfig()
    config.output.name = "キャラ_v1"
    config.sample.prompts = ['a "quoted" prompt', "second"]
    config.train.unet_lr = 3e-4
    for suffix in (".toml", ".json"):
        path = save_config(tmp_path / f"c{suffix}", config)
        assert load_config(path).to_dict() == config.to_dict()
    assert json.loads((tmp_path / "c.json").read_text())["output"]["name"] == "キャラ_v1"


def test_unknown_key_gets_a_did_you_mean():
    _, errors = from_dict({"train": {"unet_l": 1e-4}, "netwrk": {}})
    messages = {e.path: e.message for e in errors}
    assert "did you mean 'unet_lr'" in messages["train.unet_l"]
    assert "did you mean 'network'" in messages["netwrk"]


@pytest.mark.parametrize(
    "data, path, fragment",
    [
        ({"network": {"rank": "abc"}}, "network.rank", "whole number"),
        ({"network": {"rank": 0}}, "network.rank", "at least 1"),
        ({"train": {"unet_lr": [1]}}, "train.unet_lr", "must be a number"),
        ({"dataset": {"caption_dropout": 1.5}}, "dataset.caption_dropout", "at most 1.0"),
        ({"train": {"optimizer": "adamx"}}, "train.optimizer", "one of adamw"),
        ({"train": {"max_steps": 0, "epochs": 0}}, "train.max_steps", "both are 0"),
        ({"train": {"max_steps": 10, "warmup_steps": 20}}, "train.warmup_steps", "longer than the run"),
        ({"output": {"name": "../escape"}}, "output.name", "path"),
        ({"dataset": {"caption_extension": "txt"}}, "dataset.caption_extension", "dot"),
        ({"dataset": {"flip": "maybe"}}, "dataset.flip", "true or false"),
        ({"sample": {"prompts": "one\ntwo"}}, None, None),
    ],
)
def test_field_level_messages(data, path, fragment):
    config, errors = from_dict(data)
    errors += validate(config)
    if path is None:
        assert errors == [] and config.sample.prompts == ["one", "two"]
        return
    matching = [e for e in errors if e.path == path]
    assert matching and fragment in matching[0].message, errors


def test_set_overrides_are_typed_and_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path, ["train.max_steps=250", "network.dora=true", "output.name=other", "sample.prompts=[\"x\", \"y\"]"])
    assert config.train.max_steps == 250 and config.network.dora is True and config.output.name == "other"
    assert config.sample.prompts == ["x", "y"]
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["max_steps=3"])


def test_bad_files_are_reported_with_their_name(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nmax_steps = ")
    with pytest.raises(ConfigError, match="broken.toml.*TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_presets_apply_under_the_file():
    sdxl = load_config(None, ["dataset.dir=d", "model.checkpoint=m"], base=preset("SDXL character"))
    assert (sdxl.network.rank, sdxl.network.alpha, sdxl.network.train_text_encoder, sdxl.dataset.resolution) == (32, 16.0, False, 1024)
    assert sdxl.dataset.cache_text_encoder_outputs is True
    sd15 = load_config(None, ["train.unet_lr=2e-4"], base=preset("SD1.5 character"))
    assert (sd15.network.rank, sd15.network.alpha, sd15.train.text_encoder_lr, sd15.train.unet_lr) == (16, 8.0, 5e-5, 2e-4)
    for name in PRESETS:
        config, errors = from_dict(preset(name))
        assert errors + validate(config) == [], name
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")


@pytest.mark.parametrize(
    "name, expected",
    [("my_lora", "my_lora"), ("name.safetensors", "name"), ("キャラ", "キャラ"), ("  spaced name.  ", "spaced name"),
     ("a<b>c", "a_b_c"), ("tab\there", "tabhere")],
)
def test_output_names_are_made_safe(name, expected):
    assert sanitize_output_name(name) == expected


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "a\\b", "CON", "nul.txt", "", "...", "x" * 300, "~root"])
def test_unsafe_output_names_are_refused(name):
    with pytest.raises(ConfigError):
        sanitize_output_name(name)


def test_resolve_inside_refuses_escapes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert resolve_inside(out, "a.safetensors") == (out / "a.safetensors").resolve()
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError):
        resolve_inside(out, "link/evil.safetensors")
    with pytest.raises(ConfigError):
        resolve_inside(out, "../evil.safetensors")


def test_every_field_has_help_for_the_ui():
    for section, values in TrainConfig().to_dict().items():
        for key in values:
            info = field_info(section, key)
            assert info["help"], f"{section}.{key}"
