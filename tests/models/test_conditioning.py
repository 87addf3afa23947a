"""Captions -> UNet conditioning per family, checked against the text encoders called directly."""

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lora_trainer.models.conditioning import encode_text, sdxl_time_ids, token_count, tokenize_chunks
from lora_trainer.models.families import tiny_config
from lora_trainer.models.tokenizers import tokenizers_for

# Also on Forge's pins: transformers 4.46 changed CLIP internals (pooling, position ids) this relies on.
pytestmark = pytest.mark.both_profiles

ATOL = 1e-5


def build(family: str, seed: int = 0):
    """Random-weight text encoders of the tiny family config, as real transformers modules."""
    config = tiny_config(family)
    torch.manual_seed(seed)
    encoders = []
    for spec in config.text_encoders:
        cls = CLIPTextModelWithProjection if spec["with_projection"] else CLIPTextModel
        encoders.append(cls(CLIPTextConfig(**spec["config"])).eval().requires_grad_(False))
    return encoders, tokenizers_for(config), config


@pytest.fixture(scope="module")
def models():
    return {family: build(family) for family in ("sd1", "sd2", "sdxl")}


def caption_of(tokenizer, n: int) -> str:
    """A caption of exactly n distinct single-token words."""
    candidates = [w[:-4] for w, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
                  if 1000 <= i < 3000 and w.endswith("</w>") and w[:-4].isascii() and w[:-4].isalpha()]
    ids = tokenizer(candidates, add_special_tokens=False)["input_ids"]
    words = [w for w, i in zip(candidates, ids) if len(i) == 1][:n]
    caption = " ".join(words)
    assert token_count(tokenizer, caption) == n
    return caption


def direct(encoder, ids: torch.Tensor):
    return encoder(ids, output_hidden_states=True)


def test_shapes_per_family(models):
    long = caption_of(models["sd1"][1][0], 100)
    expected_width = {"sd1": 32, "sd2": 48, "sdxl": 32 + 48}
    for family, (encoders, tokenizers, config) in models.items():
        with torch.no_grad():
            short = encode_text(encoders, tokenizers, family, ["a cat", ""])
            mixed = encode_text(encoders, tokenizers, family, ["a cat", long])
        assert short.hidden_states.shape == (2, 77, expected_width[family]), family
        assert mixed.hidden_states.shape == (2, 154, expected_width[family]), family
        assert mixed.hidden_states.shape[-1] == config.unet["cross_attention_dim"]  # what the UNet accepts
        if family == "sdxl":
            assert short.pooled.shape == (2, 48) and mixed.pooled.shape == (2, 48)
            assert config.unet["projection_class_embeddings_input_dim"] == 48 + 6 * config.unet["addition_time_embed_dim"]
        else:
            assert short.pooled is None


def test_sd1_clip_skip_uses_an_earlier_layer_through_the_final_norm(models):
    encoders, tokenizers, _ = models["sd1"]
    ids = tokenize_chunks(tokenizers[0], ["a photo of a cat"])[:, 0]
    with torch.no_grad():
        out = direct(encoders[0], ids)
        plain = encode_text(encoders, tokenizers, "sd1", ["a photo of a cat"]).hidden_states
        skip2 = encode_text(encoders, tokenizers, "sd1", ["a photo of a cat"], clip_skip=2).hidden_states
        expected = encoders[0].text_model.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(plain, out.last_hidden_state, atol=ATOL)
    assert torch.allclose(skip2, expected, atol=ATOL)
    assert not torch.allclose(plain, skip2, atol=1e-2)
    with pytest.raises(ValueError, match="clip_skip"):
        encode_text(encoders, tokenizers, "sd1", ["a cat"], clip_skip=4)  # the tiny encoder has 3 layers


def test_sd2_uses_the_last_state_of_the_shortened_tower_and_ignores_clip_skip(models):
    encoders, tokenizers, config = models["sd2"]
    assert encoders[0].config.num_hidden_layers == 2  # 3 in the tiny original, last one dropped as in SD2
    ids = tokenize_chunks(tokenizers[0], ["a photo of a cat"])[:, 0]
    with torch.no_grad():
        expected = encoders[0](ids).last_hidden_state
        got = encode_text(encoders, tokenizers, "sd2", ["a photo of a cat"]).hidden_states
        skipped = encode_text(encoders, tokenizers, "sd2", ["a photo of a cat"], clip_skip=2).hidden_states
    assert torch.allclose(got, expected, atol=ATOL)
    assert torch.equal(got, skipped)  # A1111 ignores clip skip for SD2: train as it will infer


