"""Our LoRA files: kohya names, the trained delta as A1111/ComfyUI compute it, exact round trips."""

import pytest
import torch

from lora_trainer.models.demo import random_modules
from lora_trainer.models.families import tiny_config
from lora_trainer.networks.adapters import ADAPTER, NetworkSpec, inject
from lora_trainer.networks.export import kohya_state_dict, save_lora
from lora_trainer.networks.kohya_names import kohya_name
from lora_trainer.networks.load import apply_kohya, read_kohya


def _components(family, seed=0):
    config = tiny_config(family)
    unet, _, encoders = random_modules(config, seed)
    return config, {"unet": unet, **{f"text_encoder_{i}": e for i, e in enumerate(encoders)}}


def _perturb(adapters, scale=0.05):
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for component in adapters.tuners:
            for param in adapters.parameters(component):
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def _a1111_delta(tensors, base_weight):
    """The weight change a consumer applies at multiplier 1, from the file alone.

    Written from the formulas A1111's Lora extension and ComfyUI use (network_lora/hada/lokr.py,
    `apply_weight_decompose`), independently of peft.
    """
    alpha = tensors.get("alpha")
    shape = base_weight.shape
    if "lora_down.weight" in tensors:
        down, up = tensors["lora_down.weight"].float(), tensors["lora_up.weight"].float()
        rank = down.shape[0]
        if down.dim() == 4:
            delta = (up.flatten(1) @ down.flatten(1)).reshape(shape)
        else:
            delta = up @ down
        scale = float(alpha) / rank if alpha is not None else 1.0
    elif "hada_w1_a" in tensors:
        w1 = tensors["hada_w1_a"].float() @ tensors["hada_w1_b"].float()
        w2 = tensors["hada_w2_a"].float() @ tensors["hada_w2_b"].float()
        delta = (w1 * w2).reshape(shape)
        scale = float(alpha) / tensors["hada_w1_b"].shape[0]
    else:
        w1 = tensors["lokr_w1"].float() if "lokr_w1" in tensors else tensors["lokr_w1_a"].float() @ tensors["lokr_w1_b"].float()
        w2 = tensors["lokr_w2"].float() if "lokr_w2" in tensors else tensors["lokr_w2_a"].float() @ tensors["lokr_w2_b"].float()
        if len(shape) == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
            w2 = w2.reshape(w2.shape[0], -1, *shape[2:]) if w2.dim() == 2 else w2
        delta = torch.kron(w1, w2).reshape(shape)
        dim = tensors["lokr_w2_b"].shape[0] if "lokr_w2_b" in tensors else tensors["lokr_w1_b"].shape[0] if "lokr_w1_b" in tensors else None
        scale = float(alpha) / dim if (dim and alpha is not None) else 1.0
    delta = delta * scale
    if "dora_scale" in tensors:
        merged = base_weight.float() + delta
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1)
        delta = merged * (tensors["dora_scale"].float() / norm) - base_weight.float()
    return delta


def _trained_delta(layer):
    """The change the trained layer applies to its base weight, measured through its forward."""
    base = layer.get_base_layer()
    weight = base.weight.float()
    if hasattr(layer, "dora"):
        merged = weight + layer.get_delta_weight(ADAPTER).float()
        scale = layer.dora.input_scale().detach()
        view = scale.view(1, -1, *[1] * (weight.dim() - 2))
        return merged * view - weight
    return layer.get_delta_weight(ADAPTER).float()


