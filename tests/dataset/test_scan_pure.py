"""Finding images and captions in the layouts users bring."""

import os

import pytest

from lora_trainer.dataset.library import DatasetIndex
from lora_trainer.dataset.scan import caption_suffix, require_images, scan
from lora_trainer.errors import DatasetError

from .files import png


def names(entries):
    return [(e.folder, e.repeats, e.image.name, e.caption.name) for e in entries]


def test_kohya_folders_with_repeats(tmp_path):
    png(tmp_path / "10_mychar" / "b.png")
    png(tmp_path / "10_mychar" / "a.jpg")
    png(tmp_path / "2_style_name" / "c.webp")
    (tmp_path / "notes").mkdir()
    png(tmp_path / "notes" / "ignored.png")  # not a <repeats>_<name> folder
    entries = scan(tmp_path)
    assert names(entries) == [("10_mychar", 10, "a.jpg", "a.txt"), ("10_mychar", 10, "b.png", "b.txt"),
                              ("2_style_name", 2, "c.webp", "c.txt")]
    assert entries[2].class_token == "style name"


def test_flat_folder_is_one_concept_once_or_as_its_name_says(tmp_path):
    png(tmp_path / "flat" / "x.png")
    assert names(scan(tmp_path / "flat")) == [("1_flat", 1, "x.png", "x.txt")]
    png(tmp_path / "5_chosen" / "y.png")
    assert names(scan(tmp_path / "5_chosen")) == [("5_chosen", 5, "y.png", "y.txt")]


def test_caption_extension_setting(tmp_path):
    png(tmp_path / "1_a" / "x.png")
    assert scan(tmp_path, ".caption")[0].caption.name == "x.caption"
    assert scan(tmp_path, "cap")[0].caption.name == "x.cap"
    with pytest.raises(DatasetError, match="extension"):
        caption_suffix("")


def test_caption_files_with_other_extension_are_read(tmp_path):
    png(tmp_path / "1_a" / "x.png")
    (tmp_path / "1_a" / "x.caption").write_text("from caption file")
    (tmp_path / "1_a" / "x.txt").write_text("from txt")
    assert DatasetIndex.load(tmp_path, caption_extension=".caption").captions[0].text == "from caption file"


def test_recursion_and_regularization_folder(tmp_path):
    png(tmp_path / "data" / "3_a" / "top.png")
    png(tmp_path / "data" / "3_a" / "sub" / "deep.png")
    png(tmp_path / "reg" / "1_person" / "r.png")
    assert [e.image.name for e in scan(tmp_path / "data")] == ["top.png"]
    entries = scan(tmp_path / "data", recursive=True, reg_dir=tmp_path / "reg")
    assert [(e.image.name, e.is_reg) for e in entries] == [("top.png", False), ("deep.png", False), ("r.png", True)]


def test_symlink_loop_in_folders_terminates_and_is_reported(tmp_path):
    png(tmp_path / "1_a" / "x.png")
    os.symlink(tmp_path / "1_a", tmp_path / "1_a" / "again")
    result = scan(tmp_path, recursive=True)
    assert [e.image.name for e in result] == ["x.png"]
    assert any("symlink loop" in p for p in result.problems)


def test_dot_files_and_non_images_are_ignored(tmp_path):
    png(tmp_path / "1_a" / "x.PNG")
    png(tmp_path / "1_a" / ".hidden.png")
    (tmp_path / "1_a" / "x.txt").write_text("c")
    (tmp_path / "1_a" / "readme.md").write_text("c")
    assert [e.image.name for e in scan(tmp_path)] == ["x.PNG"]


def test_loose_images_beside_kohya_folders_are_reported(tmp_path):
    png(tmp_path / "1_a" / "x.png")
    png(tmp_path / "stray.png")
    result = scan(tmp_path)
    assert [e.image.name for e in result] == ["x.png"]
    assert any("stray.png" in p for p in result.problems)


def test_missing_folder_and_empty_dataset_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="10_mychar"):
        require_images(scan(tmp_path / "empty"))
