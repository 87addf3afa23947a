"""Importing kohya_ss GUI JSON and sd-scripts TOML: what carries over, and what we say we ignored."""

import json

import pytest

from lora_trainer.config import import_config, import_kohya_json, import_sd_scripts_toml, validate
from lora_trainer.errors import ConfigError

GUI = {
    "LoRA_type": "Standard", "pretrained_model_name_or_path": "/models/anything-v5.safetensors",
    "train_data_dir": "/data/img", "reg_data_dir": "", "output_dir": "/out", "output_name": "mychar",
    "network_dim": 32, "network_alpha": 16, "conv_dim": 8, "conv_alpha": 1,
    "learning_rate": 0.0001, "unet_lr": 0.0002, "text_encoder_lr": 5e-05,
    "lr_scheduler": "cosine_with_restarts", "lr_warmup": 10, "lr_scheduler_num_cycles": "3", "lr_scheduler_power": "",
    "max_train_steps": "2000", "epoch": 4, "train_batch_size": 2, "gradient_accumulation_steps": 1,
    "optimizer": "AdamW8bit", "optimizer_args": "weight_decay=0.05 betas=0.9,0.99",
    "mixed_precision": "bf16", "save_precision": "float", "seed": "1234", "clip_skip": 2,
    "max_resolution": "768,768", "enable_bucket": True, "min_bucket_reso": 256, "max_bucket_reso": 2048,
    "bucket_no_upscale": True, "flip_aug": False, "shuffle_caption": True, "keep_tokens": "1", "caption_extension": ".txt",
    "caption_dropout_rate": 0.05, "caption_dropout_every_n_epochs": 0, "min_snr_gamma": 5, "noise_offset_type": "Original",
    "noise_offset": 0.05, "multires_noise_iterations": 6, "multires_noise_discount": 0.3,
    "gradient_checkpointing": True, "cache_latents": True, "cache_latents_to_disk": True, "save_every_n_steps": 500,
    "save_precision_extra": "", "sample_every_n_steps": 250,
    "sample_prompts": "mychar, smiling --n lowres, bad hands --w 512 --h 768 --d 7 --l 6.5 --s 25\nmychar, running --n lowres",
    "v2": False, "v_parameterization": False, "sdxl": False, "dora_wd": False, "xformers": "xformers",
    "max_grad_norm": 1, "huber_c": 0.1, "loss_type": "l2", "huber_schedule": "snr", "save_model_as": "safetensors",
    "num_cpu_threads_per_process": 2, "wandb_api_key": "sk-secret-123", "use_wandb": False, "color_aug": True,
    "additional_parameters": "--debiased_estimation_loss --max_token_length=225",
}


def _ignored(result):
    return {item.key: item for item in result.ignored}


def test_kohya_gui_json_maps_onto_our_fields(tmp_path):
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps(GUI), encoding="utf-8")
    result = import_config(path)
    c = result.config
    assert (c.model.checkpoint, c.model.clip_skip, c.model.family) == ("/models/anything-v5.safetensors", 2, "auto")
    assert (c.dataset.dir, c.dataset.reg_dir, c.dataset.resolution, c.dataset.max_bucket_reso) == ("/data/img", "", 768, 2048)
    assert c.dataset.shuffle_tags and c.dataset.bucket_no_upscale and c.dataset.keep_tokens == 1
    assert c.dataset.caption_dropout == 0.05
    assert (c.network.type, c.network.rank, c.network.alpha) == ("lora", 32, 16.0)  # Standard ignores conv_dim
    assert (c.train.unet_lr, c.train.text_encoder_lr, c.network.train_text_encoder) == (2e-4, 5e-5, True)
    assert (c.train.max_steps, c.train.epochs, c.train.warmup_steps) == (2000, 0, 200)  # 10 % of 2000 steps
    assert (c.train.optimizer, c.train.weight_decay, c.train.scheduler, c.train.lr_scheduler_num_cycles) == \
        ("adamw8bit", 0.05, "cosine_with_restarts", 3)
    assert (c.train.mixed_precision, c.output.save_precision, c.train.seed, c.train.batch_size) == ("bf16", "fp32", 1234, 2)
    assert (c.train.noise_offset, c.train.multires_noise_iterations) == (0.05, 0)  # "Original" offset only
    assert c.train.min_snr_gamma == 5.0 and c.train.gradient_checkpointing and c.train.debiased_estimation
    assert (c.output.dir, c.output.name, c.output.save_every_steps) == ("/out", "mychar", 500)
    assert c.sample.every_steps == 250 and c.sample.prompts == ["mychar, smiling", "mychar, running"]
    assert (c.sample.negative_prompt, c.sample.width, c.sample.height, c.sample.seed, c.sample.cfg_scale, c.sample.steps) == \
        ("lowres, bad hands", 512, 768, 7, 6.5, 25)
    assert validate(c) == []


