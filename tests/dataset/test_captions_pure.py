"""The caption store: nothing the user owns is lost or silently changed."""

import os

import pytest

from lora_trainer.dataset.captions import (CaptionConflict, atomic_write, encode_caption, read_caption,
                                           write_caption)
from lora_trainer.dataset.library import DatasetIndex
from lora_trainer.dataset.scan import STATE_FOLDER, scan
from lora_trainer.errors import DatasetError

from .files import png, snapshot


def make(tmp_path, captions, folder="10_char"):
    """Images (real PNGs) with the given caption bytes (None: no caption file)."""
    base = tmp_path / "data" / folder
    for index, (name, data) in enumerate(captions.items()):
        png(base / f"{name}.png", (16 + index, 16))
        if data is not None:
            (base / f"{name}.txt").write_bytes(data)
    return tmp_path / "data", base


def by_name(index, name):
    return next(i for i, e in enumerate(index.entries) if e.image.stem == name)


def test_reads_utf8_bom_crlf_and_reports_non_utf8(tmp_path):
    root, folder = make(tmp_path, {"bom": b"\xef\xbb\xbfa, b", "crlf": b"a, b\r\n", "latin": "café, x".encode("latin-1"),
                                   "empty": b"", "missing": None})
    index = DatasetIndex.load(root)
    assert index.captions[by_name(index, "bom")].text == "a, b"
    assert index.tags[by_name(index, "crlf")] == ["a", "b"]
    latin = index.captions[by_name(index, "latin")]
    assert latin.non_utf8 and "\ufffd" in latin.text
    assert [index.entries[i].image.stem for i in index.non_utf8_captions()] == ["latin"]
    assert [index.entries[i].image.stem for i in index.missing_captions()] == ["missing"]
    assert [index.entries[i].image.stem for i in index.empty_captions()] == ["empty"]
    # training falls back to the folder's class token for missing and empty captions
    assert index.training_caption(by_name(index, "missing")) == "char"
    assert index.training_caption(by_name(index, "empty")) == "char"


def test_bulk_add_writes_only_changed_captions_keeping_style(tmp_path):
    root, folder = make(tmp_path, {"crlf": b"a, b\r\n", "bom": b"\xef\xbb\xbfa, c", "plain": b"x, y\n",
                                   "has": b"trig,a\n", "multi": b"a, b\r\nsecond line\r\n"})
    before = snapshot(root)
    mtime = os.stat(folder / "has.txt").st_mtime_ns
    index = DatasetIndex.load(root)
    report = index.add("trig", "front")
    assert len(report.changed) == 4 and report.unchanged == 1
    assert (folder / "crlf.txt").read_bytes() == b"trig, a, b\r\n"
    assert (folder / "bom.txt").read_bytes() == b"\xef\xbb\xbftrig, a, c"
    assert (folder / "plain.txt").read_bytes() == b"trig, x, y\n"
    # already first: byte for byte untouched, not even rewritten
    assert (folder / "has.txt").read_bytes() == before["10_char/has.txt"]
    assert os.stat(folder / "has.txt").st_mtime_ns == mtime
    after = snapshot(root)
    for name, data in before.items():
        if name.endswith(".png"):
            assert after[name] == data
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # the index reflects the edit without a reload
    assert index.filter("trig") == list(range(len(index)))


def test_bulk_edit_creates_missing_captions_and_undo_removes_them(tmp_path):
    root, folder = make(tmp_path, {"a": b"x", "b": None})
    index = DatasetIndex.load(root)
    report = index.add("trig")
    assert report.created == [folder / "b.txt"] and (folder / "b.txt").read_bytes() == b"trig"
    index.undo()
    assert not (folder / "b.txt").exists() and (folder / "a.txt").read_bytes() == b"x"


def test_non_utf8_is_skipped_by_bulk_and_rewritten_only_by_explicit_edit_with_backup(tmp_path):
    original = "café, rouge".encode("latin-1")
    root, folder = make(tmp_path, {"latin": original, "ok": b"a"})
    index = DatasetIndex.load(root)
    report = index.add("z")
    assert report.skipped_non_utf8 == [folder / "latin.txt"]
    assert "not valid UTF-8" in report.summary()
    assert (folder / "latin.txt").read_bytes() == original
    latin = by_name(index, "latin")
    report = index.set_caption(latin, "café, rouge")
    assert report.changed == [folder / "latin.txt"]
    assert (folder / "latin.txt").read_bytes() == "café, rouge".encode("utf-8")
    backups = [p for p in (root / STATE_FOLDER / "backups").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in backups] == [original]
    # and the conversion can be undone, back to the original bytes
    index.undo()
    assert (folder / "latin.txt").read_bytes() == original


