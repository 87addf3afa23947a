"""The tag editor in a real headless Chromium against the standalone tab (gradio 3.41 and 4.40):
filter, batch add, undo (keyboard), save with the bytes on disk checked, a reload that keeps
unsaved edits, the leave-page warning, the problems panel. Screenshots go to
`artifacts/ui/<gradio version>/tags-*.png`.
"""

import time
from pathlib import Path

import pytest

from dataset.files import snapshot  # tests/ is on sys.path (rootdir-relative packages)
from ui.servers import start_ui
from ui.test_browser import CHROMIUM, FLAGS, _shots_dir

pytestmark = pytest.mark.both_profiles

N_IMAGES = 30


def _make(root: Path) -> Path:
    from PIL import Image

    folder = root / "data" / "5_tinychar"
    folder.mkdir(parents=True)
    for n in range(N_IMAGES):
        Image.new("RGB", (64 + n, 48), (n * 8, 40, 200 - n * 5)).save(folder / f"img{n:02d}.png")
        (folder / f"img{n:02d}.txt").write_bytes(f"tinychar, {'smile' if n % 3 == 0 else 'plain'}, red\n".encode())
    full = (folder / "img00.png").read_bytes()
    (folder / "zz_broken.png").write_bytes(full[: len(full) // 2])
    (folder / "zz_latin.png").write_bytes(full)
    (folder / "zz_latin.txt").write_bytes("café, smile".encode("latin-1"))
    return root / "data"


@pytest.fixture
def editor(tmp_path):
    data = _make(tmp_path)
    process, url = start_ui(["--dataset", data], tmp_path)
    if not Path(CHROMIUM).exists():
        process.terminate()
        pytest.skip("Chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser, url, data
        finally:
            browser.close()
            process.terminate()
            process.wait(timeout=30)


def _open_tags(page, url):
    page.goto(url)
    page.wait_for_selector("#train_lora_start", state="attached", timeout=60000)
    page.locator("#train_lora_tabs .tab-nav button", has_text="Tags").first.click()
    _wait_for(page, "() => document.querySelectorAll('#train_lora_tags_gallery img').length > 0", "the gallery")


def _wait_for(page, script, what, seconds=60):
    try:
        page.wait_for_function(script, timeout=seconds * 1000)
    except Exception as exc:  # noqa: BLE001 - say what the page showed instead
        raise AssertionError(f"timed out waiting for {what}; status: {_text(page, 'train_lora_tags_status')!r}") from exc


def _text(page, elem_id) -> str:
    return page.locator(f"#{elem_id}").last.inner_text()


def _wait_text(page, elem_id, needle, seconds=60):
    _wait_for(page, f"() => [...document.querySelectorAll('#{elem_id}')].some(e => e.innerText.includes({needle!r}))",
              f"{needle!r} in #{elem_id}", seconds)


def _unsaved(page) -> int:
    return int(page.get_attribute("#train_lora_tags_banner [data-unsaved]", "data-unsaved"))


def _wait_unsaved(page, count):
    _wait_for(page, f"() => window.trainLoraTagsUnsaved && window.trainLoraTagsUnsaved() === {count}", f"{count} unsaved")


def _fill(page, elem_id, value, enter=False):
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    if enter:
        box.press("Enter")


def test_filter_batch_add_undo_save_and_reload_keeps_unsaved(editor):
    browser, url, data = editor
    shots = _shots_dir()
    folder = data / "5_tinychar"
    before = snapshot(data)
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    _open_tags(page, url)
    assert page.locator("#train_lora_tags_gallery img").count() == N_IMAGES + 2  # one page holds them all (48)
    assert _unsaved(page) == 0
    page.screenshot(path=str(shots / "tags-1-open.png"), full_page=True)

    _fill(page, "train_lora_tags_filter", "smile AND tinychar", enter=True)
    _wait_text(page, "train_lora_tags_page_label", "10 image(s) shown")
    _wait_for(page, "() => document.querySelectorAll('#train_lora_tags_gallery img').length === 10", "10 thumbnails")

    _fill(page, "train_lora_tags_batch_tags", "happy")
    page.locator("#train_lora_tags_batch_add").click()
    _wait_text(page, "train_lora_tags_status", "add 'happy': 10 caption(s) changed")
    _wait_unsaved(page, 10)
    assert "10 unsaved changes" in _text(page, "train_lora_tags_banner")
    assert snapshot(data) == before  # nothing on disk yet
    page.screenshot(path=str(shots / "tags-2-batch-add.png"), full_page=True)

    page.locator("#train_lora_tags_gallery img").first.click()  # focus outside text fields, then Ctrl+Z
    _wait_text(page, "train_lora_tags_image_title", "img00.png")
    page.keyboard.press("Control+z")
    _wait_unsaved(page, 0)
    _wait_text(page, "train_lora_tags_status", "undo add 'happy'")

    _fill(page, "train_lora_tags_batch_tags", "joyful")
    page.locator("#train_lora_tags_batch_add_front").click()
    _wait_unsaved(page, 10)
    page.reload()  # the edits live on the server: a reload shows them still unsaved
    page.wait_for_selector("#train_lora_start", state="attached", timeout=60000)
    _wait_for(page, "() => window.trainLoraTagsUnsaved && window.trainLoraTagsUnsaved() === 10", "unsaved edits after reload")
    page.locator("#train_lora_tabs .tab-nav button", has_text="Tags").first.click()
    _wait_text(page, "train_lora_tags_page_label", "image(s) shown")

    page.locator("#train_lora_tags_save").click()
    _wait_text(page, "train_lora_tags_status", "Saved 10 caption file(s)")
    _wait_unsaved(page, 0)
    after = snapshot(data)
    for n in range(N_IMAGES):
        name = f"5_tinychar/img{n:02d}.txt"
        expected = before[name] if n % 3 else b"joyful, " + before[name]
        assert after[name] == expected, name
    assert after["5_tinychar/zz_latin.txt"] == before["5_tinychar/zz_latin.txt"]
    assert {k: v for k, v in after.items() if not k.endswith(".txt")} == {k: v for k, v in before.items() if not k.endswith(".txt")}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    page.screenshot(path=str(shots / "tags-3-saved.png"), full_page=True)


def test_per_image_edit_problems_panel_and_leave_warning(editor):
    browser, url, data = editor
    shots = _shots_dir()
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    _open_tags(page, url)
    page.locator("#train_lora_tags_problems_box").get_by_text("Problems").first.click()
    _wait_text(page, "train_lora_tags_problems", "zz_broken.png")
    problems = _text(page, "train_lora_tags_problems")
    assert "truncated" in problems and "zz_latin.txt" in problems and "not valid UTF-8" in problems
    assert "cannot be read" in page.locator("#train_lora_tags_gallery").inner_text()
    page.locator("#train_lora_tags_autotag").get_by_text("Auto-tag").first.click()  # standalone: explained, disabled
    _wait_text(page, "train_lora_tags_autotag_note", "inside AUTOMATIC1111")
    assert page.locator("#train_lora_tags_autotag_run").is_disabled()

    _fill(page, "train_lora_tags_search", "plai")  # the tag list narrows as one types
    _wait_for(page, "() => document.querySelector('#train_lora_tags_frequency').innerText.includes('plain')"
                    " && !document.querySelector('#train_lora_tags_frequency').innerText.includes('tinychar')", "the search")
    page.locator("#train_lora_tags_frequency").get_by_text("plain", exact=True).last.click()  # gradio 4 draws the table twice
    _wait_for(page, "() => document.querySelector('#train_lora_tags_picked textarea, #train_lora_tags_picked input').value === 'plain'",
              "the picked tag")
    page.locator("#train_lora_tags_and").click()
    _wait_text(page, "train_lora_tags_page_label", "20 image(s) shown")
    assert page.locator("#train_lora_tags_filter textarea, #train_lora_tags_filter input").first.input_value() == "plain"

    page.locator("#train_lora_tags_gallery img").first.click()
    _wait_text(page, "train_lora_tags_image_title", "img01.png")
    _wait_text(page, "train_lora_tags_tokens", "/ 75 tokens")
    page.locator("#train_lora_tags_image_tags label", has_text="3 · red").first.click()
    page.locator("#train_lora_tags_tag_front").click()
    _wait_for(page, "() => document.querySelector('#train_lora_tags_caption textarea').value === 'red, tinychar, plain'",
              "the caption text to follow the moved tag")
    _wait_unsaved(page, 1)
    page.screenshot(path=str(shots / "tags-4-image.png"), full_page=True)

    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.accept()))
    page.close(run_before_unload=True)
    deadline = time.time() + 10
    while not dialogs and time.time() < deadline:
        time.sleep(0.1)
    assert dialogs == ["beforeunload"]
    assert (data / "5_tinychar" / "img01.txt").read_bytes() == b"tinychar, plain, red\n"  # unsaved: not written
