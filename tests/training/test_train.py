"""End-to-end training on tiny models: the loss goes down, the file is complete and loads."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from lora_trainer.models import load_bundle
from lora_trainer.networks.inspect_lora import inspect_lora
from lora_trainer.networks.load import apply_kohya, read_kohya
from lora_trainer.training.events import EventBus
from lora_trainer.training.trainer import train


def _dataset_loss(bundle, config) -> float:
    """Mean denoising loss over the dataset at fixed noise and timesteps (what training minimises)."""
    from lora_trainer.models.conditioning import encode_text
    from lora_trainer.training.prepare import prepare_items

    items, _ = prepare_items(config, bundle, torch.device("cpu"), EventBus(), lambda: False)
    generator = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for item in items:
            latents = item.latents[False][None]
            cond = encode_text(bundle.text_encoders, bundle.tokenizers, bundle.family, [item.caption])
            for t in (100, 300, 500, 700, 900):
                noise = torch.randn(latents.shape, generator=generator)
                timesteps = torch.tensor([t])
                noisy = bundle.noise_scheduler.add_noise(latents, noise, timesteps)
                kwargs = {}
                if bundle.family == "sdxl":
                    time_ids = torch.tensor([[*item.original_size, 0, 0, item.bucket[1], item.bucket[0]]], dtype=torch.float32)
                    kwargs["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": time_ids}
                prediction = bundle.unet(noisy, timesteps, cond.hidden_states, **kwargs).sample
                target = noise if bundle.prediction_type == "epsilon" else bundle.noise_scheduler.get_velocity(latents, noise, timesteps)
                total += float(torch.nn.functional.mse_loss(prediction, target))
    return total / (len(items) * 5)


@pytest.mark.parametrize(
    "family, network, dora",
    [("sd1", "lora", False), ("sd1", "locon", False), ("sd1", "loha", False), ("sd1", "lokr", False),
     ("sd1", "lora", True), ("sd2-v", "lora", False), ("sdxl", "locon", False)],
)
def test_short_run_lowers_the_loss_and_the_file_reproduces_it(make_config, family, network, dora):
    config = make_config(family, network={"type": network, "dora": dora}, train={"max_steps": 40})
    result = train(config)
    assert result.status == "done" and result.output.is_file()

    bundle = load_bundle(config.model.checkpoint)
    before = _dataset_loss(bundle, config)
    components = {"unet": bundle.unet, **{f"text_encoder_{i}": e for i, e in enumerate(bundle.text_encoders)}}
    adapters = apply_kohya(read_kohya(result.output), components, bundle.config)
    try:
        after = _dataset_loss(bundle, config)
    finally:
        adapters.remove()
    assert after < before * 0.97, f"loss {before:.4f} -> {after:.4f}"

    report = inspect_lora(result.output, check=True)
    assert report["unmatched"] == []
    assert report["network"] == network + ("+dora" if dora else "")


def test_file_metadata_and_sidecars(make_config):
    config = make_config("sd1", train={"max_steps": 6}, sample={"every_steps": 3, "prompts": ["tinychar, red circle"], "steps": 2})
    result = train(config)
    with safe_open(str(result.output), "pt") as handle:
        meta = handle.metadata()
        keys = list(handle.keys())
    for key in ("ss_output_name", "ss_base_model_version", "ss_v2", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args", "ss_tag_frequency", "ss_dataset_dirs", "ss_resolution", "ss_sd_model_name", "ss_new_sd_model_hash",
                "ss_clip_skip", "ss_training_started_at", "ss_steps", "ss_epoch", "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer",
                "ss_lr_scheduler", "ss_seed", "modelspec.architecture", "modelspec.sai_model_spec", "sshs_model_hash"):
        assert key in meta, key
    assert meta["ss_output_name"] == "tiny" and meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0" and meta["ss_steps"] == "6"
    assert json.loads(meta["ss_tag_frequency"])["5_tinychar"]["tinychar"] == 6
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_tinychar": {"n_repeats": 5, "img_count": 6}}
    assert float(safe_open(str(result.output), "pt").get_tensor(next(k for k in keys if k.endswith(".alpha")))) == 2.0
    sidecar = json.loads(result.output.with_suffix(".json").read_text())
    assert sidecar["activation text"] == "tinychar" and sidecar["sd version"] == "SD1"
    assert (result.output.parent / "tiny.preview.png").is_file()
    assert sorted(p.name for p in (config.logs_dir / "samples").iterdir()) == ["step000003_0.png", "step000006_0.png"]
    lines = [json.loads(line) for line in (config.logs_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr"} <= set(line) for line in lines)


def test_intermediate_saves_keep_the_last_n(make_config):
    config = make_config("sd1", train={"max_steps": 8}, output={"save_every_steps": 2, "keep_last": 2})
    saves = []
    result = train(config, events=EventBus([lambda e: saves.append(e.data["path"]) if e.kind == "save" else None]))
    names = sorted(p.name for p in result.output.parent.glob("tiny*.safetensors"))
    assert names == ["tiny-step000004.safetensors", "tiny-step000006.safetensors", "tiny.safetensors"]
    assert len(saves) == 4
    with safe_open(str(result.output.parent / "tiny-step000006.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_output_name"] == "tiny-step000006"


def test_an_existing_lora_is_never_overwritten_and_nothing_trains(make_config):
    from lora_trainer.errors import UserError

    config = make_config("sd1")
    target = config.logs_dir.parent / "tiny.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's file")
    steps = []
    with pytest.raises(UserError, match="already exists"):
        train(config, events=EventBus([lambda e: steps.append(e) if e.kind == "step" else None]))
    assert target.read_bytes() == b"the user's file" and steps == []


def test_nan_loss_stops_with_the_last_good_save(make_config):
    config = make_config("sd1", train={"max_steps": 12}, output={"save_every_steps": 4})
    bundle = load_bundle(config.model.checkpoint)

    def poison(event):
        if event.kind == "step" and event.data["step"] == 6:
            with torch.no_grad():
                for param in bundle.unet.parameters():
                    if param.requires_grad:
                        param.fill_(float("nan"))
                        break

    errors = []
    result = train(config, bundle=bundle, events=EventBus([poison, lambda e: errors.append(e) if e.kind == "error" else None]))
    assert result.status == "nan" and result.output is None
    assert errors and "learning rate" in errors[0].data["message"]
    out = result_dir = config.logs_dir.parent
    assert (out / "tiny-step000004.safetensors").is_file() and not (out / "tiny.safetensors").exists()
    assert not list(result_dir.glob(".*.tmp"))
    good = read_kohya(out / "tiny-step000004.safetensors")
    assert all(math.isfinite(float(t.float().abs().max())) for tensors in good.modules.values() for t in tensors.values())
    assert not any(p.requires_grad for p in bundle.unet.parameters())  # adapters removed


def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(make_config, tmp_path):
    straight = make_config("sd1", train={"max_steps": 10}, output={"dir": str(tmp_path / "a")}, dataset={"flip": True, "shuffle_tags": True, "tag_dropout": 0.2})
    losses_a = []
    result_a = train(straight, events=EventBus([lambda e: losses_a.append(e.data["loss"]) if e.kind == "step" else None]))

    resumed = make_config("sd1", train={"max_steps": 10}, output={"dir": str(tmp_path / "b")}, dataset={"flip": True, "shuffle_tags": True, "tag_dropout": 0.2})
    losses_b = []
    record = lambda e: losses_b.append(e.data["loss"]) if e.kind == "step" else None  # noqa: E731
    first = train(resumed, events=EventBus([record]), should_stop=lambda: len(losses_b) >= 4)
    assert first.status == "interrupted" and first.step == 4 and first.output is None
    second = train(resumed, events=EventBus([record]), resume=first.state_dir)
    assert second.status == "done" and second.step == 10
    assert len(losses_b) == 10
    assert losses_b == pytest.approx(losses_a, rel=1e-5, abs=1e-6)
    a, b = read_kohya(result_a.output), read_kohya(second.output)
    for name, tensors in a.modules.items():
        for suffix, tensor in tensors.items():
            assert torch.allclose(tensor.float(), b.modules[name][suffix].float(), atol=1e-4), (name, suffix)