@pytest.mark.parametrize("network", ["lora", "locon", "loha", "lokr"])
@pytest.mark.parametrize("dora", [False, True])
def test_consumers_apply_exactly_the_trained_delta(network, dora):
    config, components = _components("sd1")
    adapters = inject(components, NetworkSpec(type=network, rank=4, alpha=2, conv_rank=2, conv_alpha=3, dora=dora))
    try:
        _perturb(adapters)
        tensors = kohya_state_dict(adapters, config, "fp32")
        checked = 0
        for component in adapters.tuners:
            for path, layer in adapters.layers(component):
                name = kohya_name(config, component, path)
                module_tensors = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
                expected = _trained_delta(layer).detach()
                got = _a1111_delta(module_tensors, layer.get_base_layer().weight.detach())
                assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6), f"{network} dora={dora} {name}"
                checked += 1
        assert checked > 200
    finally:
        adapters.remove()


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("network", ["lora", "locon", "loha", "lokr"])
def test_import_round_trips_exactly_and_reproduces_outputs(family, network, tmp_path):
    config, components = _components(family)
    adapters = inject(components, NetworkSpec(type=network, rank=4, alpha=2, conv_rank=2, conv_alpha=1, dora=(network == "lora")))
    unet = components["unet"]
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, config.unet["cross_attention_dim"])
    extra = {}
    if family == "sdxl":
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 48), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    try:
        _perturb(adapters)
        with torch.no_grad():
            trained = unet(latents, 10, context, **extra).sample
        tensors = kohya_state_dict(adapters, config, "fp32")
    finally:
        adapters.remove()
    path = save_lora(tmp_path / "x.safetensors", tensors, {"ss_output_name": "x"})
    loaded = apply_kohya(read_kohya(path), components, config)
    try:
        again = kohya_state_dict(loaded, config, "fp32")
        with torch.no_grad():
            reproduced = unet(latents, 10, context, **extra).sample
    finally:
        loaded.remove()
    assert set(again) == set(tensors)
    assert all(torch.equal(again[k], tensors[k]) for k in tensors)
    assert torch.allclose(reproduced, trained, atol=1e-6)


def test_alpha_other_than_rank_is_written_as_trained():
    config, components = _components("sd1")
    adapters = inject(components, NetworkSpec(type="locon", rank=8, alpha=3, conv_rank=4, conv_alpha=1))
    try:
        tensors = kohya_state_dict(adapters, config)
    finally:
        adapters.remove()
    alphas = {float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas == {3.0, 1.0}
    conv = [k for k in tensors if k.endswith("resnets_0_conv1.lora_down.weight")]
    assert conv and tensors[conv[0]].shape[0] == 4 and tensors[conv[0]].dim() == 4


@pytest.mark.parametrize(
    "family, expected",
    [
        ("sd1", ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
                 "lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"]),
        ("sd2", ["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", "lora_te_text_model_encoder_layers_1_mlp_fc1"]),
        ("sdxl", ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", "lora_unet_middle_block_1_proj_out",
                  "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_0_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                  "lora_te2_text_model_encoder_layers_1_self_attn_out_proj"]),
    ],
)
def test_module_names_are_kohyas(family, expected):
    config, components = _components(family)
    adapters = inject(components, NetworkSpec(type="lora", rank=2, alpha=1))
    try:
        names = {k.split(".")[0] for k in kohya_state_dict(adapters, config)}
    finally:
        adapters.remove()
    for name in expected:
        assert name in names, name
    unet_names = [n for n in names if n.startswith("lora_unet_")]
    if family == "sdxl":
        assert not any(n.startswith("lora_unet_down_blocks") for n in unet_names)
    else:
        assert not any(n.startswith("lora_unet_input_blocks") for n in unet_names)


def test_adapters_are_removed_and_the_model_is_unchanged():
    config, components = _components("sdxl")
    unet = components["unet"]
    modules_before = [id(m) for m in unet.modules()]
    weights_before = {k: v.clone() for k, v in unet.state_dict().items()}
    adapters = inject(components, NetworkSpec(type="locon", rank=2, alpha=1, dora=True))
    _perturb(adapters)
    adapters.remove()
    adapters.remove()  # idempotent
    assert [id(m) for m in unet.modules()] == modules_before
    assert unet.state_dict().keys() == weights_before.keys()
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in weights_before.items())
    assert not hasattr(unet, "peft_config")


def test_existing_file_is_never_overwritten_silently(tmp_path):
    from lora_trainer.errors import UserError

    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        save_lora(path, {"lora_unet_x.alpha": torch.tensor(1.0)}, {})
    assert path.read_bytes() == b"precious"
    assert list(tmp_path.iterdir()) == [path]


def test_hash_matches_a1111s_addnet_hash(tmp_path):
    import hashlib

    from safetensors import safe_open

    path = save_lora(tmp_path / "h.safetensors", {"lora_unet_a.alpha": torch.tensor(2.0), "lora_unet_a.lora_down.weight": torch.ones(2, 3)},
                     {"ss_output_name": "h"})
    blob = path.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["sshs_model_hash"] == hashlib.sha256(blob[8 + header:]).hexdigest()
