"""The tab inside a real WebUI started with memory flags, and on models it must refuse.

Same set-up as test_a1111.py (skipped without `A1111_WEBUI_DIR` / `A1111_CKPT`). What a user
would see: under `--medvram` a run trains the UNet alone, says so, and leaves the model as it
was; under `--lowvram`, with fp8 weight storage, or with an inpainting checkpoint loaded, Start
gives a message that says what to change, no file is written, and the WebUI keeps generating.
"""

import json
from pathlib import Path

import pytest

from tests.integration.test_a1111 import CKPT, WEBUI, WebUI, _api, _fill_form, _open_tab, _progress  # noqa: F401

pytestmark = [pytest.mark.skipif(WEBUI is None or not CKPT, reason="set A1111_WEBUI_DIR and A1111_CKPT to run inside a real WebUI"),
              pytest.mark.timeout(3600)]


def _server(tmp_path_factory, name: str, *flags: str, settings=None):
    root = tmp_path_factory.mktemp(name)
    if settings:
        (root / "config.json").write_text(json.dumps(settings))  # the WebUI's settings file in its --data-dir
    server = WebUI(root, extra_args=flags)
    server.start()
    return server


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    from tests.integration.test_a1111 import CHROMIUM, FLAGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page(viewport={"width": 1400, "height": 1200})
        browser.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.conftest import make_dataset

    return make_dataset(tmp_path_factory.mktemp("flags-dataset"))


def _status(page) -> str:
    return page.locator("#train_lora_progress .train-lora-progress").last.get_attribute("data-status") or ""


def _run(page, webui, dataset: Path, name: str, steps: int = 3) -> str:
    """Start a run from the tab and wait for it to end; returns the tab's log."""
    _open_tab(page, webui)
    _fill_form(page, dataset, name, steps)
    log = page.locator("#train_lora_log textarea").first
    previous = log.input_value()  # the page re-attaches to the last job: wait for this one's end
    page.locator("#train_lora_start").click()
    page.wait_for_function("(previous) => ['interrupted', 'done', 'failed', 'nan'].includes("
                           "document.querySelector('#train_lora_progress .train-lora-progress')?.dataset.status)"
                           " && document.querySelector('#train_lora_log textarea').value !== previous",
                           arg=previous, timeout=1800000)
    return log.input_value()


def _refused(page, webui, dataset: Path, name: str, *words: str, generate: bool = True) -> None:
    """Start is refused with a message holding `words`; nothing is written; the WebUI still
    generates exactly as before (`generate=False`: not checked)."""
    before = webui.txt2img("tinychar, red circle") if generate else None
    log = _run(page, webui, dataset, name)
    assert _status(page) == "failed", _progress(page) + "\n" + log
    assert all(w in log for w in words), log
    assert "Traceback" not in log, log  # a message for the user, not a crash
    assert not (webui.root / "models" / "Lora" / f"{name}.safetensors").exists()
    if generate:
        assert webui.txt2img("tinychar, red circle") == before, "the WebUI does not generate as before after the refusal"


@pytest.fixture(scope="module")
def medvram(tmp_path_factory):
    server = _server(tmp_path_factory, "a1111-medvram", "--medvram", settings={"CLIP_stop_at_last_layers": 2})
    yield server
    server.stop()


def test_medvram_trains_the_unet_alone_and_leaves_the_model_as_it_was(medvram, page, dataset):
    from safetensors import safe_open

    before = medvram.txt2img("tinychar, red circle")
    log = _run(page, medvram, dataset, "medvram_lora")

    assert _status(page) == "done", _progress(page) + "\n" + log
    assert "--medvram: training the UNet only" in log, log
    lora = medvram.root / "models" / "Lora" / "medvram_lora.safetensors"
    with safe_open(str(lora), "pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys), [k for k in keys if not k.startswith("lora_unet_")][:5]
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_clip_skip"] == "2"  # the WebUI's Clip skip setting is the tab's default
    assert medvram.txt2img("tinychar, red circle") == before
    assert medvram.txt2img("tinychar, red circle <lora:medvram_lora:1>") != before


def test_fp8_weight_storage_is_refused_with_what_to_change(medvram, page, dataset):
    _api(medvram.url, "/sdapi/v1/options", {"fp8_storage": "Enable"})  # the WebUI reloads the weights in fp8
    try:
        _refused(page, medvram, dataset, "fp8_lora", "FP8 weight", "turn that off", generate=False)
    finally:
        _api(medvram.url, "/sdapi/v1/options", {"fp8_storage": "Disable"})


def _inpainting_checkpoint(folder: Path) -> Path:
    """The test checkpoint with a 9-channel UNet input (image + mask + masked image), as the
    WebUI recognises inpainting models."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(CKPT)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    weight = state[key]
    state[key] = torch.cat([weight, torch.zeros(weight.shape[0], 5, *weight.shape[2:], dtype=weight.dtype)], dim=1)
    path = folder / "random-inpainting.safetensors"
    save_file(state, str(path))
    return path


def test_an_inpainting_model_is_refused_with_what_to_load_instead(medvram, page, dataset):
    folder = medvram.root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    path = _inpainting_checkpoint(folder)
    _api(medvram.url, "/sdapi/v1/refresh-checkpoints", {})
    original = _api(medvram.url, "/sdapi/v1/options")["sd_model_checkpoint"]
    titles = [m["title"] for m in _api(medvram.url, "/sdapi/v1/sd-models") if m["filename"] == str(path)]
    assert titles, "the WebUI did not list the inpainting checkpoint"
    _api(medvram.url, "/sdapi/v1/options", {"sd_model_checkpoint": titles[0]})
    try:
        _refused(page, medvram, dataset, "inpaint_lora", "inpainting", "regular checkpoint")
    finally:
        _api(medvram.url, "/sdapi/v1/options", {"sd_model_checkpoint": original})


def test_the_settings_list_the_offload_choice(medvram):
    """The setting the README names is registered, "auto" by default."""
    options = _api(medvram.url, "/sdapi/v1/options")
    assert options.get("lora_trainer_offload") == "auto", json.dumps({k: v for k, v in options.items() if "lora" in k})


def test_lowvram_is_refused_and_the_webui_keeps_generating(tmp_path_factory, medvram, page, dataset):
    medvram.stop()  # one WebUI in memory at a time
    server = _server(tmp_path_factory, "a1111-lowvram", "--lowvram")
    try:
        _refused(page, server, dataset, "lowvram_lora", "--lowvram", "--medvram")
    finally:
        server.stop()
