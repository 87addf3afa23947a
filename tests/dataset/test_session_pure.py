"""The tag editor's edit session: edits stay in memory, undo/redo span the dataset, Save writes
only what changed, atomically, and never over a file changed on disk meanwhile."""

import os

import pytest

from lora_trainer.dataset.library import DatasetIndex
from lora_trainer.dataset.scan import STATE_FOLDER
from lora_trainer.dataset.session import EditSession
from lora_trainer.errors import DatasetError

from .files import png, snapshot


def make(tmp_path, captions, folder="10_char"):
    base = tmp_path / "data" / folder
    for index, (name, data) in enumerate(captions.items()):
        png(base / f"{name}.png", (16 + index, 16))
        if data is not None:
            (base / f"{name}.txt").write_bytes(data)
    return tmp_path / "data", base


def at(session, name):
    return next(i for i, e in enumerate(session.index.entries) if e.image.stem == name)


def captions_on_disk(root):
    return {k: v for k, v in snapshot(root).items() if k.endswith(".txt")}


def test_edits_stay_in_memory_until_save_which_writes_only_changed_files(tmp_path):
    root, folder = make(tmp_path, {"a": b"1girl, red hair\n", "b": b"1boy,red hair", "c": b"1girl, blue hair"})
    before = captions_on_disk(root)
    untouched_mtime = os.stat(folder / "b.txt").st_mtime_ns
    session = EditSession.open(root)
    shown = session.filter("1girl")
    report = session.add("smile", "back", indices=shown)
    assert len(report.changed) == 2 and "2 caption(s) changed" in report.summary()
    assert captions_on_disk(root) == before  # nothing written yet
    assert session.unsaved == 2 and session.text(at(session, "a")) == "1girl, red hair, smile"
    assert session.filter("smile") == shown  # the working tags are what filters see
    assert session.frequency()["smile"] == 2 and session.frequency(shown)["1girl"] == 2

    saved = session.save()
    assert sorted(p.name for p in saved.changed) == ["a.txt", "c.txt"] and session.unsaved == 0
    assert (folder / "a.txt").read_bytes() == b"1girl, red hair, smile\n"  # the file's final newline kept
    assert (folder / "c.txt").read_bytes() == b"1girl, blue hair, smile"
    assert (folder / "b.txt").read_bytes() == before["10_char/b.txt"]
    assert os.stat(folder / "b.txt").st_mtime_ns == untouched_mtime  # not even rewritten
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_undo_redo_across_the_dataset_and_back_to_the_exact_original_bytes(tmp_path):
    root, folder = make(tmp_path, {"a": b"x,  y", "b": b"y"})
    session = EditSession.open(root)
    session.add("trig", "front")
    session.remove("y")
    assert session.undo_label() == "remove 'y' (2 captions)"
    assert [session.text(i) for i in range(2)] == ["trig, x", "trig"]
    session.undo()
    assert [session.text(i) for i in range(2)] == ["trig, x, y", "trig, y"] and session.redo_label().startswith("remove")
    session.undo()
    # back where the files are: nothing unsaved, and the odd spacing of a.txt is not "fixed"
    assert session.unsaved == 0 and session.text(at(session, "a")) == "x,  y" and not session.can_undo
    assert session.save().changed == []
    session.redo()
    session.redo()
    assert [session.text(i) for i in range(2)] == ["trig, x", "trig"]
    with pytest.raises(DatasetError, match="nothing to redo"):
        session.redo()
    # a new edit after an undo drops the redo steps
    session.undo()
    session.add("z", indices=[0])
    assert not session.can_redo
    with pytest.raises(DatasetError, match="nothing to undo"):
        EditSession.open(root).undo()


def test_undo_after_save_makes_the_caption_unsaved_again(tmp_path):
    root, folder = make(tmp_path, {"a": b"x"})
    session = EditSession.open(root)
    session.add("y")
    session.save()
    assert (folder / "a.txt").read_bytes() == b"x, y" and session.unsaved == 0
    session.undo()
    assert session.unsaved == 1 and session.text(0) == "x"
    session.save()
    assert (folder / "a.txt").read_bytes() == b"x"
    # each save is a step of the dataset's own history: the CLI can undo it
    DatasetIndex.load(root).undo()
    assert (folder / "a.txt").read_bytes() == b"x, y"