def test_sdxl_concatenates_penultimate_states_and_pools_text_encoder_2(models):
    encoders, tokenizers, _ = models["sdxl"]
    with torch.no_grad():
        cond = encode_text(encoders, tokenizers, "sdxl", ["a photo of a cat"])
        out1 = direct(encoders[0], tokenize_chunks(tokenizers[0], ["a photo of a cat"])[:, 0])
        out2 = direct(encoders[1], tokenize_chunks(tokenizers[1], ["a photo of a cat"])[:, 0])
    assert torch.allclose(cond.hidden_states[..., :32], out1.hidden_states[-2], atol=ATOL)
    assert torch.allclose(cond.hidden_states[..., 32:], out2.hidden_states[-2], atol=ATOL)
    assert not torch.allclose(cond.hidden_states[..., 32:], out2.last_hidden_state, atol=1e-2)  # no final norm
    assert torch.allclose(cond.pooled, out2.text_embeds, atol=ATOL)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_long_captions_are_encoded_in_75_token_chunks(models, family):
    encoders, tokenizers, _ = models[family]
    tokenizer = tokenizers[0]
    caption = caption_of(tokenizer, 100)
    words = caption.split(" ")
    head, tail = " ".join(words[:75]), " ".join(words[75:])
    with torch.no_grad():
        long = encode_text(encoders, tokenizers, family, [caption])
        first = encode_text(encoders, tokenizers, family, [head])
        second = encode_text(encoders, tokenizers, family, [tail])
    assert long.hidden_states.shape[1] == 154
    assert torch.allclose(long.hidden_states[:, :77], first.hidden_states, atol=ATOL)
    assert torch.allclose(long.hidden_states[:, 77:], second.hidden_states, atol=ATOL)
    if family == "sdxl":
        assert torch.allclose(long.pooled, first.pooled, atol=ATOL)  # pooled comes from the first chunk


def test_chunks_stop_at_225_tokens(models):
    encoders, tokenizers, _ = models["sd1"]
    caption = caption_of(tokenizers[0], 300)
    kept = " ".join(caption.split(" ")[:225])
    assert tokenize_chunks(tokenizers[0], [caption]).shape == (1, 3, 77)
    assert tokenize_chunks(tokenizers[0], [caption], max_chunks=1).shape == (1, 1, 77)
    with torch.no_grad():
        full = encode_text(encoders, tokenizers, "sd1", [caption]).hidden_states
        truncated = encode_text(encoders, tokenizers, "sd1", [kept]).hidden_states
    assert full.shape[1] == 231 and torch.allclose(full, truncated, atol=ATOL)


def test_short_caption_beside_a_long_one_gets_a_padding_chunk(models):
    encoders, tokenizers, _ = models["sd2"]
    long = caption_of(tokenizers[0], 80)
    ids = tokenize_chunks(tokenizers[0], ["a cat", long])
    assert ids.shape == (2, 2, 77)
    assert ids[0, 1].tolist() == [49406, 49407] + [0] * 75  # BOS, EOS, open_clip padding
    assert ids[1, 1, 0].item() == 49406 and ids[1, 1, 6:].tolist() == [49407] + [0] * 70  # BOS, 5 tokens, EOS, pad
    with torch.no_grad():
        batch = encode_text(encoders, tokenizers, "sd2", ["a cat", long]).hidden_states
        alone = encode_text(encoders, tokenizers, "sd2", ["a cat"]).hidden_states
    assert torch.allclose(batch[:1, :77], alone, atol=ATOL)  # the batch does not change a caption's encoding


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_gradients_reach_the_text_encoders(family):
    encoders, tokenizers, _ = build(family, seed=1)
    for encoder in encoders:
        encoder.train().requires_grad_(True)
    cond = encode_text(encoders, tokenizers, family, ["a cat", caption_of(tokenizers[0], 90)], clip_skip=2)
    loss = cond.hidden_states.square().mean() + (cond.pooled.square().mean() if cond.pooled is not None else 0)
    loss.backward()
    for encoder in encoders:
        grad = encoder.text_model.encoder.layers[0].self_attn.q_proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    if family == "sd1":  # clip skip 2 goes through the final layer norm, so it trains too
        assert encoders[0].text_model.final_layer_norm.weight.grad.abs().sum() > 0
    with torch.no_grad():
        frozen = encode_text(encoders, tokenizers, family, ["a cat"])
    assert not frozen.hidden_states.requires_grad


def test_wrong_number_of_text_encoders_is_refused(models):
    encoders, tokenizers, _ = models["sdxl"]
    with pytest.raises(ValueError, match="sdxl needs 2"):
        encode_text(encoders[:1], tokenizers[:1], "sdxl", ["a cat"])


def test_sdxl_time_ids():
    ids = sdxl_time_ids((1024, 768), (32, 0), (960, 704), dtype=torch.float16)
    assert ids.tolist() == [1024, 768, 32, 0, 960, 704] and ids.dtype == torch.float16
    batch = torch.stack([sdxl_time_ids((512, 512), (0, 0), (512, 512)), ids.float()])
    assert batch.shape == (2, 6)
    with pytest.raises(ValueError):
        sdxl_time_ids((1024,), (0, 0), (1024, 1024))
