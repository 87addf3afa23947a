"""Tag operations on caption text: what a user sees change (and what must not)."""

import random

import pytest

from lora_trainer.dataset import tags as T
from lora_trainer.dataset.training_captions import CaptionAugment, fallback_caption, training_caption


def test_parse_keeps_escapes_weights_and_inner_commas():
    caption = r"1girl,  poster \(object\) , (red, blue:1.2), ((masterpiece)),  long   hair,,"
    assert T.parse_tags(caption) == ["1girl", r"poster \(object\)", "(red, blue:1.2)", "((masterpiece))", "long hair"]


def test_parse_leaves_emoticon_tags_literal():
    # an unmatched "(" in `:(` must not swallow the rest of the caption
    assert T.parse_tags(":(, smile, >_<, ^_^, red hair") == [":(", "smile", ">_<", "^_^", "red hair"]
    assert T.parse_tags("hat:(, b, c") == ["hat:(", "b", "c"]


def test_parse_empty_and_whitespace_only():
    assert T.parse_tags("") == []
    assert T.parse_tags("  ,\n, \t ") == []
    assert T.normalize_caption("a ,b,\n c  d") == "a, b, c d"


def test_tag_key_ignores_case_spacing_and_bracket_escapes():
    assert T.tag_key("  Red   Hair ") == "red hair"
    assert T.tag_key(r"Poster \(Object\)") == T.tag_key("poster (object)")


def test_dedupe_keeps_first_spelling():
    assert T.dedupe(["Red Hair", "a", "red hair", "A", "b"]) == ["Red Hair", "a", "b"]


def test_add_front_back_position_and_existing():
    tags = ["a", "b", "c"]
    assert T.add_tag(tags, "x", "front") == ["x", "a", "b", "c"]
    assert T.add_tag(tags, "x") == ["a", "b", "c", "x"]
    assert T.add_tag(tags, "x", 1) == ["a", "x", "b", "c"]
    assert T.add_tag(tags, "B") == tags  # already there: unchanged
    assert T.add_tag(tags, "C", "front") == ["c", "a", "b"]  # moved first, user's spelling kept
    assert T.add_tag(tags, "A", "front") == tags
    assert T.add_tag(tags, "  ") == tags
    assert tags == ["a", "b", "c"]  # inputs are never modified


def test_remove_whole_tags_only():
    assert T.remove_tag(["red", "red hair", "RED"], "red") == ["red hair"]


def test_replace_plain_whole_tags_only_by_default():
    tags = ["red", "red hair", "blue"]
    assert T.replace_tag(tags, "red", "crimson") == ["crimson", "red hair", "blue"]
    assert T.replace_tag(tags, "red", "crimson", whole=False) == ["crimson", "crimson hair", "blue"]
    assert T.replace_tag(tags, "green", "x") == tags


def test_replace_regex_groups_and_removal_and_duplicates():
    tags = ["red hair", "blue hair", "blue eyes"]
    assert T.replace_tag(tags, r"(\w+) hair", r"\1 long hair", regex=True) == ["red long hair", "blue long hair", "blue eyes"]
    assert T.replace_tag(tags, r".* hair", "", regex=True) == ["blue eyes"]
    # replacing with a tag already present does not duplicate it
    assert T.replace_tag(["a", "b"], "a", "b") == ["b"]
    # several tags in the replacement
    assert T.replace_tag(["a", "z"], "a", "b, c") == ["b", "c", "z"]


def test_replace_keeps_existing_duplicates_when_nothing_matches():
    # an edit that does nothing must leave the caption (duplicates included) as it was
    tags = ["a", "a", "b"]
    assert T.replace_tag(tags, "zzz", "y") == tags


def test_move_to_front_and_sort():
    tags = ["c", "b", "trigger", "a"]
    assert T.move_to_front(tags, ["trigger"]) == ["trigger", "c", "b", "a"]
    assert T.sort_tags(["trigger", "c", "a", "b"], keep=1) == ["trigger", "a", "b", "c"]
    freq = {"a": 1, "b": 5, "c": 3}
    assert T.sort_tags(["a", "b", "c"], frequency=freq) == ["b", "c", "a"]


def test_frequency_counts_captions_not_repeats():
    counts = T.frequency([["a", "b", "A"], ["a"], ["c"]])
    assert counts == {"a": 2, "b": 1, "c": 1}


def test_training_caption_keep_tokens_shuffle_dropout():
    caption = "trigger, style, a, b, c, d, e, f"
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        out = T.parse_tags(training_caption(caption, CaptionAugment(keep_tokens=2, shuffle=True), rng))
        assert out[:2] == ["trigger", "style"]
        assert sorted(out[2:]) == ["a", "b", "c", "d", "e", "f"]
        seen.add(tuple(out))
    assert len(seen) > 10  # really shuffled

    dropped = [training_caption(caption, CaptionAugment(keep_tokens=1, tag_dropout=0.5), random.Random(i)) for i in range(200)]
    assert all(d.startswith("trigger") for d in dropped)
    mean = sum(len(T.parse_tags(d)) - 1 for d in dropped) / len(dropped)
    assert 2.5 < mean < 4.5  # about half of the 7 droppable tags

    empties = sum(training_caption(caption, CaptionAugment(caption_dropout=0.3), random.Random(i)) == "" for i in range(1000))
    assert 230 < empties < 370


def test_training_caption_rejects_bad_rates_and_falls_back_to_class_token():
    with pytest.raises(ValueError):
        CaptionAugment(tag_dropout=1.5)
    assert fallback_caption("", "mychar") == "mychar"
    assert fallback_caption(None, "mychar") == "mychar"
    assert fallback_caption("a, b", "mychar") == "a, b"


def test_tag_keys_is_the_set_of_normalized_keys():
    from lora_trainer.dataset.tags import normalized_key, parse_tags, tag_keys

    for caption in ("Red Hair, smile, SMILE", r"poster \(object\), (masterpiece:1.2), a", "", "single"):
        tags = parse_tags(caption)
        assert tag_keys(tags) == frozenset(map(normalized_key, tags))