def test_conflicts_are_listed_never_clobbered_and_resolved_by_choice(tmp_path):
    root, folder = make(tmp_path, {"a": b"one", "b": b"two", "c": b"three"})
    session = EditSession.open(root)
    session.add("new")
    (folder / "a.txt").write_bytes(b"edited elsewhere")
    report = session.save()
    assert report.conflicts == [folder / "a.txt"] and "changed on disk" in report.summary()
    assert (folder / "a.txt").read_bytes() == b"edited elsewhere"
    assert (folder / "b.txt").read_bytes() == b"two, new"
    assert session.conflicts == {at(session, "a")} and session.unsaved == 1  # my edit is kept, unsaved

    taken = session.resolve_conflicts("disk")
    assert len(taken.changed) == 1 and session.text(at(session, "a")) == "edited elsewhere" and session.unsaved == 0
    session.undo()  # changed my mind: my edit is back (against the new file)
    assert session.text(at(session, "a")) == "one, new" and session.unsaved == 1

    (folder / "a.txt").write_bytes(b"edited again")
    assert session.save().conflicts == [folder / "a.txt"]
    mine = session.resolve_conflicts("mine", backup=True)
    assert mine.changed == [folder / "a.txt"] and (folder / "a.txt").read_bytes() == b"one, new"
    assert not session.conflicts and session.unsaved == 0
    backups = [p.read_bytes() for p in (root / STATE_FOLDER / "backups").rglob("*") if p.is_file()]
    assert b"edited again" in backups


def test_refresh_shows_outside_changes_of_saved_captions_and_flags_unsaved_ones(tmp_path):
    root, folder = make(tmp_path, {"a": b"x", "b": b"y"})
    session = EditSession.open(root)
    session.add("mine", indices=[at(session, "b")])
    (folder / "a.txt").write_bytes(b"x, from a tagger")
    (folder / "b.txt").write_bytes(b"y, also changed")
    reread, conflicts = session.refresh()
    assert reread == [at(session, "a")] and conflicts == [at(session, "b")]
    assert session.text(at(session, "a")) == "x, from a tagger" and session.filter("from a tagger") == [at(session, "a")]
    assert session.text(at(session, "b")) == "y, mine" and session.unsaved == 1


def test_bad_captions_are_skipped_by_batch_edits_and_never_rewritten_silently(tmp_path):
    latin = "café, rouge".encode("latin-1")
    root, folder = make(tmp_path, {"latin": latin, "ok": b"a", "odd": None})
    (folder / "odd.txt").mkdir()  # a caption that cannot be read (a folder where the file should be)
    session = EditSession.open(root)
    report = session.add("z")
    assert report.skipped_non_utf8 == [folder / "latin.txt"] and len(report.skipped_unreadable) == 1
    assert "not valid UTF-8" in report.summary() and "cannot be read" in report.summary()
    session.save()
    assert (folder / "latin.txt").read_bytes() == latin and (folder / "odd.txt").is_dir()
    with pytest.raises(DatasetError, match="is a folder"):
        session.set_text(at(session, "odd"), "overwrite")
    # an explicit edit of the non-UTF-8 caption converts it, even with the same text, and backs it up
    i = at(session, "latin")
    session.set_text(i, session.text(i))
    assert session.unsaved == 1
    session.save()
    assert (folder / "latin.txt").read_bytes() == "caf\ufffd, rouge".encode("utf-8")
    backups = [p.read_bytes() for p in (root / STATE_FOLDER / "backups").rglob("*") if p.is_file()]
    assert backups == [latin]


