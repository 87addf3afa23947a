"""The tag editor's handlers called directly on real image and caption files.

Each test drives the controller as the page does (a fresh `View` per browser tab) and checks
what a person would notice: what the gallery and tag list show, the messages, the unsaved
banner, and the bytes of the caption files on disk.
"""

import threading
import time
from pathlib import Path

import pytest

from lora_trainer.host.standalone import StandaloneHost
from lora_trainer.ui.tag_editor_controller import TagEditorController, View

from dataset.files import png, snapshot  # tests/ is on sys.path (rootdir-relative packages)

pytestmark = pytest.mark.both_profiles


def dataset(root: Path, captions: dict, folder: str = "10_char") -> Path:
    """Real PNGs with the given caption bytes (None: no caption file)."""
    base = root / "data" / folder
    for n, (name, data) in enumerate(captions.items()):
        png(base / f"{name}.png", (40 + n, 30), (n * 9 % 256, 80, 160))
        if data is not None:
            (base / f"{name}.txt").write_bytes(data)
    return root / "data"


def name_of(controller, index):
    return controller.session.index.entries[index].image.stem


@pytest.fixture
def controller():
    return TagEditorController(StandaloneHost())


def test_open_shows_one_page_of_lazily_made_thumbnails(tmp_path, controller):
    root = dataset(tmp_path, {f"img{n:02d}": f"tag{n % 3}, common".encode() for n in range(30)})
    screen = controller.open(View(page_size=12), str(root))
    assert "Opened 30 images" in screen.status and "30 images" in screen.summary
    assert len(screen.gallery) == 12 and screen.page_label == "page 1 of 3 · 30 image(s) shown"
    assert [label for _, label in screen.gallery[:2]] == ["img00.png", "img01.png"]
    assert screen.frequency[0] == ["common", 30, 30]
    assert controller.thumbnails.wait_idle(10)
    assert controller.thumbnails.made == 24  # this page, and the next one prefetched: not all 30
    view = screen.view
    screen = controller.next_page(view, 1)
    assert [label for _, label in screen.gallery][0] == "img12.png" and view.page == 1
    screen = controller.go_to_page(view, 99)
    assert view.page == 2 and len(screen.gallery) == 6
    screen = controller.go_to_page(view, view.page + 1, page_size=24)  # the first shown image stays in view
    assert view.page_size == 24 and view.page == 1 and screen.page_label.startswith("page 2 of 2")


def test_filter_batch_add_undo_redo_save_writes_only_changed_bytes(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"1girl, red hair\n", "b": b"1boy, red hair", "c": b"1girl,blue hair", "d": None})
    before = snapshot(root)
    screen = controller.open(View(), str(root))
    view = screen.view
    screen = controller.apply_filter(view, "1girl AND NOT blue hair")
    assert "1 of 4 images shown" in screen.status and [label for _, label in screen.gallery] == ["a.png"]
    screen = controller.apply_filter(view, "1girl")
    assert screen.frequency[:2] == [["1girl", 2, 2], ["red hair", 1, 2]]  # counts in the shown images, and in all

    screen = controller.batch(view, "add", tags="smile, solo")
    assert "2 caption(s) changed" in screen.status and "2 shown image(s)" in screen.status
    assert "data-unsaved='2'" in screen.banner and snapshot(root) == before  # nothing written yet
    assert [label for _, label in screen.gallery] == ["● a.png", "● c.png"]
    assert screen.undo.startswith("↶ Undo: add 'smile, solo'") and screen.can_undo and not screen.can_redo

    screen = controller.undo(view)
    assert "data-unsaved='0'" in screen.banner and screen.can_redo
    screen = controller.redo(view)
    assert "data-unsaved='2'" in screen.banner
    screen = controller.save(view, backup=False)
    assert "Saved 2 caption file(s)" in screen.status and "data-unsaved='0'" in screen.banner
    after = snapshot(root)
    folder = "10_char/"
    assert after[folder + "a.txt"] == b"1girl, red hair, smile, solo\n"
    assert after[folder + "c.txt"] == b"1girl, blue hair, smile, solo"
    assert after[folder + "b.txt"] == before[folder + "b.txt"] and folder + "d.txt" not in after
    assert {k: v for k, v in after.items() if k.endswith(".png")} == {k: v for k, v in before.items() if k.endswith(".png")}
    assert "Nothing to save" in controller.save(view).status


