"""Filter expressions over whole tags: AND / OR / NOT, parentheses, spaces without quotes."""

import pytest

from lora_trainer.dataset.tag_filter import compile_filter
from lora_trainer.dataset.tags import parse_tags, tag_key
from lora_trainer.errors import UserError

CAPTIONS = {
    "a": "1girl, red circle, simple background",
    "b": "1girl, red circle, white background",
    "c": "1girl, Red Circle, outdoors",
    "d": "1boy, red circles, outdoors",
    "e": r"poster \(object\), red circle",
}


def matching(expression):
    predicate = compile_filter(expression)
    return sorted(name for name, caption in CAPTIONS.items() if predicate(frozenset(tag_key(t) for t in parse_tags(caption))))


def test_the_issue_example():
    assert matching("red circle AND NOT (simple background OR white background)") == ["c", "e"]


def test_whole_tags_case_insensitive():
    assert matching("red circle") == ["a", "b", "c", "e"]  # not "red circles"
    assert matching("RED CIRCLES") == ["d"]


def test_precedence_and_not():
    assert matching("1boy OR 1girl AND outdoors") == ["c", "d"]  # AND binds tighter
    assert matching("(1boy OR 1girl) AND NOT outdoors") == ["a", "b"]
    assert matching("NOT NOT outdoors") == ["c", "d"]


def test_escaped_and_quoted_brackets_in_tags():
    assert matching(r"poster \(object\)") == ["e"]
    assert matching('"poster (object)" AND red circle') == ["e"]


def test_operator_words_inside_tags_are_text():
    predicate = compile_filter("ANDROID OR NOTE")
    assert predicate(frozenset({"android"})) and predicate(frozenset({"note"}))
    assert compile_filter("black and white")(frozenset({"black and white"}))  # lower-case words are tag text


def test_empty_matches_all_and_errors_are_clear():
    assert matching("") == sorted(CAPTIONS)
    for bad, words in [("(a OR b", "not closed"), ("a AND", "ends"), ("a b)", "unexpected"), ('"a', "quote")]:
        with pytest.raises(UserError, match=words):
            compile_filter(bad)
