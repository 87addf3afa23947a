"""The tab inside a real AUTOMATIC1111 WebUI (v1.10.x), driven through a real browser and its API.

Runs only when `A1111_WEBUI_DIR` points at a WebUI checkout whose Python environment is ready
(`A1111_PYTHON`, default `<dir>/venv/bin/python`) and a checkpoint is given (`A1111_CKPT`, a
full-size SD1.x file; random weights are fine). The WebUI starts on the CPU with a throw-away
`--data-dir`, so nothing of the checkout's own models, settings or outputs is touched; extra
launch flags can be added with `A1111_ARGS`. See the README, "Testing inside A1111".

What a user would check: training from the tab writes the LoRA and its sidecars into the
WebUI's Lora folder; the card is listed at once; `<lora:name:0.8>` changes the image; the
WebUI's Lora loader (at DEBUG) reports no unmatched keys; a generation without the LoRA is
bit-identical to one made before training; RSS grows by far less than one copy of the weights;
Interrupt stops a run with a resumable state; a second start of install.py installs nothing.
"""

import base64
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEBUI = Path(os.environ["A1111_WEBUI_DIR"]).resolve() if os.environ.get("A1111_WEBUI_DIR") else None
CKPT = os.environ.get("A1111_CKPT", "")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.skipif(WEBUI is None or not CKPT, reason="set A1111_WEBUI_DIR and A1111_CKPT to run inside a real WebUI"),
              pytest.mark.timeout(3600)]


def _python() -> str:
    return os.environ.get("A1111_PYTHON") or str(WEBUI / "venv" / "bin" / "python")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, payload=None, timeout: float = 600):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _weights_bytes(checkpoint: str) -> int:
    """In-memory size of the model under --no-half (fp32), from the file's header."""
    from safetensors import safe_open

    total = 0
    with safe_open(checkpoint, "pt") as handle:
        for key in handle.keys():
            numel = 1
            for n in handle.get_slice(key).get_shape():
                numel *= n
            total += numel * 4
    return total