def test_every_batch_action_reports_its_count_and_applies_to_the_shown_images_only(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"x, b, a, b, red hair", "b": b"x, z, y", "c": b"other"})
    view = controller.open(View(), str(root)).view
    controller.apply_filter(view, "x")
    session = controller.session
    a, b, c = (next(i for i in range(3) if name_of(controller, i) == n) for n in "abc")
    assert "1 caption(s) changed" in controller.batch(view, "dedupe").status
    assert "2 caption(s) changed" in controller.batch(view, "sort", keep=1, by="name").status
    assert session.tags[a] == ["x", "a", "b", "red hair"] and session.tags[b] == ["x", "y", "z"]
    assert "1 caption(s) changed" in controller.batch(view, "replace", find=r"(\w+) hair", replace_with=r"\1_hair", regex=True).status
    assert "2 caption(s) changed" in controller.batch(view, "move_front", tags="y, a").status
    assert session.tags[a][0] == "a" and session.tags[b][0] == "y"
    assert "2 caption(s) changed" in controller.batch(view, "add_front", tags="trig").status
    assert "2 caption(s) changed" in controller.batch(view, "remove", tags="x").status
    assert view.indices == [] and controller.session.tags[c] == ["other"]  # no longer matches; c never touched
    assert "not valid" in controller.batch(view, "replace", find="(", regex=True).status
    assert "empty" in controller.batch(view, "add", tags=" ").status


def test_tag_list_search_sort_and_building_a_filter_from_picked_tags(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"red hair, smile", "b": b"red hair, poster \\(object\\)", "c": b"blue hair"})
    view = controller.open(View(), str(root)).view
    rows = controller.tag_list(view, "hair", "name").frequency
    assert [r[0] for r in rows] == ["blue hair", "red hair"]
    rows = controller.tag_list(view, "", "count").frequency
    assert rows[0] == ["red hair", 2, 2]
    picked = controller.picked_tag(view, [r[0] for r in rows].index("poster (object)"))
    screen = controller.add_to_filter(view, "", picked, "AND")
    assert screen.expression == '"poster (object)"' and len(view.indices) == 1
    screen = controller.add_to_filter(view, screen.expression, "blue hair", "OR")
    assert len(view.indices) == 2
    screen = controller.add_to_filter(view, screen.expression, "smile", "NOT")
    assert screen.expression == '("poster (object)" OR blue hair) AND NOT smile' and len(view.indices) == 2
    assert "not applied" in controller.apply_filter(view, "(red hair").status


def test_per_image_editing_tags_text_and_tokens(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"a, b, c"})
    view = controller.open(View(), str(root)).view
    detail = controller.select(view, 0).detail
    assert detail.tag_choices == ["1 · a", "2 · b", "3 · c"] and detail.text == "a, b, c" and detail.image.size == (40, 30)
    assert "<b>5</b> / 75 tokens" in detail.tokens
    detail = controller.change_image_tag(view, "3 · c", "front").detail
    assert detail.tag_choices == ["1 · c", "2 · a", "3 · b"] and detail.selected_choice == "1 · c"
    detail = controller.change_image_tag(view, "1 · c", "down").detail
    assert detail.tag_choices[:2] == ["1 · a", "2 · c"]
    detail = controller.change_image_tag(view, "2 · c", "remove").detail
    assert detail.tag_choices == ["1 · a", "2 · b"] and "● unsaved" in detail.title
    detail = controller.add_image_tag(view, "new one", front=True).detail
    assert detail.text == "new one, a, b"
    long_caption = ", ".join(["cat"] * 40)  # 79 tokens: two windows
    detail = controller.set_caption_text(view, long_caption).detail
    assert "<b>79</b> / 150 tokens" in detail.tokens and "2 windows of 75" in detail.tokens
    for _ in range(5):
        controller.undo(view)
    assert controller.session.text(0) == "a, b, c" and controller.session.unsaved == 0
    assert "Click one of the image's tags" in controller.change_image_tag(view, None, "up").status


