"""Token counting with the model's (CLIP) tokenizer, and the check's 75 / 225 limits."""

import pytest

from lora_trainer.dataset.check import check_dataset
from lora_trainer.dataset.library import DatasetIndex
from lora_trainer.dataset.tags import token_count, token_counts

from .files import png


@pytest.fixture(scope="module")
def tokenizer():
    from lora_trainer.models.families import CLIP_L
    from lora_trainer.models.tokenizers import load_clip_tokenizer

    return load_clip_tokenizer(CLIP_L)


def test_token_count_excludes_bos_eos(tokenizer):
    assert token_count(tokenizer, "") == 0
    assert token_count(tokenizer, "cat") == 1
    assert token_count(tokenizer, "cat, dog") == 3  # comma is a token
    assert token_counts(tokenizer, ["cat", "cat, dog"]) == [1, 3]


def test_check_flags_long_captions(tmp_path, tokenizer):
    root = tmp_path / "data"
    for name, words in (("short", 5), ("long", 100), ("huge", 300)):
        png(root / "1_x" / f"{name}.png")
        (root / "1_x" / f"{name}.txt").write_text(", ".join(["cat"] * (words // 2)))
    report = check_dataset(DatasetIndex.load(root), tokenizer=tokenizer)
    assert sorted(report.tokens_over_75) == ["1_x/huge.png", "1_x/long.png"]
    assert report.tokens_over_225 == ["1_x/huge.png"]
