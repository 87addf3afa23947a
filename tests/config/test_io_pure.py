"""Config files and --set overrides: what a user writes comes back the same, mistakes are named."""

import json
import subprocess
import sys

import pytest

from lora_trainer.config import (TrainConfig, apply_overrides, field_info, load_config, parse_override, save_config,
                                 schema, to_toml)
from lora_trainer.errors import ConfigError

try:
    import tomllib
except ImportError:
    import tomli as tomllib


def _custom() -> TrainConfig:
    config = TrainConfig()
    config.model.checkpoint = "C:\\models\\base.safetensors"
    config.dataset.dir = "/data/キャラ \"quoted\""
    config.dataset.resolution = 768
    config.network.type, config.network.rank, config.network.alpha = "loha", 32, 16.0
    config.train.unet_lr, config.train.max_steps, config.train.optimizer = 3e-5, 250, "lion"
    config.train.mixed_precision = "bf16"
    config.sample.prompts = ["a cat, smiling", "tab\there\nnewline"]
    config.sample.negative_prompt = "bad \x7f hands"
    config.output.name = "my lora"
    return config


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_then_load_gives_the_same_config(tmp_path, suffix):
    config = _custom()
    path = save_config(tmp_path / f"run{suffix}", config)
    assert load_config(path) == config
    assert [p.name for p in tmp_path.iterdir()] == [f"run{suffix}"]  # no temp file left behind


def test_saved_toml_is_standard_toml_with_help_comments(tmp_path):
    path = save_config(tmp_path / "run.toml", _custom())
    text = path.read_text(encoding="utf-8")
    assert tomllib.loads(text)["train"]["unet_lr"] == 3e-5
    assert "# UNet learning rate." in text
    assert to_toml(TrainConfig(), comments=False).count("#") == 0


def test_save_refuses_an_unknown_suffix(tmp_path):
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        save_config(tmp_path / "run.yaml", TrainConfig())


def test_partial_file_keeps_defaults_for_the_rest(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[dataset]\ndir = "/data"\n[train]\nmax_steps = 500\n', encoding="utf-8")
    config = load_config(path)
    assert config.train.max_steps == 500 and config.train.unet_lr == 1e-4 and config.network.rank == 16


def test_set_overrides_are_typed_by_the_field():
    assert parse_override("train.max_steps=500") == ("train", "max_steps", 500)
    assert parse_override("train.unet_lr=1e-4") == ("train", "unet_lr", 1e-4)
    assert parse_override("dataset.flip=yes") == ("dataset", "flip", True)
    assert parse_override("dataset.flip=false") == ("dataset", "flip", False)
    assert parse_override("output.name=123") == ("output", "name", "123")  # text stays text
    assert parse_override("network.alpha=8") == ("network", "alpha", 8.0)
    assert parse_override('sample.prompts=["a", "b"]') == ("sample", "prompts", ["a", "b"])
    assert parse_override("sample.prompts=a cat, smiling") == ("sample", "prompts", ["a cat, smiling"])
    assert parse_override(" model.checkpoint = /m/x=y.safetensors ") == ("model", "checkpoint", "/m/x=y.safetensors")


@pytest.mark.parametrize("text, expected", [
    ("train.max_steps=abc", r"train\.max_steps: must be a whole number, not 'abc'"),
    ("train.max_steps=1.5", r"whole number"),
    ("dataset.flip=maybe", r"dataset\.flip: must be true or false"),
    ("train.unet_lr=nan", r"finite"),
    ("train.unet_l=1e-4", r"unknown setting; did you mean 'unet_lr'\?"),
    ("trian.max_steps=5", r"unknown section 'trian'; did you mean 'train'\?"),
    ("max_steps=5", r"section\.key=value"),
    ("train.max_steps", r"section\.key=value"),
])
def test_bad_overrides_name_the_key(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_override(text)


def test_load_config_applies_overrides_after_the_file_and_base(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"dataset": {"dir": "/d"}, "train": {"max_steps": 100, "batch_size": 4}}), encoding="utf-8")
    config = load_config(path, ["train.max_steps=300"], base={"train": {"batch_size": 2, "seed": 7}})
    assert (config.train.max_steps, config.train.batch_size, config.train.seed) == (300, 4, 7)


def test_bad_overrides_and_bad_values_are_reported_together(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[dataset]\ndir = "/d"\n[train]\nwarmup_steps = 5000\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.unet_l=1", "network.rank=0", "nonsense"])
    paths = [e.path for e in info.value.errors]
    assert paths == ["train.unet_l", "--set", "network.rank", "train.warmup_steps"]
    assert "did you mean 'unet_lr'" in str(info.value) and "network.rank: must be at least 1" in str(info.value)


def test_apply_overrides_lists_every_bad_one_and_leaves_the_input_alone():
    config = TrainConfig()
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, ["train.max_steps=x", "network.rnak=4", "train.seed=5"])
    assert "train.max_steps" in str(info.value) and "did you mean 'rank'" in str(info.value)
    assert apply_overrides(config, ["train.seed=5"]).train.seed == 5 and config.train.seed == 42


def test_load_config_lists_every_problem_at_once(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[dataset]\ndir = "/d"\n[train]\nunet_l = 1e-4\nmax_steps = "abc"\n[network]\nrank = [4]\n[modle]\nx = 1\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "train.unet_l: unknown setting; did you mean 'unet_lr'?" in text
    assert "train.max_steps: must be a whole number, not 'abc'" in text
    assert "network.rank: must be a whole number, not [4]" in text
    assert "modle: unknown section; did you mean 'model'?" in text
    assert [e.path for e in info.value.errors] == ["train.unet_l", "train.max_steps", "network.rank", "modle"]


def test_malformed_and_missing_files_say_so(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_steps = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_a_kohya_file_given_as_config_points_to_import(tmp_path):
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps({"pretrained_model_name_or_path": "x", "network_dim": 8}), encoding="utf-8")
    with pytest.raises(ConfigError, match="kohya"):
        load_config(path)


def test_setting_outside_a_section_says_which_section():
    with pytest.raises(ConfigError, match=r"max_steps: settings belong in a section: put it under \[train\]"):
        TrainConfig.from_dict({"max_steps": 5})


def test_every_field_has_help_type_and_allowed_values_for_the_ui():
    sections = schema()
    assert list(sections) == ["model", "dataset", "network", "train", "output", "sample"]
    for section, entries in sections.items():
        for entry in entries:
            assert entry["help"].strip(), f"{section}.{entry['name']} has no help"
            assert entry["type"] in ("bool", "int", "float", "str", "list[str]")
            if entry["type"] in ("int", "float"):
                assert entry["low"] is not None and entry["high"] is not None, f"{section}.{entry['name']} has no range"
    assert field_info("train.optimizer")["choices"] == ("adamw", "adamw8bit", "lion", "prodigy", "adafactor")
    assert field_info("train", "scheduler")["default"] == "cosine"


def test_the_config_package_imports_neither_torch_nor_gradio():
    code = ("import sys, lora_trainer.config, lora_trainer.presets; "
            "print(sorted(m for m in ('torch', 'gradio', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