def test_bad_files_are_listed_skipped_and_never_rewritten(tmp_path, controller):
    latin = "café, rouge".encode("latin-1")
    root = dataset(tmp_path, {"good": b"ok", "latin": latin})
    folder = root / "10_char"
    full = (folder / "good.png").read_bytes()
    (folder / "broken.png").write_bytes(full[: len(full) // 2])
    (folder / "broken.txt").write_bytes(b"broken tag")
    screen = controller.open(View(), str(root))
    assert "cannot be edited in batches" in screen.status
    labels = [label for _, label in screen.gallery]
    assert "⚠ broken.png: cannot be read" in labels
    problems = controller.problems()
    assert "broken.png" in problems and "truncated" in problems and "10_char/latin.txt" in problems
    screen = controller.batch(screen.view, "add", tags="z")
    assert "2 caption(s) changed" in screen.status and "not valid UTF-8" in screen.status
    controller.save(screen.view)
    assert (folder / "latin.txt").read_bytes() == latin and (folder / "broken.txt").read_bytes() == b"broken tag, z"
    view = screen.view
    latin_index = next(i for i in view.indices if name_of(controller, i) == "latin")
    view.selected = latin_index
    assert "not valid UTF-8" in controller.detail(latin_index).title
    assert "Checked 3 images: 1 cannot be read" in controller.check_images(view).status


def test_conflicts_on_disk_are_listed_and_resolved_by_the_users_choice(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"one", "b": b"two"})
    folder = root / "10_char"
    view = controller.open(View(), str(root)).view
    controller.batch(view, "add", tags="mine")
    (folder / "a.txt").write_bytes(b"edited elsewhere")
    screen = controller.save(view)
    assert "Saved 1 caption file(s)" in screen.status and "10_char/a.txt" in screen.conflicts
    assert (folder / "a.txt").read_bytes() == b"edited elsewhere" and "data-unsaved='1'" in screen.banner
    screen = controller.resolve(view, "disk")
    assert screen.conflicts == "" and controller.session.text(0) == "edited elsewhere"
    controller.undo(view)
    (folder / "a.txt").write_bytes(b"edited again")
    controller.save(view)
    screen = controller.resolve(view, "mine")
    assert (folder / "a.txt").read_bytes() == b"one, mine" and screen.conflicts == ""


def test_reopening_with_unsaved_changes_asks_first_and_a_reload_keeps_them(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"one"})
    view = controller.open(View(), str(root)).view
    controller.batch(view, "add", tags="unsaved tag")
    fresh = controller.resume(View())  # a reloaded page: a new view, the same server-side edits
    assert "data-unsaved='1'" in fresh.banner and "kept from before the page was reloaded" in fresh.status
    screen = controller.open(fresh.view, str(root))
    assert screen.confirm == "open" and "1 unsaved change(s)" in screen.confirm_text
    assert controller.session.unsaved == 1
    screen = controller.show(View(), str(tmp_path / "elsewhere"))
    assert "Still showing" in screen.status and controller.session.unsaved == 1
    screen = controller.open(fresh.view, str(root), discard=True)
    assert screen.confirm == "" and controller.session.unsaved == 0
    assert (root / "10_char" / "a.txt").read_bytes() == b"one"
    assert "does not exist" in controller.open(View(), str(tmp_path / "nope")).status


def test_trigger_word_add_to_all_is_idempotent(tmp_path, controller):
    root = dataset(tmp_path, {"a": b"x, trig", "b": b"trig, y", "c": None})
    view = controller.open(View(), str(root)).view
    controller.apply_filter(view, "x")  # the trigger goes to every caption, not just the shown ones
    assert "2 caption(s) changed" in controller.add_trigger(view, "trig").status
    assert "0 caption(s) changed, 3 unchanged" in controller.add_trigger(view, "trig").status
    assert all(controller.session.tags[i][0] == "trig" for i in range(3))


