"""The A1111 host's auto-tag glue, against a stand-in for the WebUI's `modules`.

Real A1111 is not installed here, so these stand-ins record what the glue calls: the
DeepDanbooru model (a torch module with fixed outputs), the BLIP interrogator, the GPU lock,
`shared.state`. What is checked is the glue's own behaviour: scores and formatting the tag
editor gets, the lock held while models run, no run while a LoRA trains, stop and Interrupt.
"""

import contextlib
import importlib
import sys
import threading
import types

import pytest

from dataset.files import png  # tests/ is on sys.path (rootdir-relative packages)
from lora_trainer.errors import UserError

pytestmark = pytest.mark.both_profiles


class State:
    def __init__(self):
        self.job, self.interrupted, self.job_count, self.job_no, self.textinfo = "", False, 0, 0, ""
        self.jobs = []

    def begin(self, job=""):
        self.job = job
        self.jobs.append(job)

    def end(self):
        self.job = ""


@pytest.fixture
def webui(monkeypatch):
    import torch

    lock = threading.Lock()
    calls = []
    class Danbooru(torch.nn.Module):
        tags = ["long_hair", "rating:safe", "smile", "watermark", "poster_(object)", "faint"]

        def forward(self, x):
            calls.append(("deepbooru forward", lock.locked(), tuple(x.shape)))
            return torch.tensor([[0.9, 0.99, 0.6, 0.8, 0.7, 0.01]])

    deepbooru_model = types.SimpleNamespace(model=Danbooru(), start=lambda: calls.append("deepbooru start"),
                                            stop=lambda: calls.append("deepbooru stop"))

    class Interrogator:
        """The WebUI's: BLIP and CLIP; a caption needs BLIP alone (load() would also load CLIP)."""

        blip_model, running_on_cpu, dtype = None, True, None

        def load(self):
            calls.append("clip load")  # must not happen: a caption does not need CLIP

        def load_blip_model(self):
            calls.append("blip load")
            return torch.nn.Linear(2, 2)

        def generate_caption(self, pil):
            calls.append(("blip caption", lock.locked(), pil.mode, self.dtype))
            return "a red circle on a plain background"

        def send_blip_to_ram(self):
            calls.append("blip to ram")

    shared = types.SimpleNamespace(
        state=State(), interrogator=Interrogator(), cmd_opts=types.SimpleNamespace(lowvram=False, medvram=False, no_half=True),
        opts=types.SimpleNamespace(deepbooru_use_spaces=True, deepbooru_escape=True, deepbooru_filter_tags="watermark"))
    devices = types.SimpleNamespace(device="cpu", device_interrogate="cpu", fp8=False, autocast=contextlib.nullcontext,
                                    torch_gc=lambda: calls.append("torch_gc"))
    images = types.SimpleNamespace(resize_image=lambda mode, image, w, h: image.resize((w, h)))
    package = types.ModuleType("modules")
    parts = {"call_queue": types.SimpleNamespace(queue_lock=lock), "devices": devices, "shared": shared,
             "extra_networks": types.SimpleNamespace(), "processing": types.SimpleNamespace(), "images": images,
             "deepbooru": types.SimpleNamespace(model=deepbooru_model), "lowvram": types.SimpleNamespace()}
    for name, module in parts.items():
        setattr(package, name, module)
        monkeypatch.setitem(sys.modules, f"modules.{name}", module)
    monkeypatch.setitem(sys.modules, "modules", package)
    monkeypatch.delitem(sys.modules, "lora_trainer.host.a1111", raising=False)
    a1111 = importlib.import_module("lora_trainer.host.a1111")
    yield a1111, shared, calls
    sys.modules.pop("lora_trainer.host.a1111", None)


def test_deepdanbooru_scores_formatted_as_the_webui_settings_say_under_its_lock(webui, tmp_path):
    a1111, shared, calls = webui
    images = [png(tmp_path / "a.png", (64, 48)), tmp_path / "missing.png", png(tmp_path / "b.png")]
    progress = []
    host = a1111.A1111Host()
    assert host.can_autotag
    results = host.autotag(images, "deepdanbooru", progress=lambda done, total: progress.append((done, total)))
    expected = [("long hair", 0.9), ("smile", 0.6), ("poster \\(object\\)", 0.7)]  # no rating, no filtered, no noise
    assert [[(t, round(s, 3)) for t, s in r] if r else r for r in results] == [expected, None, expected]
    assert calls[0] == "deepbooru start" and "deepbooru stop" in calls
    assert all(c[1] for c in calls if isinstance(c, tuple))  # the model ran with the WebUI's GPU lock held
    assert [c[2] for c in calls if isinstance(c, tuple)][0] == (1, 512, 512, 3)
    assert progress == [(1, 3), (2, 3), (3, 3)] and shared.state.jobs == ["train_lora_autotag"] and shared.state.job == ""


def test_blip_captions_and_stop(webui, tmp_path):
    import torch

    a1111, shared, calls = webui
    images = [png(tmp_path / f"{n}.png") for n in range(5)]
    seen = []

    def stop():
        return len(seen) >= 2

    results = a1111.A1111Host().autotag(images, "blip", progress=lambda done, total: seen.append(done), should_stop=stop)
    assert results == [[("a red circle on a plain background", 1.0)]] * 2
    assert calls[0] == "blip load" and calls[-2:] == ["blip to ram", "torch_gc"] and "clip load" not in calls
    assert all(c[3] == torch.float32 for c in calls if isinstance(c, tuple))  # the image is cast to BLIP's dtype


def test_refused_while_a_lora_trains_and_interrupt_is_honoured(webui, tmp_path):
    a1111, shared, calls = webui
    images = [png(tmp_path / f"{n}.png") for n in range(3)]
    shared.state.job = "train_lora"
    with pytest.raises(UserError, match="training"):
        a1111.A1111Host().autotag(images, "blip")
    assert calls == []
    shared.state.job = ""
    shared.state.interrupted = True
    assert a1111.A1111Host().autotag(images, "blip") == []
    with pytest.raises(UserError, match="not known"):
        a1111.A1111Host().autotag(images, "clip")
