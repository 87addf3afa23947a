"""The hostile set: every troublesome file gets its documented outcome; no image is modified."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.dataset.check import check_dataset
from lora_trainer.dataset.images import ImageProblem, image_size, open_rgb
from lora_trainer.dataset.library import DatasetIndex

from .files import hostile_set, png, snapshot

REPO = Path(__file__).resolve().parents[2]
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def hostile(tmp_path):
    files = hostile_set(tmp_path / "data" / "3_host")
    return tmp_path / "data", files


@pytest.mark.parametrize("name, reason", [("truncated", "truncated"), ("zero", "not an image"),
                                          ("text", "not an image"), ("symlink_loop_file", "symlink loop")])
def test_unusable_files_raise_a_specific_problem(hostile, name, reason):
    root, files = hostile
    with pytest.raises(ImageProblem, match=reason) as info:
        open_rgb(files[name])
    assert files[name].name in str(info.value)


def test_truncated_jpeg_is_refused_even_if_pillow_is_told_to_load_truncated_images(hostile):
    from PIL import ImageFile

    root, files = hostile
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some other WebUI extensions set it
    try:
        with pytest.raises(ImageProblem, match="truncated"):
            open_rgb(files["truncated"])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and their setting is left as it was
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_modes_are_converted_to_rgb(hostile):
    root, files = hostile
    cmyk = open_rgb(files["cmyk"])
    assert cmyk.mode == "RGB" and cmyk.getpixel((5, 5)) == (255, 0, 0)  # C0 M255 Y255 K0 is red
    assert open_rgb(files["sixteen_bit"]).getpixel((3, 3)) == (128, 128, 128)  # 32768 / 65535
    palette = open_rgb(files["palette"])
    assert palette.getpixel((0, 0)) == (255, 255, 255)  # transparent index on white
    assert palette.getpixel((7, 7)) == (0, 0, 255)
    assert open_rgb(files["la"]).getpixel((0, 0)) == (255, 255, 255)
    assert open_rgb(files["rgba"], background=(0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)
    assert open_rgb(files["gif"]).getpixel((0, 0)) == (255, 0, 0)  # first frame
    assert open_rgb(files["tiny"]).size == (1, 1)
    assert open_rgb(files["unicode"]).size == (40, 40)
    assert open_rgb(files["bmp"]).getpixel((0, 0)) == (1, 2, 3)


def test_exif_orientation_is_applied(hostile):
    root, files = hostile
    image = open_rgb(files["exif"])
    assert image.size == (20, 60) and image_size(files["exif"]) == (20, 60)
    # the blue band stored on the left edge is at the top after a 90° clockwise turn
    r, g, b = image.getpixel((10, 2))
    assert b > 200 and r < 60


def test_decompression_bomb_refused_per_image(tmp_path):
    big = png(tmp_path / "big.png", (300, 300))
    with pytest.raises(ImageProblem, match="decompression bomb"):
        open_rgb(big, max_pixels=200 * 200)
    assert open_rgb(big).size == (300, 300)


def _without_root_powers():
    """The command prefix that makes permission bits count: as root, drop the capabilities
    that let root read a chmod 000 file; None where that is not possible here."""
    if not RUNNING_AS_ROOT:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def test_unreadable_chmod_000_file_is_reported_and_skipped(hostile):
    root, files = hostile
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
    command = prefix + [sys.executable, "-m", "lora_trainer", "tags", "stats", str(root), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "3_host/locked.png" in report["unreadable"]
    assert "permission denied" in report["unreadable_reasons"]["3_host/locked.png"]
    assert "3_host/cmyk.jpg" not in report["unreadable"]


def test_check_reports_each_bad_file_and_never_modifies_images(hostile):
    root, files = hostile
    before = snapshot(root)
    report = check_dataset(DatasetIndex.load(root))
    unreadable = set(report.unreadable)
    expected_bad = {"3_host/truncated.jpg", "3_host/zero.png", "3_host/text.png", "3_host/loop.png"}
    assert unreadable - {"3_host/locked.png"} == expected_bad  # locked.png: see the chmod 000 test
    assert "truncated" in report.unreadable_reasons["3_host/truncated.jpg"]
    assert report.images == len(files)
    assert report.folders == {"3_host": {"repeats": 3, "images": len(files), "regularization": False}}
    assert snapshot(root) == before


def test_bulk_edit_over_hostile_set_touches_no_image(hostile):
    root, files = hostile
    before = snapshot(root)
    report = DatasetIndex.load(root).add("trigger", "front")
    assert not report.failed
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.endswith(".txt")} == before
    assert after["3_host/ünï cødé  spaced ☃.txt"] == b"trigger"