def test_kohya_gui_json_reports_what_it_ignored_with_reasons():
    result = import_kohya_json(GUI)
    ignored = _ignored(result)
    assert "SDPA" in ignored["xformers"].reason
    assert "in memory" in ignored["cache_latents_to_disk"].reason
    assert "max_token_length" in ignored and "color_aug" in ignored
    assert "optimizer_args betas" in ignored and "epoch" in ignored  # max_train_steps wins over epoch
    assert "multires_noise_iterations" in ignored  # noise_offset_type Original
    assert ignored["wandb_api_key"].value == "***"  # never echo a secret
    assert ignored["max_token_length"].value == "225"
    assert "sk-secret" not in result.report()
    # defaults and off switches are not noise in the list
    for quiet in ("save_model_as", "num_cpu_threads_per_process", "use_wandb", "dora_wd", "sdxl", "huber_schedule",
                  "caption_dropout_every_n_epochs", "conv_dim", "lr_scheduler_power", "reg_data_dir"):
        assert quiet not in ignored, quiet
    assert any("lr_warmup 10%" in note for note in result.notes)


@pytest.mark.parametrize("lora_type, extra, expected", [
    ("Kohya LoCon", {}, ("locon", 8, 1.0, False)),
    ("LyCORIS/LoCon", {}, ("locon", 8, 1.0, False)),
    ("LyCORIS/LoHa", {}, ("loha", 8, 1.0, False)),
    ("LyCORIS/LoKr", {"dora_wd": False}, ("lokr", 8, 1.0, False)),
    ("Standard", {"dora_wd": True}, ("lora", 8, 4.0, True)),  # conv settings untouched for Standard
    ("LyCORIS/LoCon", {"dora_wd": True}, ("locon", 8, 1.0, True)),
])
def test_kohya_network_types(lora_type, extra, expected):
    c = import_kohya_json({"LoRA_type": lora_type, "conv_dim": 8, "conv_alpha": 1, **extra}).config
    assert (c.network.type, c.network.conv_rank, c.network.conv_alpha, c.network.dora) == expected


def test_unsupported_kohya_choices_fall_back_and_say_so():
    result = import_kohya_json({"LoRA_type": "LyCORIS/iA3", "optimizer": "DAdaptAdam", "lr_scheduler": "piecewise_constant",
                                "loss_type": "smooth_l1", "network_dim": "abc"})
    ignored = _ignored(result)
    assert set(ignored) >= {"LoRA_type", "optimizer", "lr_scheduler", "loss_type", "network_dim"}
    assert "network.rank" in ignored["network_dim"].reason and "whole number" in ignored["network_dim"].reason
    c = result.config
    assert (c.network.type, c.train.optimizer, c.train.scheduler, c.train.loss_type, c.network.rank) == \
        ("lora", "adamw", "cosine", "l2", 16)


def test_kohya_empty_strings_mean_unset_and_epochs_are_used_without_steps():
    result = import_kohya_json({"max_train_steps": "", "epoch": 10, "lr_warmup": 5, "seed": "", "unet_lr": "",
                                "text_encoder_lr": "", "learning_rate": 3e-4, "output_name": ""})
    c = result.config
    assert (c.train.max_steps, c.train.epochs, c.train.seed, c.output.name) == (0, 10, 42, "my_lora")
    assert (c.train.unet_lr, c.train.text_encoder_lr) == (3e-4, 3e-4)  # unset rates fall back to learning_rate
    assert "lr_warmup" in _ignored(result) and "epochs" in _ignored(result)["lr_warmup"].reason


def test_kohya_learning_rate_rules():
    unet_only = import_kohya_json({"learning_rate": 1e-4, "unet_lr": 2e-4, "text_encoder_lr": 0}).config
    assert unet_only.train.unet_lr == 2e-4 and unet_only.network.train_text_encoder is False
    both_zero = import_kohya_json({"learning_rate": 1e-4, "unet_lr": 0, "text_encoder_lr": 0}).config
    assert (both_zero.train.unet_lr, both_zero.train.text_encoder_lr, both_zero.network.train_text_encoder) == (1e-4, 1e-4, True)


def test_kohya_family_flags():
    v = import_kohya_json({"v2": True, "v_parameterization": True}).config.model
    assert (v.family, v.prediction_type) == ("sd2", "v_prediction")
    base = import_kohya_json({"v2": True, "v_parameterization": False}).config.model
    assert (base.family, base.prediction_type) == ("sd2", "epsilon")
    xl = import_kohya_json({"sdxl": True, "sdxl_cache_text_encoder_outputs": True, "text_encoder_lr": 0, "unet_lr": 1e-4,
                            "max_resolution": "1024,1024"}).config
    assert (xl.model.family, xl.dataset.cache_text_encoder_outputs, xl.network.train_text_encoder, xl.dataset.resolution) == \
        ("sdxl", True, False, 1024)


def test_kohya_additional_parameters_override_and_network_args():
    result = import_kohya_json({"LoRA_type": "Standard", "network_dim": 8,
                                "additional_parameters": '--network_args "conv_dim=4" "conv_alpha=2" --zero_terminal_snr '
                                                         '--noise_offset=0.1 --some_unknown_flag'})
    c = result.config
    assert (c.network.type, c.network.conv_rank, c.network.conv_alpha) == ("locon", 4, 2.0)
    assert c.train.zero_terminal_snr and c.train.noise_offset == 0.1
    assert "some_unknown_flag" in _ignored(result)


