"""The caption store: nothing the user owns is lost or silently changed."""

import os

import pytest

from lora_trainer.dataset import tags as t
from lora_trainer.dataset.captions import CaptionStore
from lora_trainer.dataset.scan import scan


def make(tmp_path, captions):
    folder = tmp_path / "10_char"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in captions.items():
        (folder / f"{name}.png").write_bytes(b"\x89PNG not really")
        if data is not None:
            (folder / f"{name}.txt").write_bytes(data)
    return tmp_path, folder


def store(root, **kwargs):
    return CaptionStore(root, scan(root), **kwargs)


def test_only_changed_captions_are_written_keeping_bom_and_line_endings(tmp_path):
    root, folder = make(tmp_path, {
        "crlf": b"a, b\r\n", "bom": b"\xef\xbb\xbfa, c", "plain": b"x, y\n", "has": b"trig, a\n",
    })
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    mtime = os.stat(folder / "has.txt").st_mtime_ns
    s = store(root)
    report = s.apply("add trig", range(len(s.captions)), lambda tags: t.add_tag(tags, "trig", "front"))
    assert report.changed == 3 and report.unchanged == 1
    assert s.save().written and s.unsaved == 0
    assert (folder / "crlf.txt").read_bytes() == b"trig, a, b\r\n"
    assert (folder / "bom.txt").read_bytes() == b"\xef\xbb\xbftrig, a, c"
    assert (folder / "plain.txt").read_bytes() == b"trig, x, y\n"
    assert (folder / "has.txt").read_bytes() == before["has.txt"] and os.stat(folder / "has.txt").st_mtime_ns == mtime
    for name, data in before.items():
        if name.endswith(".png"):
            assert (folder / name).read_bytes() == data
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_non_utf8_caption_is_skipped_by_bulk_actions_and_backed_up_on_explicit_edit(tmp_path):
    root, folder = make(tmp_path, {"latin": "café, rouge".encode("latin-1"), "ok": b"a"})
    s = store(root)
    latin = next(i for i, c in enumerate(s.captions) if c.path.name == "latin.txt")
    assert not s.captions[latin].valid_utf8 and "\ufffd" in s.captions[latin].text
    report = s.apply("add x", range(2), lambda tags: t.add_tag(tags, "x"))
    assert report.changed == 1 and report.skipped_non_utf8 == ["latin.txt"]
    s.save()
    assert (folder / "latin.txt").read_bytes() == "café, rouge".encode("latin-1")
    s.set_text(latin, "café, rouge")
    s.save()
    assert (folder / "latin.txt").read_bytes() == "café, rouge".encode("utf-8")
    assert (folder / "latin.txt.bak").read_bytes() == "café, rouge".encode("latin-1")


def test_conflicting_change_on_disk_is_not_clobbered(tmp_path):
    root, folder = make(tmp_path, {"a": b"one", "b": b"two"})
    s = store(root)
    s.apply("add x", range(2), lambda tags: t.add_tag(tags, "x"))
    (folder / "a.txt").write_bytes(b"edited elsewhere")
    report = s.save()
    assert report.conflicts == [str(folder / "a.txt")]
    assert (folder / "a.txt").read_bytes() == b"edited elsewhere"
    assert (folder / "b.txt").read_bytes() == b"two, x"


def test_undo_redo_across_sessions_and_50_steps(tmp_path):
    root, folder = make(tmp_path, {"a": b"base"})
    s = store(root)
    for i in range(60):
        s.apply(f"add t{i}", [0], lambda tags, i=i: t.add_tag(tags, f"t{i}"))
    s.save()
    again = store(root)  # a new session reads the persisted history
    for _ in range(55):
        assert again.undo() is not None
    assert again.captions[0].text == "base, " + ", ".join(f"t{i}" for i in range(5))
    again.redo()
    again.save()
    assert (folder / "a.txt").read_bytes().decode() == "base, " + ", ".join(f"t{i}" for i in range(6))
    assert not any(p.is_file() for p in (root / "10_char").glob(".lora_trainer*"))


def test_missing_caption_is_created_and_backup_kept_when_asked(tmp_path):
    root, folder = make(tmp_path, {"new": None, "old": b"a"})
    s = store(root, backup=True)
    assert s.problems()["captions_missing"] == [str(folder / "new.txt")]
    s.apply("add x", range(2), lambda tags: t.add_tag(tags, "x"))
    s.save()
    assert (folder / "new.txt").read_bytes() == b"x"
    assert (folder / "old.txt.bak").read_bytes() == b"a"


def test_read_only_caption_reports_an_error_not_a_crash(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write read-only files")
    root, folder = make(tmp_path, {"a": b"x"})
    folder.chmod(0o555)
    try:
        s = store(root)
        s.apply("add y", [0], lambda tags: t.add_tag(tags, "y"))
        assert s.save().errors
    finally:
        folder.chmod(0o755)
