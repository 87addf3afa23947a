"""Tag editor at 10,000 images: what a person waits for in the tab.

Server side, each figure is the handler the button runs (`TagEditorController`) plus gradio
turning its result into what is sent to the browser (the gallery's images, the tag table), on
the running gradio version: opening the dataset, one filter, one page change (the next page,
prefetched while the first was looked at; and a jump to a far page, made on demand), one
batch add on the 5,000 shown images, and saving those 5,000 captions; then a cold page of 48
camera-sized JPEGs (1536x1024), where thumbnails cost the most.

In the browser (when Chromium and Playwright are installed), the same steps are timed from
the click to what the page shows, in headless Chromium against the standalone tab, with a
pause before each click as a person makes (background work such as the next page's
thumbnails runs then, as it would).
"""

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import Result, below

N_IMAGES = 10_000
VOCAB = ["1girl", "solo", "smile", "long hair", "short hair", "blue eyes", "outdoors", "indoors", "sky", "hat",
         r"poster \(object\)", "(masterpiece:1.2)"] + [f"tag {n}" for n in range(300)]


def make_dataset(root: Path, n: int = N_IMAGES, seed: int = 0) -> Path:
    """n distinct small PNGs in 4 kohya folders; half the captions hold "group a"."""
    from PIL import Image

    rng = random.Random(seed)
    for index in range(n):
        folder = root / f"{(index % 4) + 1}_concept{index % 4}"
        if index < 4:
            folder.mkdir(parents=True)
        color = (index % 256, (index // 256) % 256, (index * 7) % 256)
        Image.new("RGB", (96 + index % 3 * 16, 96), color).save(folder / f"img_{index:05d}.png", compress_level=1)
        tags = ["group a" if index % 2 == 0 else "group b"] + rng.sample(VOCAB, rng.randint(10, 25))
        (folder / f"img_{index:05d}.txt").write_text(", ".join(tags) + "\n", encoding="utf-8")
    return root


def make_photos(root: Path, n: int = 48) -> Path:
    """n camera-sized JPEGs (gradients with noise, so they do not compress to nothing)."""
    import numpy as np
    from PIL import Image

    folder = root / "1_photos"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 1536, dtype=np.float32)[None, :, None].repeat(1024, 0).repeat(3, 2)
    for index in range(n):
        noise = rng.normal(0, 20, base.shape).astype(np.float32)
        pixels = np.clip(base * (0.5 + index / (2 * n)) + noise, 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"photo_{index:03d}.jpg", quality=90)
        (folder / f"photo_{index:03d}.txt").write_text("photo", encoding="utf-8")
    return root


def _sent(screen, gallery, table) -> None:
    """What gradio does with the handler's result before it goes to the browser."""
    if screen.gallery is not None:
        gallery.postprocess(screen.gallery)
    if screen.frequency is not None:
        table.postprocess(screen.frequency)


def _timed(function, gallery, table):
    started = time.perf_counter()
    screen = function()
    _sent(screen, gallery, table)
    return time.perf_counter() - started, screen


def _browser(root: Path) -> list:
    """Click-to-screen times in headless Chromium; empty when no browser is installed."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    if not Path(chromium).exists():
        return []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lora_trainer", "ui", "--dataset", str(root), "--port", str(port)],
                              cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              env=dict(os.environ, XDG_DATA_HOME=str(root.parent / "xdg")))
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            page.wait_for_selector("#train_lora_start", state="attached", timeout=120000)

            def timed(action, condition: str) -> float:
                page.wait_for_timeout(1500)  # a person looks at the result before the next click
                started = time.perf_counter()
                action()
                page.wait_for_function(condition, timeout=120000)
                return time.perf_counter() - started

            def shows(elem_id: str, text: str) -> str:
                return f"() => [...document.querySelectorAll('#{elem_id}')].some(e => e.innerText.includes({text!r}))"

            def fill(elem_id: str, value: str):
                page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)

            open_s = timed(lambda: page.locator("#train_lora_tabs .tab-nav button", has_text="Tags").first.click(),
                           "() => document.querySelectorAll('#train_lora_tags_gallery img').length === 48")
            fill("train_lora_tags_filter", "group b")
            filter_s = timed(lambda: page.locator("#train_lora_tags_filter_apply").click(),
                             shows("train_lora_tags_page_label", "5,000 image(s) shown"))
            page_s = timed(lambda: page.locator("#train_lora_tags_next").click(), shows("train_lora_tags_page_label", "page 2 of"))
            fill("train_lora_tags_batch_tags", "browser tag")
            add_s = timed(lambda: page.locator("#train_lora_tags_batch_add").click(),
                          shows("train_lora_tags_status", "5000 caption(s) changed"))
            save_s = timed(lambda: page.locator("#train_lora_tags_save").click(), shows("train_lora_tags_status", "Saved 5,000"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [
        below("browser: open the Tags tab on 10k images (click to 48 thumbnails shown)", open_s, "s", 3.0),
        below("browser: filter (click to 5,000 shown)", filter_s, "s", 1.0),
        below("browser: next page (click to page 2 shown)", page_s, "s", 1.0),
        below("browser: batch add on 5,000 (click to the count shown)", add_s, "s", 1.0),
        below("browser: save 5,000 captions (click to Saved)", save_s, "s", 3.0),
    ]


def run() -> list:
    import gradio as gr

    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.ui.compat import gallery_kwargs
    from lora_trainer.ui.tag_editor_controller import TagEditorController, View

    work = Path(tempfile.mkdtemp(prefix="bench_tags_"))
    try:
        root = make_dataset(work / "data")
        photos = make_photos(work / "photos")
        gallery = gr.Gallery(**gallery_kwargs())
        table = gr.Dataframe(headers=["tag", "shown", "all"], datatype=["str", "number", "number"])
        controller = TagEditorController(StandaloneHost())

        open_s, screen = _timed(lambda: controller.open(View(), str(root)), gallery, table)
        view = screen.view
        if len(view.indices) != N_IMAGES:
            raise RuntimeError(screen.status)
        controller.thumbnails.wait_idle(30)  # the person looks at page 1; page 2 is made meanwhile
        next_s, _ = _timed(lambda: controller.next_page(view, 1), gallery, table)
        far_s, _ = _timed(lambda: controller.go_to_page(view, 150), gallery, table)

        filter_s, screen = _timed(lambda: controller.apply_filter(view, "group a AND NOT (tag 7 AND tag 8)"), gallery, table)
        shown = len(view.indices)
        controller.apply_filter(view, "group a")
        if len(view.indices) != N_IMAGES // 2:
            raise RuntimeError(f"the benchmark filter shows {len(view.indices)} images, not {N_IMAGES // 2}")
        add_s, screen = _timed(lambda: controller.batch(view, "add", tags="new trigger"), gallery, table)
        if controller.session.unsaved != N_IMAGES // 2:
            raise RuntimeError(screen.status)
        save_s, screen = _timed(lambda: controller.save(view), gallery, table)
        if controller.session.unsaved or f"Saved {N_IMAGES // 2:,}" not in screen.status:
            raise RuntimeError(screen.status)

        photo_controller = TagEditorController(StandaloneHost())
        photo_s, _ = _timed(lambda: photo_controller.open(View(), str(photos)), gallery, table)
        in_browser = _browser(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        below(f"open 10k-image dataset in the tab (scan, read, parse; first page) [gradio {gr.__version__}]", open_s, "s", 3.0),
        below("page change: next page (prefetched while page 1 was shown)", next_s, "s", 1.0),
        below("page change: jump to page 150 (thumbnails made on demand)", far_s, "s", 1.0),
        below(f"filter over 10k captions ({shown:,} shown; gallery and tag list)", filter_s, "s", 1.0),
        below("batch add on the 5,000 shown images", add_s, "s", 1.0),
        below("save those 5,000 captions (atomic writes + undo record)", save_s, "s", 3.0),
        below("open a page of 48 camera JPEGs 1536x1024, cold", photo_s, "s", 2.0),
    ] + (in_browser or [Result("browser figures skipped: no Chromium/Playwright here", 0, "-")]) + [
        Result("CPU cores / load average when measured", round(os.getloadavg()[0], 2), f"{os.cpu_count()} cores"),
    ]
