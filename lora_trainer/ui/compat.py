"""The only place that knows gradio 3.41 (A1111) from 4.x (Forge): keep version branches here."""

from typing import Dict

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def js(code: str) -> Dict[str, str]:
    """Keyword for client-side JS on an event: `_js=` on gradio 3, `js=` on gradio 4."""
    return {"_js": code} if GRADIO_MAJOR < 4 else {"js": code}


def launch_kwargs(auth=None) -> Dict:
    kwargs = {"auth": auth} if auth else {}
    if GRADIO_MAJOR >= 4:
        kwargs["allowed_paths"] = []
    return kwargs


def file_input_type() -> str:
    """`gr.File(type=...)` that hands the handler a path-like: "file" on gradio 3, "filepath" on 4."""
    return "file" if GRADIO_MAJOR < 4 else "filepath"


def uploaded_path(value):
    """The local path of an uploaded file, whatever gradio passed (a temp-file object or a str)."""
    if value is None:
        return None
    return getattr(value, "name", value)


def gallery_kwargs() -> Dict:
    """A display-only gallery: gradio 4 would otherwise offer uploads, and encodes its images
    as WebP by default (JPEG is quicker to make for a page of thumbnails)."""
    return {} if GRADIO_MAJOR < 4 else {"interactive": False, "format": "jpeg"}


def queue_kwargs(workers: int) -> Dict:
    """`Blocks.queue(...)` with `workers` handlers at once (polling must not hold up a click)."""
    return {"concurrency_count": workers} if GRADIO_MAJOR < 4 else {"default_concurrency_limit": workers}
