"""Tag editor at 10,000 images: what a person waits for in the tab.

Each figure is the handler the button runs (`TagEditorController`) plus gradio turning its
result into what is sent to the browser (the gallery's images, the tag table), on the
running gradio version: opening the dataset, one filter, one page change (the next page,
prefetched while the first was looked at; and a jump to a far page, made on demand), one
batch add on the 5,000 shown images, and saving those 5,000 captions. A last figure is a
cold page of 48 camera-sized JPEGs (1536x1024), where thumbnails cost the most.
"""

import os
import random
import shutil
import tempfile
import time
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
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        below("open 10k-image dataset in the tab (scan, read, parse; first page)", open_s, "s", 3.0),
        below("page change: next page (prefetched while page 1 was shown)", next_s, "s", 1.0),
        below("page change: jump to page 150 (thumbnails made on demand)", far_s, "s", 1.0),
        below(f"filter over 10k captions ({shown:,} shown; gallery and tag list)", filter_s, "s", 1.0),
        below("batch add on the 5,000 shown images", add_s, "s", 1.0),
        below("save those 5,000 captions (atomic writes + undo record)", save_s, "s", 3.0),
        below("open a page of 48 camera JPEGs 1536x1024, cold", photo_s, "s", 2.0),
        Result("gradio version", 0, gr.__version__),
        Result("CPU cores / load average when measured", round(os.getloadavg()[0], 2), f"{os.cpu_count()} cores"),
    ]
