"""Tokenizers without the hub, and captions turned into UNet conditioning as A1111/kohya do."""

import pytest
import torch

from lora_trainer.models.conditioning import encode_text, sdxl_time_ids, token_count, tokenize_chunks
from lora_trainer.models.demo import random_modules
from lora_trainer.models.families import tiny_config
from lora_trainer.models.tokenizers import load_clip_tokenizer, tokenizers_for

# Also run on Forge's pins: transformers 4.46 changes CLIP internals this layer depends on.
pytestmark = pytest.mark.both_profiles


def test_tokenizer_gives_the_real_clip_ids():
    tokenizer = load_clip_tokenizer("clip_l")
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("hello world")["input_ids"] == [49406, 3306, 1002, 49407]
    assert tokenizer.model_max_length == 77


def test_padding_per_text_encoder_kind():
    assert load_clip_tokenizer("clip_l").pad_token_id == 49407
    assert load_clip_tokenizer("open_clip").pad_token_id == 0
    ids = tokenize_chunks(load_clip_tokenizer("open_clip"), ["cat"])
    assert ids.shape == (1, 1, 77) and ids[0, 0, -1].item() == 0
    ids = tokenize_chunks(load_clip_tokenizer("clip_l"), ["cat"])
    assert ids[0, 0, -1].item() == 49407


def test_long_captions_are_chunked_by_75_tokens_up_to_225():
    tokenizer = load_clip_tokenizer("clip_l")
    caption = ", ".join(["red"] * 50)  # 99 tokens
    assert token_count(tokenizer, caption) == 99
    ids = tokenize_chunks(tokenizer, [caption, "short"])
    assert ids.shape == (2, 2, 77)
    assert ids[0, 1, 0].item() == 49406 and ids[0, 1, 25].item() == 49407  # BOS + 24 tokens + EOS
    assert ids[1, 1, :2].tolist() == [49406, 49407]  # a padding chunk for the short caption
    very_long = ", ".join(["red"] * 200)
    assert tokenize_chunks(tokenizer, [very_long]).shape == (1, 3, 77)


@pytest.fixture(scope="module")
def encoders():
    out = {}
    for family in ("sd1", "sd2", "sdxl"):
        config = tiny_config(family)
        _, _, tes = random_modules(config, seed=2)
        out[family] = (tes, tokenizers_for(config), config)
    return out


def test_conditioning_shapes_per_family(encoders):
    captions = ["a cat", ", ".join(["blue"] * 50)]
    tes, toks, _ = encoders["sd1"]
    assert encode_text(tes, toks, "sd1", captions).hidden_states.shape == (2, 154, 32)
    tes, toks, _ = encoders["sd2"]
    assert encode_text(tes, toks, "sd2", captions).hidden_states.shape == (2, 154, 48)
    tes, toks, config = encoders["sdxl"]
    cond = encode_text(tes, toks, "sdxl", captions)
    assert cond.hidden_states.shape == (2, 154, config.unet["cross_attention_dim"])
    assert cond.pooled.shape == (2, 48)
    assert sdxl_time_ids((1024, 768), (0, 0), (1024, 768)).tolist() == [1024, 768, 0, 0, 1024, 768]


def test_clip_skip_uses_an_earlier_layer_with_the_final_norm(encoders):
    tes, toks, _ = encoders["sd1"]
    plain = encode_text(tes, toks, "sd1", ["a cat"]).hidden_states
    skipped = encode_text(tes, toks, "sd1", ["a cat"], clip_skip=2).hidden_states
    assert not torch.allclose(plain, skipped)
    ids = tokenize_chunks(toks[0], ["a cat"])[:, 0]
    out = tes[0](ids, output_hidden_states=True)
    assert torch.allclose(skipped[0], tes[0].text_model.final_layer_norm(out.hidden_states[-2])[0])


def test_first_chunk_of_a_long_caption_equals_its_first_75_tokens(encoders):
    tes, toks, _ = encoders["sd1"]
    caption = ", ".join(f"tag{i}" for i in range(40))
    ids = toks[0](caption, add_special_tokens=False)["input_ids"]
    first = toks[0].decode(ids[:75])
    long = encode_text(tes, toks, "sd1", [caption]).hidden_states
    head = encode_text(tes, toks, "sd1", [first]).hidden_states
    assert long.shape[1] == 154
    assert torch.allclose(long[:, :77], head, atol=1e-5)


def test_gradients_reach_text_encoder_weights(encoders):
    tes, toks, _ = encoders["sdxl"]
    for te in tes:
        te.requires_grad_(True)
    try:
        cond = encode_text(tes, toks, "sdxl", ["a cat"])
        (cond.hidden_states.mean() + cond.pooled.mean()).backward()
        assert all(te.text_model.encoder.layers[0].mlp.fc1.weight.grad is not None for te in tes)
    finally:
        for te in tes:
            te.requires_grad_(False)
            te.zero_grad(set_to_none=True)
