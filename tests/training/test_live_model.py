"""Training on a model someone else owns (the WebUI's): zero copy, and nothing left changed.

The A1111 host hands `train()` a bundle whose tensors are views of the WebUI's live weights
(key variants of the hijacked model, fp16 on a GPU). These tests do the same with a tiny
model: after a run the owner's tensors are bit-identical, still shared, and the modules carry
no adapters; half-precision weights train under autocast with fp32 adapters.
"""

import pytest
import torch

from lora_trainer.models import load_bundle
from lora_trainer.models.demo import demo_state_dict
from lora_trainer.models.families import ModelConfig
from lora_trainer.training.events import EventBus
from lora_trainer.training.trainer import train
from tests.models.webui_keys import webui_state_dict


def _live(family: str, dtype=torch.float32):
    state, metadata = demo_state_dict(family, seed=5)
    state = webui_state_dict(family, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    return state, load_bundle(state, config=ModelConfig.from_json(metadata["lora_trainer.config"]))


def _storages(module) -> dict:
    return {name: p.untyped_storage().data_ptr() for name, p in module.named_parameters()}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_training_leaves_the_owners_weights_bit_identical_and_shared(make_config, family):
    state, bundle = _live(family)
    before = {k: v.clone() for k, v in state.items()}
    storages = [_storages(m) for m in [bundle.unet, bundle.vae] + bundle.text_encoders]
    config = make_config("sdxl" if family == "sdxl" else "sd1", network={"type": "locon", "train_text_encoder": True},
                         train={"max_steps": 4})

    result = train(config, bundle=bundle)

    assert result.status == "done" and result.output.is_file()
    changed = [k for k, v in state.items() if not torch.equal(v, before[k])]
    assert not changed, f"training changed the owner's weights: {changed[:5]}"
    assert storages == [_storages(m) for m in [bundle.unet, bundle.vae] + bundle.text_encoders], "a weight was copied or moved"
    leftovers = [n for m in [bundle.unet] + bundle.text_encoders for n, _ in m.named_modules() if "lora_" in n or "base_layer" in n]
    assert not leftovers, f"adapters left in the model: {leftovers[:5]}"
    assert not any(p.requires_grad for m in [bundle.unet] + bundle.text_encoders for p in m.parameters())


def test_half_precision_live_weights_train_under_autocast_and_stay_untouched(make_config):
    state, bundle = _live("sd1", torch.bfloat16)
    before = {k: v.clone() for k, v in state.items()}
    warnings = []
    events = EventBus([lambda e: warnings.append(e.data["message"]) if e.kind == "warning" else None])
    config = make_config("sd1", train={"max_steps": 4, "mixed_precision": "no"}, network={"train_text_encoder": True})

    result = train(config, bundle=bundle, events=events)

    assert result.status == "done" and result.last_loss is not None and result.last_loss == result.last_loss
    assert any("bf16 autocast" in w for w in warnings), warnings
    assert all(torch.equal(v, before[k]) for k, v in state.items())
    from safetensors import safe_open

    with safe_open(str(result.output), "pt") as f:
        assert any(k.endswith("lora_up.weight") and f.get_tensor(k).abs().sum() > 0 for k in f.keys())


def _run_recording(config, bundle, state, **kwargs):
    """Train; at every step note whether the VAE / text encoder weights were parked on storages
    of their own and whether the owner's tensors were on those same storages."""
    owner_ptrs = lambda: {t.untyped_storage().data_ptr() for t in state.values()}  # noqa: E731
    held = [p.untyped_storage() for m in [bundle.vae, bundle.text_encoders[0]] for p in m.parameters()]  # no address reuse
    original = {name: {p.untyped_storage().data_ptr() for p in m.parameters()} for name, m in
                [("vae", bundle.vae), ("text", bundle.text_encoders[0])]}
    seen, losses, samples = [], [], []

    def listen(event):
        if event.kind == "step":
            losses.append(event.data["loss"])
            now = {name: {p.untyped_storage().data_ptr() for p in m.parameters()} for name, m in
                   [("vae", bundle.vae), ("text", bundle.text_encoders[0])]}
            seen.append({name: (not (now[name] & original[name]), now[name] <= owner_ptrs()) for name in now})
        elif event.kind == "sample":
            samples.extend(image.tobytes() for image in event.data["images"])

    result = train(config, bundle=bundle, events=EventBus([listen]), **kwargs)
    del held
    return result, losses, samples, seen


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_parking_the_frozen_vae_and_text_encoders_changes_no_result_and_gives_the_owner_back_its_weights(make_config, family):
    """What the WebUI user gets on a GPU: VRAM freed during the run, the same LoRA, and a model
    that generates exactly as before. Parked weights are a real copy here (CPU to CPU)."""
    kohya = "sdxl" if family == "sdxl" else "sd1"
    sections = dict(network={"train_text_encoder": False}, train={"max_steps": 4},
                    sample={"every_steps": 2, "prompts": ["a photo"], "steps": 2})
    state, bundle = _live(family)
    plain = _run_recording(make_config(kohya, output={"name": "plain"}, **sections), bundle, state, offload=False)

    state, bundle = _live(family)
    before = {k: v.clone() for k, v in state.items()}
    bundle.storage_owners = list(state.values())
    parked = _run_recording(make_config(kohya, output={"name": "parked"}, **sections), bundle, state, offload=True)

    assert parked[0].status == "done"
    assert all(s == {"vae": (True, True), "text": (True, True)} for s in parked[3]), parked[3]  # moved, owner followed
    assert parked[1] == plain[1], "parking changed the losses"
    assert parked[2] == plain[2] and len(parked[2]) == 2, "parking changed the samples"
    assert all(torch.equal(v, before[k]) for k, v in state.items())
    owner = {t.untyped_storage().data_ptr() for t in state.values()}
    for module in [bundle.unet, bundle.vae] + bundle.text_encoders:
        assert {p.untyped_storage().data_ptr() for p in module.parameters()} <= owner, "a weight is no longer shared"