def test_per_image_tag_edits_and_raw_text_are_steps(tmp_path):
    root, folder = make(tmp_path, {"a": b"a, b, c\r\n"})
    session = EditSession.open(root)
    session.set_tags(0, ["c", "a", "b"], "move 'c' up")
    session.set_text(0, "c, a, b, d")
    assert session.tags[0] == ["c", "a", "b", "d"]
    session.undo()
    assert session.text(0) == "c, a, b"
    session.set_tags(0, ["a", "b", "c"])  # the file's tags again: clean, the file's own text
    assert session.unsaved == 0 and session.text(0) == "a, b, c"
    session.set_text(0, "a, b, c, e")
    session.save()
    assert (folder / "a.txt").read_bytes() == b"a, b, c, e\r\n"  # CRLF style kept
    # a text that would write the same bytes is not a change
    session.set_text(0, "a, b, c, e")
    assert session.unsaved == 0


def test_missing_caption_is_created_only_when_given_tags(tmp_path):
    root, folder = make(tmp_path, {"a": None, "b": b"x"})
    session = EditSession.open(root)
    session.add("trig", "front")
    session.remove("trig", indices=[at(session, "a")])
    assert session.unsaved == 1
    report = session.save()
    assert report.changed == [folder / "b.txt"] and not (folder / "a.txt").exists()
    assert session.untagged() == [at(session, "a")]


def test_sort_dedupe_replace_move_on_the_chosen_images_only(tmp_path):
    root, folder = make(tmp_path, {"a": b"trig, b, a, B, red hair", "b": b"trig, z, y"})
    session = EditSession.open(root)
    a, b = at(session, "a"), at(session, "b")
    assert len(session.dedupe([a]).changed) == 1 and session.tags[a] == ["trig", "b", "a", "red hair"]
    session.sort(keep=1, indices=[a])
    assert session.tags[a] == ["trig", "a", "b", "red hair"] and session.tags[b] == ["trig", "z", "y"]
    session.replace(r"(\w+) hair", r"\1_hair", regex=True)
    assert session.tags[a][-1] == "red_hair"
    session.move_to_front(["b"], indices=[a])
    assert session.tags[a][0] == "b"
    with pytest.raises(DatasetError, match="not valid"):
        session.replace("(unclosed", "x", regex=True)
    with pytest.raises(DatasetError, match="empty"):
        session.add(" , ")


def test_trigger_word_add_to_all_is_idempotent(tmp_path):
    root, folder = make(tmp_path, {"a": b"x, trig", "b": b"trig, y", "c": None})
    session = EditSession.open(root)
    first = session.add("trig", "front")
    assert len(first.changed) == 2 and [session.tags[i][0] for i in range(3)] == ["trig"] * 3
    again = session.add("trig", "front")
    assert again.changed == [] and again.unchanged == 3


def test_auto_tag_merge_modes_through_the_session(tmp_path):
    root, folder = make(tmp_path, {"a": b"trig, hand tag", "b": b"", "c": b"keep"})
    session = EditSession.open(root)
    a, b, c = at(session, "a"), at(session, "b"), at(session, "c")
    report = session.merge_tags({a: ["smile", "hand tag"], b: ["cat"], c: ["dog"]}, "fill_empty", "auto-tag")
    assert len(report.changed) == 1 and session.tags[b] == ["cat"] and session.tags[c] == ["keep"]
    session.merge_tags({a: ["smile"]}, "prepend", "auto-tag", keep_first=["trig"])
    assert session.tags[a] == ["trig", "smile", "hand tag"]
    session.merge_tags({a: ["solo"]}, "overwrite", "auto-tag", keep_first=["trig"])
    assert session.tags[a] == ["trig", "solo"]
    session.undo()
    session.undo()
    session.undo()
    assert session.unsaved == 0


def test_history_is_bounded(tmp_path):
    root, folder = make(tmp_path, {"a": b"x"})
    session = EditSession(DatasetIndex.load(root), max_steps=5)
    for n in range(8):
        session.add(f"t{n}")
    undone = 0
    while session.can_undo:
        session.undo()
        undone += 1
    assert undone == 5 and session.text(0) == "x, t0, t1, t2"
