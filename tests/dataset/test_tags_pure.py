"""Tag operations and filter expressions on caption text (pure functions)."""

import pytest

from lora_trainer.dataset import tags as t
from lora_trainer.dataset.tag_filter import compile_filter
from lora_trainer.errors import UserError


def keys(caption):
    return frozenset(t.tag_key(x) for x in t.parse_tags(caption))


def test_parse_keeps_escapes_weights_and_bracketed_commas():
    caption = r"1girl,  long   hair, (smile:1.2), [red, blue], artist \(name\), , {a, b}"
    assert t.parse_tags(caption) == ["1girl", "long hair", "(smile:1.2)", "[red, blue]", r"artist \(name\)", "{a, b}"]
    assert t.join_tags(t.parse_tags(caption)) == r"1girl, long hair, (smile:1.2), [red, blue], artist \(name\), {a, b}"


def test_add_remove_replace_move_sort_dedupe():
    tags = ["a", "B", "c", "b"]
    assert t.dedupe(tags) == ["a", "B", "c"]
    assert t.add_tag(["a", "b"], "c") == ["a", "b", "c"]
    assert t.add_tag(["a", "b"], "B") == ["a", "b"]  # already there (case-insensitive)
    assert t.add_tag(["a", "b", "trig"], "trig", "front") == ["trig", "a", "b"]  # idempotent trigger
    assert t.add_tag(["a", "b"], "x", 1) == ["a", "x", "b"]
    assert t.remove_tag(["red hair", "Red  Hair", "hat"], "red hair") == ["hat"]
    assert t.replace_tag(["red hair", "hat", "red"], "red", "blue") == ["red hair", "hat", "blue"]  # whole tags only
    assert t.replace_tag(["red hair", "red eyes"], r"red (\w+)", r"blue \1", regex=True) == ["blue hair", "blue eyes"]
    assert t.replace_tag(["red hair"], "red", "blue", whole=False) == ["blue hair"]
    assert t.replace_tag(["a", "b"], "a", "") == ["b"]  # replacing with nothing removes
    assert t.move_to_front(["a", "b", "c"], ["c"]) == ["c", "a", "b"]
    assert t.sort_tags(["trig", "zeta", "alpha"], keep=1) == ["trig", "alpha", "zeta"]
    assert t.sort_tags(["x", "rare", "common"], frequency={"common": 9, "rare": 1, "x": 5}) == ["common", "x", "rare"]


def test_frequency_counts_each_caption_once():
    counts = t.frequency([["a", "A", "b"], ["a"]])
    assert counts == {"a": 2, "b": 1}


@pytest.mark.parametrize(
    "expression, caption, expected",
    [
        ("red circle AND NOT (simple background OR white background)", "Red Circle, blue sky", True),
        ("red circle AND NOT (simple background OR white background)", "red circle, white background", False),
        ("red circle AND NOT (simple background OR white background)", "blue circle", False),
        ("a OR b AND c", "a", True),  # AND binds tighter
        ("(a OR b) AND c", "a", False),
        ("NOT NOT a", "a", True),
        ("black and white", "black and white, x", True),  # lower-case words are part of the tag
        (r"pokemon \(creature\)", r"pokemon \(creature\), x", True),
        ("red", "red hair", False),  # whole tags only
        ("", "anything", True),
    ],
)
def test_filter_expressions(expression, caption, expected):
    assert compile_filter(expression)(keys(caption)) is expected


@pytest.mark.parametrize("expression", ["a AND", "(a OR b", "a) OR b", "AND a", "NOT"])
def test_bad_filters_say_what_is_wrong(expression):
    with pytest.raises(UserError, match="filter"):
        compile_filter(expression)