def test_conflict_on_disk_is_reported_not_clobbered(tmp_path):
    root, folder = make(tmp_path, {"a": b"one", "b": b"two"})
    index = DatasetIndex.load(root)
    (folder / "a.txt").write_bytes(b"edited elsewhere")
    report = index.add("new")
    assert report.conflicts == [folder / "a.txt"]
    assert (folder / "a.txt").read_bytes() == b"edited elsewhere"
    assert (folder / "b.txt").read_bytes() == b"two, new"
    assert "changed on disk" in report.summary()
    # after a refresh, the newer text is what the index shows and edits
    assert index.refresh() == [by_name(index, "a")]
    assert index.add("new").changed == [folder / "a.txt"]
    assert (folder / "a.txt").read_bytes() == b"edited elsewhere, new"


def test_touched_but_unchanged_file_is_not_a_conflict(tmp_path):
    root, folder = make(tmp_path, {"a": b"one"})
    index = DatasetIndex.load(root)
    os.utime(folder / "a.txt", ns=(1, 1))
    assert index.add("two").changed == [folder / "a.txt"]


def test_undo_is_persistent_and_stops_at_later_changes(tmp_path):
    root, folder = make(tmp_path, {"a": b"x, y\n", "b": b"y"})
    original = snapshot(root)
    DatasetIndex.load(root).add("first")
    DatasetIndex.load(root).remove("y")
    assert (folder / "a.txt").read_bytes() == b"x, first\n" and (folder / "b.txt").read_bytes() == b"first"
    # a new process (fresh load) undoes both steps, newest first
    report = DatasetIndex.load(root).undo()
    assert "remove" in report.action and (folder / "b.txt").read_bytes() == b"y, first"
    (folder / "a.txt").write_bytes(b"hand edit")  # changed after the step it would undo
    report = DatasetIndex.load(root).undo()
    assert report.conflicts == [folder / "a.txt"] and (folder / "a.txt").read_bytes() == b"hand edit"
    assert (folder / "b.txt").read_bytes() == original["10_char/b.txt"]
    with pytest.raises(DatasetError, match="nothing to undo"):
        DatasetIndex.load(root).undo()


def test_history_keeps_at_least_50_steps_and_drops_the_oldest(tmp_path):
    root, folder = make(tmp_path, {"a": b"start"})
    index = DatasetIndex.load(root, history_limit=60)
    for n in range(65):
        index.add(f"t{n}")
    assert len(index.history) == 60
    for _ in range(60):
        index.undo()
    assert (folder / "a.txt").read_bytes() == b"start, " + b", ".join(f"t{n}".encode() for n in range(5))


def test_filtered_edit_and_regex_replace(tmp_path):
    root, folder = make(tmp_path, {"a": b"1girl, red hair", "b": b"1boy, red hair", "c": b"1girl, blue hair"})
    index = DatasetIndex.load(root)
    index.add("girl only", indices=index.filter("1girl AND NOT blue hair"))
    assert (folder / "a.txt").read_bytes() == b"1girl, red hair, girl only"
    assert (folder / "b.txt").read_bytes() == b"1boy, red hair"
    index.replace(r"(\w+) hair", r"\1_hair", regex=True)
    assert (folder / "c.txt").read_bytes() == b"1girl, blue_hair"
    with pytest.raises(DatasetError, match="not valid"):
        index.replace("(unclosed", "x", regex=True)


def test_backup_option_keeps_previous_bytes(tmp_path):
    root, folder = make(tmp_path, {"a": b"old\n"})
    index = DatasetIndex.load(root, backup=True)
    index.add("new")
    backups = [p for p in (root / STATE_FOLDER / "backups").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in backups] == [b"old\n"]


