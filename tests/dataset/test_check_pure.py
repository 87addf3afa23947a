"""The dataset check: counts, problems, duplicates, token limits, and a fast second run."""

import time


from lora_trainer.dataset.buckets import BucketSettings
from lora_trainer.dataset.check import CACHE_NAME, check_dataset, format_report, image_facts
from lora_trainer.dataset.library import DatasetIndex
from lora_trainer.dataset.scan import STATE_FOLDER, scan

from .files import png


class WordTokenizer:
    """A real (if simple) tokenizer with transformers' call interface: one token per word or comma."""

    def __call__(self, text, add_special_tokens=False):
        texts = [text] if isinstance(text, str) else text
        ids = [[hash(w) % 1000 for w in t.replace(",", " , ").split()] for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


def build(tmp_path):
    root = tmp_path / "data"
    png(root / "10_char" / "a.png", (64, 32), (1, 2, 3))
    png(root / "10_char" / "b.png", (64, 32), (1, 2, 3))  # same bytes as a.png
    png(root / "10_char" / "c.png", (32, 64), (9, 9, 9))
    png(root / "2_bg" / "d.png", (48, 48), (5, 5, 5))
    (root / "2_bg" / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "10_char" / "a.txt").write_text("char, red hair, smile")
    (root / "10_char" / "b.txt").write_text("char, " + ", ".join(f"tag{n}" for n in range(60)))
    (root / "10_char" / "c.txt").write_text("")
    (root / "2_bg" / "d.txt").write_bytes("café".encode("latin-1"))
    return root


def test_report_contents(tmp_path):
    root = build(tmp_path)
    report = check_dataset(DatasetIndex.load(root), tokenizer=WordTokenizer(), buckets=BucketSettings((64, 64), 32, 128, 32))
    assert report.images == 5
    assert report.folders == {"10_char": {"repeats": 10, "images": 3, "regularization": False},
                              "2_bg": {"repeats": 2, "images": 2, "regularization": False}}
    assert report.captions_missing == ["2_bg/e.png"]
    assert report.captions_empty == ["10_char/c.png"]
    assert report.non_utf8 == ["2_bg/d.txt"]
    assert report.unreadable == ["2_bg/e.png"]
    assert report.duplicates == [["10_char/a.png", "10_char/b.png"]]
    assert report.resolutions == {"64x32": 2, "32x64": 1, "48x48": 1}
    assert report.tokens_over_75 == ["10_char/b.png"] and report.tokens_over_225 == []
    assert report.tag_frequency["char"] == 2 and report.tag_frequency["smile"] == 1
    assert sum(report.buckets.values()) == 10 + 10 + 10 + 2  # images times repeats
    text = format_report(report)
    assert "2_bg/e.png" in text or "e.png" in text
    # the dict-style reading other callers use
    assert report["captions_missing"] == report.get("captions_missing")


def test_second_check_uses_the_cache_and_sees_changes(tmp_path):
    root = build(tmp_path)
    index = DatasetIndex.load(root)
    first = image_facts(index)
    assert (root / STATE_FOLDER / CACHE_NAME).is_file()
    # replace a good image by a broken one: size/mtime change, so it is decoded again
    time.sleep(0.01)
    (root / "2_bg" / "d.png").write_bytes(b"not an image at all, longer than before")
    second = image_facts(DatasetIndex.load(root))
    assert first[3].problem is None and second[3].problem is not None
    # an unchanged dataset is answered from the cache without decoding
    third = image_facts(DatasetIndex.load(root))
    assert [f.problem for f in third] == [f.problem for f in second]


def test_the_legacy_call_form(tmp_path):
    root = build(tmp_path)
    report = check_dataset(root, scan(root))
    assert report["images"] == 5 and report["unreadable"] == ["2_bg/e.png"]
