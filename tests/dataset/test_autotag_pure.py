"""Auto-tag results joining captions: threshold, blacklist, and the four merge modes."""

import pytest

from lora_trainer.dataset.autotag import merge, parse_blacklist, select_tags
from lora_trainer.errors import DatasetError

SCORED = [("1girl", 0.99), ("long_hair", 0.7), ("rating:safe", 0.95), ("smile", 0.49), ("red hair", 0.5),
          ("Long_Hair", 0.6)]


def test_threshold_keeps_scores_at_or_over_it_most_probable_first_each_once():
    assert select_tags(SCORED, 0.5) == ["1girl", "rating:safe", "long_hair", "red hair"]
    assert select_tags(SCORED, 0.0, limit=2) == ["1girl", "rating:safe"]
    assert select_tags([("a woman standing, outdoors", 1.0)], 0.9) == ["a woman standing", "outdoors"]  # a BLIP caption
    with pytest.raises(DatasetError, match="between 0 and 1"):
        select_tags(SCORED, 1.5)


def test_blacklist_plain_wildcard_regex_and_underscores():
    blacklist = parse_blacklist("long hair, rating:*\n/^red\\b/")
    assert select_tags(SCORED, 0.0, blacklist) == ["1girl", "smile"]
    assert parse_blacklist("")("anything") is False
    assert parse_blacklist("red*")("red eyes") and not parse_blacklist("red*")("dark red eyes")
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        parse_blacklist("/(/")


def test_merge_modes_never_duplicate_and_keep_the_trigger_first():
    existing = ["trig", "hand tag", "smile"]
    new = ["smile", "solo", "outdoors"]
    assert merge(existing, new, "append") == ["trig", "hand tag", "smile", "solo", "outdoors"]
    assert merge(existing, new, "prepend", keep_first=["trig"]) == ["trig", "solo", "outdoors", "hand tag", "smile"]
    assert merge(existing, new, "prepend") == ["solo", "outdoors", "trig", "hand tag", "smile"]
    assert merge(existing, new, "fill_empty") == existing
    assert merge([], new + ["solo"], "fill_empty") == ["smile", "solo", "outdoors"]
    assert merge(existing, new, "overwrite", keep_first=["trig"]) == ["trig", "smile", "solo", "outdoors"]
    assert merge(existing, ["trig", "x"], "overwrite", keep_first=["trig"]) == ["trig", "x"]
    assert merge(existing, ["Smile"], "append") == existing  # case-insensitive: nothing new
    with pytest.raises(DatasetError, match="mode"):
        merge(existing, new, "replace")