def test_write_caption_refuses_non_utf8_and_conflicts(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xff\xfe bad")
    caption = read_caption(path)
    with pytest.raises(DatasetError, match="UTF-8"):
        write_caption(caption, "x")
    path.write_bytes(b"fine")
    good = read_caption(path)
    path.write_bytes(b"changed")
    with pytest.raises(CaptionConflict):
        write_caption(good, "mine")
    assert path.read_bytes() == b"changed"


def test_encode_keeps_style_and_atomic_write_leaves_no_temp(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    caption = read_caption(path)
    assert encode_caption(caption, "x\ny") == b"\xef\xbb\xbfx\r\ny\r\n"
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["c.txt"]


def test_scanning_ignores_the_state_folder(tmp_path):
    root, folder = make(tmp_path, {"a": b"x"})
    DatasetIndex.load(root).add("y")
    assert (root / STATE_FOLDER / "history").is_dir()
    assert [e.image.name for e in scan(root)] == ["a.png"]


def test_rewrite_keeps_file_permissions(tmp_path):
    root, folder = make(tmp_path, {"private": b"a", "shared": b"b"})
    os.chmod(folder / "private.txt", 0o600)
    os.chmod(folder / "shared.txt", 0o664)
    index = DatasetIndex.load(root)
    index.add("c")
    assert os.stat(folder / "private.txt").st_mode & 0o777 == 0o600
    assert os.stat(folder / "shared.txt").st_mode & 0o777 == 0o664
    index.undo()
    assert os.stat(folder / "private.txt").st_mode & 0o777 == 0o600


def test_sort_dedupe_move_and_normalize_through_the_index(tmp_path):
    root, folder = make(tmp_path, {"a": b"trig, b,  a, B, c", "b": b"c,a"})
    index = DatasetIndex.load(root)
    index.dedupe()
    assert (folder / "a.txt").read_bytes() == b"trig, b, a, c"
    assert (folder / "b.txt").read_bytes() == b"c,a"  # nothing to dedupe: byte for byte untouched
    index.sort(keep=1)
    assert (folder / "a.txt").read_bytes() == b"trig, a, b, c"
    index.move_to_front(["c"])
    assert (folder / "a.txt").read_bytes() == b"c, trig, a, b"
    index.normalize()
    assert (folder / "b.txt").read_bytes() == b"c, a"
    for _ in range(4):
        index.undo()
    assert (folder / "a.txt").read_bytes() == b"trig, b,  a, B, c" and (folder / "b.txt").read_bytes() == b"c,a"


def test_large_bulk_edit_uses_the_same_rules(tmp_path):
    # enough captions for the overlapped-write path; one conflict and one non-UTF-8 among them
    captions = {f"img{n:03d}": f"tag{n}, shared".encode() for n in range(150)}
    captions["img007"] = b"\xff bad"
    root, folder = make(tmp_path, captions)
    index = DatasetIndex.load(root)
    (folder / "img042.txt").write_bytes(b"changed meanwhile")
    report = index.remove("shared")
    assert len(report.changed) == 148 and report.conflicts == [folder / "img042.txt"]
    assert report.skipped_non_utf8 == [folder / "img007.txt"]
    assert (folder / "img001.txt").read_bytes() == b"tag1"
    assert (folder / "img042.txt").read_bytes() == b"changed meanwhile"
    report = index.undo()
    assert len(report.changed) == 148 and (folder / "img001.txt").read_bytes() == b"tag1, shared"


def test_symlinked_caption_is_edited_through_the_link(tmp_path):
    root, folder = make(tmp_path, {"a": None})
    shared = tmp_path / "shared.txt"
    shared.write_bytes(b"from elsewhere")
    (folder / "a.txt").symlink_to(shared)
    index = DatasetIndex.load(root)
    index.add("x")
    assert (folder / "a.txt").is_symlink() and shared.read_bytes() == b"from elsewhere, x"
    index.undo()
    assert (folder / "a.txt").is_symlink() and shared.read_bytes() == b"from elsewhere"


def test_overlapped_file_operations_keep_order_on_both_paths(tmp_path):
    from lora_trainer.dataset.library import in_parallel

    items = list(range(300))
    assert in_parallel(lambda n: n * 2, items, slow_s=float("inf")) == [n * 2 for n in items]  # this thread
    assert in_parallel(lambda n: n * 2, items, slow_s=0.0) == [n * 2 for n in items]  # threads after the probe


def test_file_operations_that_turn_slow_half_way_are_overlapped_from_then_on():
    """Storage busy writing back makes each write wait; that can start after the first batch."""
    import threading
    import time as clock

    from lora_trainer.dataset.library import in_parallel

    threads = {}

    def op(n):
        if n >= 128:
            clock.sleep(0.002)  # the disk got busy
        threads[n] = threading.get_ident()
        return n * 2

    items = list(range(512))
    assert in_parallel(op, items) == [n * 2 for n in items]
    assert {threads[n] for n in range(128)} == {threading.get_ident()}  # fast: in this thread
    assert len({threads[n] for n in range(192, 512)}) > 1  # slow: spread over threads


def test_no_edit_without_an_undo_record(tmp_path):
    root, folder = make(tmp_path, {"a": b"x"})
    (root / STATE_FOLDER).write_text("a file where the state folder should be")
    with pytest.raises(DatasetError, match="nothing was changed"):
        DatasetIndex.load(root).add("y")
    assert (folder / "a.txt").read_bytes() == b"x"


def test_redo_writes_again_what_undo_reverted_and_a_new_edit_ends_it(tmp_path):
    root, folder = make(tmp_path, {"a": b"x\n", "b": None})
    index = DatasetIndex.load(root)
    index.add("one")
    index.add("two")
    index.undo()
    index.undo()
    assert (folder / "a.txt").read_bytes() == b"x\n" and not (folder / "b.txt").exists()
    # a fresh process redoes in the order undone: "one" first, and recreates the file it had created
    report = DatasetIndex.load(root).redo()
    assert "one" in report.action and (folder / "a.txt").read_bytes() == b"x, one\n"
    assert (folder / "b.txt").read_bytes() == b"one"
    index = DatasetIndex.load(root)
    (folder / "b.txt").write_bytes(b"hand edit")  # changed after the undo it would redo
    report = index.redo()
    assert report.conflicts == [folder / "b.txt"] and (folder / "a.txt").read_bytes() == b"x, one, two\n"
    assert (folder / "b.txt").read_bytes() == b"hand edit"
    index.undo()  # a redone step can be undone again
    assert (folder / "a.txt").read_bytes() == b"x, one\n"
    DatasetIndex.load(root).add("three")  # a new edit: nothing left to redo
    with pytest.raises(DatasetError, match="nothing to redo"):
        DatasetIndex.load(root).redo()