def test_non_square_resolution_becomes_the_same_area():
    result = import_kohya_json({"max_resolution": "512,768"})
    assert result.config.dataset.resolution == 640 and any("512x768" in note for note in result.notes)


SD_SCRIPTS = """
[model_arguments]
pretrained_model_name_or_path = "/models/sd15.safetensors"
v2 = false

[dataset_arguments]
train_data_dir = "/data/10_char"
resolution = "512,512"
enable_bucket = true
flip_aug = true
cache_latents = true
cache_latents_to_disk = true
caption_extension = ".caption"

[network_arguments]
network_module = "lycoris.kohya"
network_dim = 16
network_alpha = 8
network_args = ["algo=loha", "conv_dim=8", "conv_alpha=4", "preset=full", "use_tucker=True"]

[optimizer_arguments]
optimizer_type = "prodigyopt.Prodigy"
optimizer_args = ["weight_decay=0.01", "decouple=True"]
learning_rate = 1.0
lr_scheduler = "cosine"
lr_warmup_steps = 0.1

[training_arguments]
max_train_steps = 1200
train_batch_size = 4
mixed_precision = "fp16"
save_precision = "fp16"
xformers = true
seed = 7
output_dir = "/out"
output_name = "char"
save_every_n_steps = 400
save_last_n_steps = 800
save_state = true
log_with = "tensorboard"
logging_dir = "/logs"
min_snr_gamma = 5.0
network_train_unet_only = true
sample_prompts = "/prompts/p.toml"
"""


def test_sd_scripts_toml_maps_onto_our_fields(tmp_path):
    path = tmp_path / "sd.toml"
    path.write_text(SD_SCRIPTS, encoding="utf-8")
    result = import_config(path)
    c = result.config
    assert (c.model.checkpoint, c.dataset.dir, c.dataset.resolution, c.dataset.flip, c.dataset.caption_extension) == \
        ("/models/sd15.safetensors", "/data/10_char", 512, True, ".caption")
    assert (c.network.type, c.network.rank, c.network.alpha, c.network.conv_rank, c.network.conv_alpha) == ("loha", 16, 8.0, 8, 4.0)
    assert (c.train.optimizer, c.train.unet_lr, c.train.weight_decay, c.network.train_text_encoder) == ("prodigy", 1.0, 0.01, False)
    assert (c.train.max_steps, c.train.warmup_steps, c.train.batch_size, c.train.mixed_precision) == (1200, 120, 4, "fp16")
    assert (c.output.dir, c.output.name, c.output.save_every_steps, c.output.keep_last) == ("/out", "char", 400, 2)
    assert (c.output.save_state_every_steps, c.output.tensorboard, c.output.logs_dir) == (400, True, "/logs")
    assert validate(c) == []
    ignored = _ignored(result)
    assert "SDPA" in ignored["xformers"].reason
    assert {"cache_latents_to_disk", "optimizer_args decouple", "network_args use_tucker", "sample_prompts"} <= set(ignored)
    assert "network_args preset" not in ignored  # preset=full is the default


@pytest.mark.parametrize("module, args, expected", [
    ("networks.lora", [], "lora"),
    ("networks.lora", ["conv_dim=4", "conv_alpha=1"], "locon"),
    ("lycoris.kohya", ["algo=lokr"], "lokr"),
    ("lycoris.kohya", ["algo=locon", "conv_dim=4"], "locon"),
])
def test_sd_scripts_network_modules(module, args, expected):
    assert import_sd_scripts_toml({"network_module": module, "network_args": args}).config.network.type == expected


def test_sd_scripts_defaults_and_unsupported_modules_are_reported():
    result = import_sd_scripts_toml({"network_module": "networks.dylora", "max_train_epochs": 3, "max_train_steps": 500,
                                     "text_encoder_lr": [1e-5, 2e-5]})
    assert "network_module" in _ignored(result)
    assert (result.config.train.epochs, result.config.train.max_steps) == (3, 0)  # epochs override steps in sd-scripts
    assert result.config.train.text_encoder_lr == 1e-5
    assert any("overrides max_train_steps" in n for n in result.notes) and any("both text encoders" in n for n in result.notes)
    plain = import_sd_scripts_toml({})
    assert plain.config.train.max_steps == 1600 and plain.ignored == []


def test_sd_scripts_prompt_text_file_is_read(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na cat --n blurry --s 30\n\na dog\n", encoding="utf-8")
    c = import_sd_scripts_toml({"sample_prompts": str(prompts), "sample_every_n_steps": 100}).config
    assert c.sample.prompts == ["a cat", "a dog"] and c.sample.negative_prompt == "blurry" and c.sample.steps == 30


def test_unreadable_imports_say_so(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json"):
        import_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        import_config(tmp_path / "missing.toml")
