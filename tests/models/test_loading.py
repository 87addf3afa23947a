"""load_bundle from files, mappings and the WebUI's live key variants: zero copy, right family."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lora_trainer.errors import CheckpointError
from lora_trainer.models import load_bundle
from lora_trainer.models.checkpoint_io import read_checkpoint
from lora_trainer.models.demo import demo_state_dict
from lora_trainer.models.families import ModelConfig
from tests.models.webui_keys import webui_state_dict

# Also run on Forge's pins: transformers 4.46 changes CLIP internals this layer depends on.
pytestmark = pytest.mark.both_profiles

REPO = Path(__file__).resolve().parents[2]


def _shared_fraction(bundle, source) -> float:
    """Share of the bundle's parameter bytes that live in the source tensors' storage."""
    storages = {t.untyped_storage().data_ptr() for t in source.values()}
    modules = [bundle.unet, bundle.vae] + bundle.text_encoders
    total = shared = 0
    for module in modules:
        for p in module.parameters():
            size = p.numel() * p.element_size()
            total += size
            if p.untyped_storage().data_ptr() in storages:
                shared += size
    return shared / total


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_bundle_from_a_mapping_shares_storage_with_it(family):
    state, metadata = demo_state_dict(family, seed=3)
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    bundle = load_bundle(state, config=config)
    assert bundle.family == family
    assert _shared_fraction(bundle, state) >= 0.999
    assert all(not p.requires_grad for p in bundle.unet.parameters())


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_webui_key_variants_load_to_the_same_model(family):
    state, metadata = demo_state_dict(family, seed=3)
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    variant = webui_state_dict(family, state)
    assert any(".wrapped." in k for k in variant)
    plain = load_bundle(state, config=config)
    live = load_bundle(variant, config=config)
    assert live.family == family
    assert _shared_fraction(live, variant) >= 0.999
    for a, b in zip(plain.text_encoders, live.text_encoders):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def test_bundle_from_file_has_the_families_parts(demo_checkpoints):
    sdxl = load_bundle(demo_checkpoints["sdxl"])
    assert sdxl.family == "sdxl" and len(sdxl.text_encoders) == 2 and len(sdxl.tokenizers) == 2
    assert type(sdxl.text_encoders[1]).__name__ == "CLIPTextModelWithProjection"
    assert sdxl.noise_scheduler.config.prediction_type == "epsilon"
    assert sdxl.vae_scaling_factor == pytest.approx(0.13025)
    sd1 = load_bundle(demo_checkpoints["sd1"])
    assert sd1.family == "sd1" and len(sd1.text_encoders) == 1 and sd1.vae_scaling_factor == pytest.approx(0.18215)
    assert sd1.name == "tiny-sd1"


def test_sd2_prediction_type_sources(demo_checkpoints, tmp_path):
    assert load_bundle(demo_checkpoints["sd2-v"]).prediction_type == "v_prediction"
    # Without any hint, SD2 defaults to epsilon and says so.
    state, metadata = read_checkpoint(demo_checkpoints["sd2"])
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    guessed = load_bundle(state, config=config)
    assert guessed.prediction_type == "epsilon"
    assert any("v_prediction" in note for note in guessed.notes)
    # An explicit argument wins; so does a .yaml beside the file (A1111's convention).
    assert load_bundle(state, config=config, prediction_type="v_prediction").noise_scheduler.config.prediction_type == "v_prediction"
    bare = tmp_path / "model.safetensors"
    save_file(state, str(bare), metadata={"lora_trainer.config": metadata["lora_trainer.config"]})
    (tmp_path / "model.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_bundle(bare).prediction_type == "v_prediction"


def test_ckpt_with_plain_tensors_loads_through_weights_only(demo_checkpoints, tmp_path):
    state, metadata = read_checkpoint(demo_checkpoints["sd1"])
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    assert load_bundle(path, config=config).family == "sd1"


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_needing_more_than_weights_only_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="evil.ckpt.*refused"):
        load_bundle(path)


def test_truncated_and_corrupt_files_name_the_file(demo_checkpoints, tmp_path):
    data = demo_checkpoints["sd1"].read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a model" * 10)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match=path.name):
            load_bundle(path)


def _without(state, predicate):
    return {k: v for k, v in state.items() if not predicate(k)}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s: {**s, "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(1)}, "Stable Diffusion 3"),
        (lambda s: {"double_blocks.0.img_attn.qkv.weight": torch.zeros(1)}, "Flux"),
        (lambda s: {**s, "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 9, 3, 3)}, "inpainting"),
        (lambda s: {**_without(s, lambda k: k.startswith("conditioner.embedders.0.")), "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 1)}, "refiner"),
        (lambda s: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1)}, "LoRA file"),
        (lambda s: {"some.other.weight": torch.zeros(1)}, "no Stable Diffusion UNet"),
        (lambda s: _without(s, lambda k: k.startswith("first_stage_model.encoder.down.0")), "missing"),
    ],
    ids=["sd3", "flux", "inpaint", "refiner", "lora", "unknown", "missing-keys"],
)
def test_unsupported_state_dicts_get_one_clear_message(make, message):
    state, metadata = demo_state_dict("sdxl", seed=1)
    config = ModelConfig.from_json(metadata["lora_trainer.config"])
    with pytest.raises(CheckpointError, match=message) as info:
        load_bundle(make(state), config=config)
    if message == "missing":
        assert "first_stage_model.encoder.down.0" in str(info.value)


def test_family_override_that_contradicts_the_weights_is_refused(demo_checkpoints):
    with pytest.raises(CheckpointError, match="looks like sdxl"):
        load_bundle(demo_checkpoints["sdxl"], family="sd1")


def test_diffusers_folder_source(demo_checkpoints, tmp_path):
    bundle = load_bundle(demo_checkpoints["sd1"])
    folder = tmp_path / "pipeline"
    from lora_trainer.models.diffusers_folder import write_diffusers_configs

    write_diffusers_configs(bundle.config, folder, tokenizers=bundle.tokenizers)
    bundle.unet.save_pretrained(folder / "unet")
    bundle.vae.save_pretrained(folder / "vae")
    bundle.text_encoders[0].save_pretrained(folder / "text_encoder")
    again = load_bundle(folder)
    assert again.family == "sd1"
    for (name, a), (_, b) in zip(bundle.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lora_trainer", *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_demo_model_cli_is_deterministic_and_inspectable(tmp_path):
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        result = _cli("demo-model", "--family", "sd2-v", "--out", path, "--seed", seed)
        assert result.returncode == 0, result.stderr
    tensors_a, meta_a = read_checkpoint(a)
    tensors_b, meta_b = read_checkpoint(b)
    tensors_c, _ = read_checkpoint(c)
    assert meta_a == meta_b and tensors_a.keys() == tensors_b.keys() == tensors_c.keys()
    assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
    assert not all(torch.equal(tensors_a[k], tensors_c[k]) for k in tensors_a)
    report = _cli("inspect", a, "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["kind"] == "checkpoint" and data["family"] == "sd2" and data["prediction_type"] == "v_prediction"
    assert data["dtype"] == "float32"
    bundle = load_bundle(a)
    assert data["parameters"] == bundle.parameter_counts()


def test_cli_bad_file_exits_non_zero_with_the_file_named(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    result = _cli("inspect", bad)
    assert result.returncode == 2
    assert "broken.safetensors" in result.stderr and "Traceback" not in result.stderr