def test_standalone_auto_tag_explains_it_needs_the_webui(tmp_path, controller):
    root = dataset(tmp_path, {"a": b""})
    view = controller.open(View(), str(root)).view
    screens = list(controller.autotag(view, "deepdanbooru", 0.5, "untagged", "append", ""))
    assert "works when this tab runs inside AUTOMATIC1111" in screens[-1].status
    assert controller.session.unsaved == 0


class ScriptedTagger(StandaloneHost):
    """A host whose interrogator returns fixed scores per image name (the WebUI's own is tested
    in tests/host); everything else is the real standalone host."""

    can_autotag = True

    def __init__(self, scores, delay=0.0):
        super().__init__()
        self.scores, self.delay, self.calls = scores, delay, []

    def autotag(self, images, method, progress=None, should_stop=None):
        self.calls.append((method, [Path(p).name for p in images]))
        out = []
        for n, path in enumerate(images, start=1):
            if should_stop is not None and should_stop():
                break
            time.sleep(self.delay)
            out.append(self.scores.get(Path(path).stem))
            if progress:
                progress(n, len(images))
        return out


def test_auto_tag_threshold_blacklist_modes_overwrite_confirmation_and_undo(tmp_path):
    scores = {"a": [("smile", 0.9), ("long_hair", 0.8), ("blurry", 0.3)], "b": [("cat", 0.95)], "c": None}
    host = ScriptedTagger(scores)
    controller = TagEditorController(host)
    root = dataset(tmp_path, {"a": b"trig, hand tag", "b": b"", "c": None})
    view = controller.open(View(), str(root)).view
    session = controller.session
    a, b, c = (next(i for i in range(3) if name_of(controller, i) == n) for n in "abc")

    final = list(controller.autotag(view, "deepdanbooru", 0.5, "untagged", "fill_empty", ""))[-1]
    assert host.calls[-1] == ("deepdanbooru", ["b.png", "c.png"])
    assert session.tags[b] == ["cat"] and "1 image(s) could not be read" in final.status

    list(controller.autotag(view, "deepdanbooru", 0.5, "shown", "prepend", "long hair", keep_first="trig"))
    assert session.tags[a] == ["trig", "smile", "hand tag"]  # threshold 0.5 drops blurry; blacklisted long_hair

    asked = list(controller.autotag(view, "deepdanbooru", 0.2, "shown", "overwrite", "", keep_first="trig"))
    assert asked[-1].confirm == "overwrite" and session.tags[a] == ["trig", "smile", "hand tag"]
    list(controller.autotag(view, "deepdanbooru", 0.2, "shown", "overwrite", "", keep_first="trig", confirmed=True))
    assert session.tags[a] == ["trig", "smile", "long_hair", "blurry"]
    controller.undo(view)
    assert session.tags[a] == ["trig", "smile", "hand tag"]
    assert session.unsaved == 2 and (root / "10_char" / "a.txt").read_bytes() == b"trig, hand tag"  # nothing written


def test_auto_tag_is_refused_while_training_and_can_be_stopped(tmp_path):
    host = ScriptedTagger({f"i{n}": [("tag", 1.0)] for n in range(40)}, delay=0.05)
    training = {"on": True}
    controller = TagEditorController(host, busy=lambda: training["on"])
    root = dataset(tmp_path, {f"i{n}": None for n in range(40)})
    view = controller.open(View(), str(root)).view
    refused = list(controller.autotag(view, "blip", 0.5, "untagged", "append", ""))
    assert "training" in refused[-1].status and not host.calls
    training["on"] = False
    stopper = threading.Timer(0.6, controller.stop_autotag)
    stopper.start()
    screens = list(controller.autotag(view, "blip", 0.5, "untagged", "append", ""))
    assert any("Auto-tagging with BLIP:" in s.status for s in screens[:-1])
    assert "Stopped after" in screens[-1].status
    done = sum(1 for i in range(40) if controller.session.tags[i])
    assert 0 < done < 40 and controller.session.unsaved == done
