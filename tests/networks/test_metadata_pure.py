"""Reading a LoRA's own metadata back: the test grid renders at the resolution it was trained at."""

import pytest

from lora_trainer.networks.metadata import training_resolution


@pytest.mark.parametrize("value, expected", [("(512, 512)", 512), ("(64, 64)", 64), ("768,1024", 768), ("[1024, 1024]", 1024)])
def test_training_resolution_from_kohya_metadata(value, expected):
    assert training_resolution({"ss_resolution": value}) == expected


def test_files_without_a_resolution_fall_back_to_the_default():
    assert training_resolution({}) == 512
    assert training_resolution({"ss_resolution": "unknown"}, default=1024) == 1024
