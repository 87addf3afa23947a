"""Auto-tag in the tag editor through the WebUI's own DeepDanbooru, inside a real WebUI.

The real model cannot be downloaded here, so the test writes a DeepDanbooru file of the real
architecture (the WebUI's own `DeepDanbooruModel`, random weights) whose last layer is set so
that a few known tags score ~1 on any picture and every other tag ~0; the WebUI loads it from
`models/torch_deepdanbooru` through its own safe loader and runs it. Skipped like test_a1111.py.
"""

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_a1111 import CKPT, WEBUI, WebUI, _open_tab, _python, _set  # noqa: F401

pytestmark = [pytest.mark.skipif(WEBUI is None or not CKPT, reason="set A1111_WEBUI_DIR and A1111_CKPT to run inside a real WebUI"),
              pytest.mark.timeout(3600)]

SURE_TAGS = ["1girl", "red_circle", "hat_(object)", "rating:safe"]  # score ~1 on every picture; every other tag ~0

# Run by the WebUI's Python in its folder: the WebUI's own model class, saved as its safe loader
# accepts (newer torch adds archive entries such as .format_version that the WebUI refuses).
_MAKE_MODEL = textwrap.dedent("""
    import re, sys, zipfile, os
    out, sure = sys.argv[1], sys.argv[2].split("|")
    del sys.argv[1:]
    sys.path.insert(0, ".")
    import torch
    from modules import deepbooru_model
    torch.manual_seed(0)
    model = deepbooru_model.DeepDanbooruModel()
    with torch.no_grad():
        last = model.n_Conv_178.weight  # [tags, 4096, 1, 1], no bias: logit = w . mean(features), features >= 0
        last.fill_(-1e3 / last.shape[1])
        last[:len(sure)] = 1e3 / last.shape[1]
    state = model.state_dict()
    state["tags"] = sure + [f"unlikely_{n}" for n in range(last.shape[0] - len(sure))]
    torch.save(state, out + ".tmp")
    allowed = re.compile(r"^([^/]+)/((data/\\d+)|version|byteorder|.data/serialization_id|(data\\.pkl))$")
    with zipfile.ZipFile(out + ".tmp") as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if allowed.match(info.filename):
                dst.writestr(info.filename, src.read(info.filename))
    os.remove(out + ".tmp")
""")


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111-autotag")
    folder = root / "models" / "torch_deepdanbooru"
    folder.mkdir(parents=True)
    made = subprocess.run([_python(), "-c", _MAKE_MODEL, str(folder / "model-resnet_custom_v3.pt"), "|".join(SURE_TAGS)],
                          cwd=WEBUI, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    server = WebUI(root)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dataset(tmp_path):
    from tests.conftest import make_dataset

    root = make_dataset(tmp_path / "data")
    folder = root / "5_tinychar"
    for n in range(2):
        shutil.copy(folder / "img0.png", folder / f"untagged{n}.png")
    return root


def _wait_status(page, needle: str, seconds: float = 600) -> None:
    page.wait_for_function(f"() => [...document.querySelectorAll('#train_lora_tags_status')].some(e => e.innerText.includes({needle!r}))",
                           timeout=seconds * 1000)


def test_auto_tag_fills_the_untagged_captions_with_the_webuis_deepdanbooru(webui, dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.integration.test_a1111 import CHROMIUM, FLAGS

    folder = dataset / "5_tinychar"
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        _open_tab(page, webui)
        page.locator("#train_lora_tabs .tab-nav button", has_text="Dataset").first.click()
        _set(page, "train_lora_dataset_dir", dataset)
        page.locator("#train_lora_tabs .tab-nav button", has_text="Tags").first.click()
        page.locator("#train_lora_tags_open").click()
        page.wait_for_function("() => document.querySelectorAll('#train_lora_tags_gallery img').length === 8", timeout=120000)
        page.locator("#train_lora_tags_autotag").get_by_text("Auto-tag").first.click()
        _set(page, "train_lora_tags_autotag_blacklist", "hat*")
        page.locator("#train_lora_tags_autotag_run").click()  # defaults: DeepDanbooru, 0.5, untagged images, append
        _wait_status(page, "auto-tag 2 image(s) with DeepDanbooru")
        status = page.locator("#train_lora_tags_status").last.inner_text()
        page.locator("#train_lora_tags_save").click()
        _wait_status(page, "Saved 2 caption file(s)")
        shots = Path(__file__).resolve().parents[2] / "artifacts" / "a1111"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "tags-autotag.png"), full_page=True)
        browser.close()

    for n in range(2):
        caption = (folder / f"untagged{n}.txt").read_text(encoding="utf-8")
        assert sorted(t.strip() for t in caption.split(",")) == ["1girl", "red circle"], (caption, status)
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt") if p.name in before} == before  # tagged ones untouched
    # the one traceback allowed: the WebUI reading a git remote this checkout does not have
    tracebacks = [b for b in webui.log().split("Traceback (most recent call last)")[1:] if "Remote named 'origin'" not in b[:1500]]
    assert not tracebacks, tracebacks[0][:3000]