class WebUI:
    def __init__(self, root: Path, extra_args=(), env=None):
        self.root, self.port, self.extra_args, self.env = root, _free_port(), list(extra_args), dict(env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "webui.log"
        self.process = None

    def start(self) -> None:
        extensions = self.root / "extensions"
        extensions.mkdir(parents=True, exist_ok=True)
        link = extensions / "sd-webui-lora-trainer"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        args = [_python(), "launch.py", "--data-dir", str(self.root), "--ckpt", CKPT, "--port", str(self.port), "--api",
                "--use-cpu", "all", "--no-half", "--precision", "full", "--skip-torch-cuda-test", "--skip-version-check",
                "--no-download-sd-model", "--loglevel", "DEBUG"]
        args += self.extra_args + shlex.split(os.environ.get("A1111_ARGS", ""))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **self.env)
        self.process = subprocess.Popen(args, cwd=WEBUI, env=env, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 900
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the WebUI exited:\n" + self.log_path.read_text()[-4000:])
            try:
                _api(self.url, "/sdapi/v1/sd-models", timeout=5)
                urllib.request.urlopen(self.url + "/", timeout=30)
                return
            except OSError:
                time.sleep(2)
        raise RuntimeError("the WebUI did not answer in 15 minutes:\n" + self.log_path.read_text()[-4000:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def txt2img(self, prompt: str) -> bytes:
        """Raw RGB bytes of one 64 px image at a fixed seed."""
        from PIL import Image

        result = _api(self.url, "/sdapi/v1/txt2img", {"prompt": prompt, "negative_prompt": "", "seed": 1234, "steps": 4,
                                                      "width": 64, "height": 64, "cfg_scale": 7, "sampler_name": "Euler",
                                                      "batch_size": 1, "n_iter": 1, "save_images": False})
        image = Image.open(io.BytesIO(base64.b64decode(result["images"][0].split(",", 1)[-1])))
        return image.convert("RGB").tobytes()


def _report(figures: dict) -> None:
    """Figures of a run, printed (`pytest -s`) and kept in artifacts/a1111/figures.json."""
    folder = REPO / "artifacts" / "a1111"
    folder.mkdir(parents=True, exist_ok=True)
    rounded = {k: round(v, 3) for k, v in figures.items()}
    (folder / "figures.json").write_text(json.dumps(rounded, indent=1) + "\n")
    print("\n" + "\n".join(f"  {k}: {v}" for k, v in rounded.items()))


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    server = WebUI(tmp_path_factory.mktemp("a1111-data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        yield page
        browser.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.conftest import make_dataset

    return make_dataset(tmp_path_factory.mktemp("a1111-dataset"))


def _set(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(str(value))
    field.press("Tab")


def _progress(page) -> str:
    return page.locator("#train_lora_progress").last.inner_text()


def _wait_progress(page, words, seconds: float) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = _progress(page)
        if any(w in text for w in words):
            return text
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {words}; progress: {_progress(page)!r}")


def _open_tab(page, webui) -> None:
    page.goto(webui.url + "/")
    page.wait_for_selector("#tabs", timeout=300000)
    page.locator("#tabs > .tab-nav button", has_text="Train LoRA").first.click()
    page.wait_for_selector("#train_lora_root", state="visible", timeout=60000)


def _fill_form(page, dataset: Path, name: str, steps: int) -> None:
    page.locator("#train_lora_tabs .tab-nav button", has_text="Dataset").first.click()
    _set(page, "train_lora_dataset_dir", dataset)
    page.locator("#train_lora_tabs .tab-nav button", has_text="Settings").first.click()
    _set(page, "train_lora_output_name", name)
    _set(page, "train_lora_train_max_steps", steps)
    _set(page, "train_lora_dataset_resolution", 64)
    _set(page, "train_lora_train_unet_lr", 0.01)
    page.locator("#train_lora_advanced").get_by_text("Advanced").first.click()
    _set(page, "train_lora_dataset_min_bucket_reso", 64)
    _set(page, "train_lora_dataset_max_bucket_reso", 128)
    _set(page, "train_lora_sample_every_steps", steps)  # a sample of the final weights becomes the card's preview
    _set(page, "train_lora_sample_steps", 2)
    _set(page, "train_lora_sample_prompts", "tinychar, red circle")
    page.locator("#train_lora_tabs .tab-nav button", has_text="Train").first.click()


def test_train_from_the_tab_and_use_the_lora_at_once(webui, page, dataset):
    lora_dir = webui.root / "models" / "Lora"
    before = webui.txt2img("tinychar, red circle")
    pid = webui.process.pid
    baseline = _rss_bytes(pid)
    peak = [baseline]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes(pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    _open_tab(page, webui)
    _fill_form(page, dataset, "a1111_lora", steps=4)
    watcher.start()
    page.locator("#train_lora_start").click()
    try:
        finished = _wait_progress(page, ["Done", "Failed", "failed"], seconds=1800)
    finally:
        done.set()
        watcher.join()
    assert "Done" in finished, finished + "\n" + page.locator("#train_lora_log textarea").first.input_value()

    lora = lora_dir / "a1111_lora.safetensors"
    assert lora.is_file() and (lora_dir / "a1111_lora.json").is_file()
    deadline = time.time() + 600  # the preview is rendered after the save, under the WebUI's lock
    while not (lora_dir / "a1111_lora.preview.png").exists() and time.time() < deadline:
        time.sleep(1)
    assert (lora_dir / "a1111_lora.preview.png").is_file()
    sidecar = json.loads((lora_dir / "a1111_lora.json").read_text())
    assert sidecar["sd version"] == "SD1" and sidecar["activation text"] == "tinychar"

    names = [entry["name"] for entry in _api(webui.url, "/sdapi/v1/loras")]
    assert "a1111_lora" in names, names  # listed without a refresh or restart

    with_lora = webui.txt2img("tinychar, red circle <lora:a1111_lora:0.8>")
    assert with_lora != before, "<lora:a1111_lora:0.8> did not change the image"
    after = webui.txt2img("tinychar, red circle")
    assert after == before, "a generation without the LoRA differs from the one made before training"

    log = webui.log()
    assert "DEBUG" in log, "the WebUI was not logging at DEBUG level: the unmatched-keys check would be blind"
    assert "didn't match keys" not in log, [line for line in log.splitlines() if "didn't match keys" in line]
    growth = peak[0] - baseline
    weights = _weights_bytes(CKPT)
    _report({"rss_before_training_mib": baseline / 2**20, "rss_peak_during_training_mib": peak[0] / 2**20,
             "rss_growth_mib": growth / 2**20, "weights_in_memory_mib": weights / 2**20, "growth_share_of_weights": growth / weights})
    assert growth < 0.25 * weights, f"RSS grew by {growth / 2**20:.0f} MiB during training; the weights are {weights / 2**20:.0f} MiB"

    assert page.locator("#train_lora_grid_prompts textarea").first.input_value() == "tinychar"
    _set(page, "train_lora_grid_strengths", "0 1")
    _set(page, "train_lora_grid_steps", 4)
    page.locator("#train_lora_grid_button").click()
    page.wait_for_function("() => document.querySelectorAll('#train_lora_grid img').length >= 2", timeout=600000)
    shots = REPO / "artifacts" / "a1111"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "train-lora-tab.png"), full_page=True)


def test_interrupt_stops_training_with_a_resumable_state(webui, page, dataset):
    """Also with the VAE and the frozen text encoder parked in RAM (setting "always": a real move
    of the WebUI's own weights even on the CPU): the WebUI gets them back bit-identical."""
    _api(webui.url, "/sdapi/v1/options", {"lora_trainer_offload": "always"})
    before = webui.txt2img("tinychar, red circle")
    _open_tab(page, webui)
    if (webui.root / "models" / "Lora" / "a1111_lora.safetensors").exists():  # after the first test: the page re-attaches
        page.wait_for_function("() => document.querySelector('#train_lora_output_name input, #train_lora_output_name textarea')"
                               ".value === 'a1111_lora'", timeout=60000)
    _fill_form(page, dataset, "a1111_halted", steps=500)
    page.locator("#train_lora_tabs .tab-nav button", has_text="Settings").first.click()
    page.locator("#train_lora_network_train_text_encoder input").uncheck()
    page.locator("#train_lora_tabs .tab-nav button", has_text="Train").first.click()
    page.locator("#train_lora_start").click()
    _wait_progress(page, ["step 1/", "step 2/", "step 3/"], seconds=900)
    _api(webui.url, "/sdapi/v1/interrupt", {})
    page.wait_for_function("() => ['interrupted', 'done', 'failed', 'nan'].includes("
                           "document.querySelector('#train_lora_progress .train-lora-progress')?.dataset.status)", timeout=600000)
    status = page.locator("#train_lora_progress .train-lora-progress").last.get_attribute("data-status")
    assert status == "interrupted", _progress(page)
    state = webui.root / "lora_trainer" / "runs" / "a1111_halted" / "state"
    log = page.locator("#train_lora_log textarea").first.input_value()
    assert (state / "state.json").is_file(), f"no resumable state in {state}; the tab's log:\n{log}"
    assert not (webui.root / "models" / "Lora" / "a1111_halted.safetensors").exists()
    assert "VAE and text encoder(s) parked in RAM" in log, log
    assert webui.txt2img("tinychar, red circle") == before, "the parked weights did not come back as they were"


def test_install_py_installs_nothing_the_second_time(webui):
    env = dict(os.environ, PYTHONPATH=str(WEBUI))
    runs = [subprocess.run([_python(), str(REPO / "install.py")], cwd=WEBUI, env=env, capture_output=True, text=True, timeout=900)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    second = runs[1].stdout + runs[1].stderr
    assert "Installing" not in second and "rror" not in second, second
