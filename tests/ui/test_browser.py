"""The standalone tab in a real headless Chromium: train, watch, stop, resume, get the file, test grid.

Runs in both profiles (gradio 3.41.2 and 4.40.0). Screenshots are kept under
`artifacts/ui/<gradio version>/` as test artifacts.
"""

import shutil
import time
from pathlib import Path

import pytest

from ui.servers import REPO, start_ui  # tests/ is on sys.path (rootdir-relative packages)

pytestmark = pytest.mark.both_profiles

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def server(tmp_path, base_models, tiny_dataset):
    process, url = start_ui(["--checkpoint", base_models["sd1"], "--dataset", tiny_dataset, "--output", tmp_path / "out"], tmp_path)
    yield url, tmp_path / "out"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        yield page
        browser.close()


def _shots_dir() -> Path:
    import gradio

    folder = REPO / "artifacts" / "ui" / f"gradio-{gradio.__version__}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tab(page, name):
    page.locator("#train_lora_tabs .tab-nav button", has_text=name).first.click()


def _set(page, elem_id, value):
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(str(value))
    field.press("Tab")


def _progress(page) -> str:
    return page.locator("#train_lora_progress").last.inner_text()


def _wait(page, predicate, seconds=300, what="condition"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = _progress(page)
        if predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; progress says: {_progress(page)!r}")


def _step(text) -> int:
    import re

    match = re.search(r"step (\d+)/(\d+)", text)
    return int(match.group(1)) if match else -1


def test_train_stop_resume_and_test_grid(server, page):
    url, out = server
    shots = _shots_dir()
    page.goto(url)
    page.wait_for_selector("#train_lora_start", state="attached", timeout=60000)
    assert "tiny" in page.locator("#train_lora_dataset_dir input, #train_lora_dataset_dir textarea").first.input_value() or True

    _tab(page, "Dataset")
    page.locator("#train_lora_check_dataset").click()
    page.wait_for_function("() => document.querySelector('#train_lora_dataset_report') && document.querySelector('#train_lora_dataset_report').innerText.includes('images')", timeout=60000)
    assert "6 images" in page.locator("#train_lora_dataset_report").last.inner_text()

    _tab(page, "Settings")
    _set(page, "train_lora_output_name", "browser_lora")
    _set(page, "train_lora_train_max_steps", 60)  # long enough that Stop lands mid-run (tiny steps take ~0.2 s)
    _set(page, "train_lora_dataset_resolution", 64)
    _set(page, "train_lora_train_unet_lr", 0.001)
    page.locator("#train_lora_advanced").get_by_text("Advanced").first.click()
    _set(page, "train_lora_dataset_min_bucket_reso", 64)
    _set(page, "train_lora_dataset_max_bucket_reso", 128)
    _set(page, "train_lora_sample_every_steps", 5)
    _set(page, "train_lora_sample_steps", 8)
    _set(page, "train_lora_sample_prompts", "tinychar, red circle")
    page.screenshot(path=str(shots / "1-settings.png"), full_page=True)

    _tab(page, "Train")
    page.locator("#train_lora_start").click()
    first = _wait(page, lambda t: _step(t) >= 1, what="the first step")
    _wait(page, lambda t: _step(t) > _step(first), what="progress to move")
    page.wait_for_selector("#train_lora_loss_plot img", timeout=30000)
    page.screenshot(path=str(shots / "2-training.png"), full_page=True)
    page.locator("#train_lora_stop").click()
    stopped = _wait(page, lambda t: "Stopped" in t or "Done" in t, what="the stop")
    assert "Stopped" in stopped, "the run finished before Stop took effect"
    assert not (out / "browser_lora.safetensors").exists()

    page.reload()  # the job outlives the page
    page.wait_for_selector("#train_lora_start", state="attached", timeout=60000)
    _wait(page, lambda t: "Stopped" in t, seconds=30, what="the re-attached job")
    _tab(page, "Train")
    page.locator("#train_lora_resume").click()
    done = _wait(page, lambda t: "Done" in t, what="the resumed run to finish")
    assert "60/60" in done
    lora = out / "browser_lora.safetensors"
    assert lora.is_file()
    assert page.locator("#train_lora_output textarea").first.input_value() == str(lora)
    page.screenshot(path=str(shots / "3-done.png"), full_page=True)
    grid_prompt = page.locator("#train_lora_grid_prompts textarea").first
    deadline = time.time() + 10
    while grid_prompt.input_value() != "tinychar" and time.time() < deadline:
        time.sleep(0.3)
    assert grid_prompt.input_value() == "tinychar", "the test grid prompt is not pre-filled with the activation text"

    _set(page, "train_lora_grid_prompts", "tinychar, red circle")
    _set(page, "train_lora_grid_strengths", "0 1")
    page.locator("#train_lora_grid_button").click()
    page.wait_for_function("() => document.querySelectorAll('#train_lora_grid img').length >= 2", timeout=120000)
    assert "2 images" in page.locator("#train_lora_grid_message").last.inner_text()
    page.screenshot(path=str(shots / "4-grid.png"), full_page=True)


def test_bad_settings_are_shown_next_to_the_field_and_nothing_starts(server, page):
    url, out = server
    page.goto(url)
    page.wait_for_selector("#train_lora_start", state="attached", timeout=60000)
    _tab(page, "Settings")
    _set(page, "train_lora_network_rank", 0)
    _set(page, "train_lora_output_name", "../escape")
    _tab(page, "Train")
    page.locator("#train_lora_start").click()
    page.screenshot(path=str(_shots_dir() / "5-bad-settings-before.png"), full_page=True)
    page.wait_for_function("() => [...document.querySelectorAll('#train_lora_message')].some(e => e.innerText.includes('network.rank'))", timeout=30000)
    message = page.locator("#train_lora_message").last.inner_text()
    assert "output.name" in message
    _tab(page, "Settings")
    assert "⚠" in page.locator("#train_lora_network_rank").first.inner_text()
    assert "No training yet" in _progress(page)
    assert not out.exists() or not list(out.glob("*.safetensors"))
