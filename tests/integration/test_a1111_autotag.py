"""Auto-tag in the tag editor through the WebUI's own interrogators, inside a real WebUI.

The real DeepDanbooru and BLIP weights (and BLIP's bert-base-uncased tokenizer) cannot be
downloaded here, so the test writes files of the real architectures, built by the WebUI's own
code with random weights: the DeepDanbooru file's last layer is set so that a few known tags
score ~1 on any picture and every other tag ~0; BLIP gets a made-up vocabulary of known words
(in a throw-away Hugging Face cache). The WebUI loads them from its `models/` folders through
its own (safe) loaders and runs them. Skipped like test_a1111.py.
"""

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_a1111 import CKPT, WEBUI, WebUI, _open_tab, _python, _set  # noqa: F401

pytestmark = [pytest.mark.skipif(WEBUI is None or not CKPT, reason="set A1111_WEBUI_DIR and A1111_CKPT to run inside a real WebUI"),
              pytest.mark.timeout(3600)]

SURE_TAGS = ["1girl", "red_circle", "hat_(object)", "rating:safe"]  # score ~1 on every picture; every other tag ~0
BERT_SPECIAL = ["[PAD]"] + [f"[unused{n}]" for n in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = ["a", "picture", "of"] + [f"w{n}" for n in range(30522 - len(BERT_SPECIAL) - 3)]

# Run by the WebUI's Python in its folder. Saved as the WebUI's safe loader accepts (newer torch
# adds archive entries such as .format_version that it refuses).
_SAVE = textwrap.dedent("""
    import os, re, sys, zipfile
    import torch

    def save(state, out):
        torch.save(state, out + ".tmp")
        allowed = re.compile(r"^([^/]+)/((data/\\d+)|version|byteorder|.data/serialization_id|(data\\.pkl))$")
        with zipfile.ZipFile(out + ".tmp") as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                if allowed.match(info.filename):
                    dst.writestr(info.filename, src.read(info.filename))
        os.remove(out + ".tmp")

    out, extra = sys.argv[1], sys.argv[2]
    del sys.argv[1:]  # the WebUI's modules parse the command line
    sys.path.insert(0, ".")
    torch.manual_seed(0)
""")
_DEEPDANBOORU = _SAVE + textwrap.dedent("""
    from modules import deepbooru_model
    sure = extra.split("|")
    model = deepbooru_model.DeepDanbooruModel()
    with torch.no_grad():
        last = model.n_Conv_178.weight  # [tags, 4096, 1, 1], no bias: logit = w . mean(features), features >= 0
        last.fill_(-1e3 / last.shape[1])
        last[:len(sure)] = 1e3 / last.shape[1]
    state = model.state_dict()
    state["tags"] = sure + [f"unlikely_{n}" for n in range(last.shape[0] - len(sure))]
    save(state, out)
""")
_BLIP = _SAVE + textwrap.dedent("""
    from modules import interrogate, paths
    interrogate.InterrogateModels.create_fake_fairscale(None)
    import models.blip
    config = os.path.join(paths.paths["BLIP"], "configs", "med_config.json")
    model = models.blip.blip_decoder(pretrained="", image_size=interrogate.blip_image_eval_size, vit="base", med_config=config)
    save({"model": model.state_dict()}, out)
""")


def _hf_home(root: Path) -> Path:
    """A Hugging Face cache for the WebUI: what the given one holds (linked, never changed) plus a
    bert-base-uncased tokenizer with made-up words, which BLIP loads by that name."""
    given = Path(os.environ["HF_HOME"]) / "hub" if os.environ.get("HF_HOME") else Path.home() / ".cache" / "huggingface" / "hub"
    hub = root / "hub"
    hub.mkdir(parents=True)
    for entry in (given.iterdir() if given.is_dir() else []):
        (hub / entry.name).symlink_to(entry)
    snapshot = hub / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (hub / "models--bert-base-uncased" / "refs").mkdir()
    (hub / "models--bert-base-uncased" / "refs" / "main").write_text("0" * 40)
    (snapshot / "vocab.txt").write_text("\n".join(BERT_SPECIAL + BERT_WORDS) + "\n")
    (snapshot / "tokenizer_config.json").write_text('{"do_lower_case": true, "model_max_length": 512}')
    (snapshot / "config.json").write_text('{"model_type": "bert", "vocab_size": 30522}')
    return root


def _make(script: str, out: Path, extra: str, env: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([_python(), "-c", script, str(out), extra], cwd=WEBUI, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env))
    assert made.returncode == 0, made.stderr[-3000:]


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111-autotag")
    env = {"HF_HOME": str(_hf_home(tmp_path_factory.mktemp("hf-home")))}
    _make(_DEEPDANBOORU, root / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt", "|".join(SURE_TAGS), env)
    _make(_BLIP, root / "models" / "BLIP" / "model_base_caption_capfilt_large.pth", "", env)
    server = WebUI(root, env=env)
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


def _auto_tag_untagged(webui, dataset: Path, method: str, blacklist: str = "") -> str:
    """In the browser: open the dataset in the Tags sub-tab, auto-tag its untagged images with
    `method` (append), save; returns the status line after the merge."""
    from playwright.sync_api import sync_playwright

    from tests.integration.test_a1111 import CHROMIUM, FLAGS

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
        page.locator("#train_lora_tags_autotag_method").get_by_text(method, exact=True).click()
        _set(page, "train_lora_tags_autotag_blacklist", blacklist)
        page.locator("#train_lora_tags_autotag_run").click()  # threshold 0.5, untagged images, append
        _wait_status(page, f"auto-tag 2 image(s) with {method}")
        status = page.locator("#train_lora_tags_status").last.inner_text()
        page.locator("#train_lora_tags_save").click()
        _wait_status(page, "Saved 2 caption file(s)")
        shots = Path(__file__).resolve().parents[2] / "artifacts" / "a1111"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"tags-autotag-{method.lower()}.png"), full_page=True)
        browser.close()
    return status


def _check_rest_untouched(webui, folder: Path, before: dict) -> None:
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt") if p.name in before} == before  # tagged ones untouched
    # the one traceback allowed: the WebUI reading a git remote this checkout does not have
    tracebacks = [b for b in webui.log().split("Traceback (most recent call last)")[1:] if "Remote named 'origin'" not in b[:1500]]
    assert not tracebacks, tracebacks[0][:3000]


def test_auto_tag_fills_the_untagged_captions_with_the_webuis_deepdanbooru(webui, dataset):
    folder = dataset / "5_tinychar"
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    status = _auto_tag_untagged(webui, dataset, "DeepDanbooru", blacklist="hat*")

    for n in range(2):  # over the threshold, as the WebUI writes tags; no rating, nothing blacklisted
        caption = (folder / f"untagged{n}.txt").read_text(encoding="utf-8")
        assert sorted(t.strip() for t in caption.split(",")) == ["1girl", "red circle"], (caption, status)
    _check_rest_untouched(webui, folder, before)


def test_auto_tag_captions_the_untagged_images_with_the_webuis_blip(webui, dataset):
    folder = dataset / "5_tinychar"
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    status = _auto_tag_untagged(webui, dataset, "BLIP")

    captions = [(folder / f"untagged{n}.txt").read_text(encoding="utf-8") for n in range(2)]
    words = captions[0].replace(",", " ").split()
    assert words and set(words) <= set(BERT_WORDS), (captions, status)  # BLIP's words, from its tokenizer
    assert captions[0] == captions[1], captions  # the same picture gets the same caption
    _check_rest_untouched(webui, folder, before)
