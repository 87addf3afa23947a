"""Faults on real processes and real files: kill -9 mid-write, a full disk, NaN mid-run.

What a user would check afterwards: every file that is there loads, nothing they had is lost
or half-written, the next start leaves no temp files, and a killed run resumed from its last
state ends exactly where an uninterrupted run ends.
"""

import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from safetensors import safe_open

from lora_trainer.networks.load import read_kohya
from .helpers import CHILD_ENV, REPO, cli, leftovers, popen, tiny_config

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals, /proc and RLIMIT_FSIZE as on Linux")


def _temps(folders: List[Path]) -> List[Path]:
    found = []
    for folder in folders:
        try:
            found += [Path(e.path) for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith((".tmp", ".old"))]
        except FileNotFoundError:
            pass
    return found


def _wait_stopped(pid: int) -> None:
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
        time.sleep(0.0005)


def freeze_mid_write(process: subprocess.Popen, folders: List[Path], ready: Callable[[], bool] = lambda: True,
                     timeout: float = 240) -> List[Path]:
    """Stop `process` (SIGSTOP) at a moment when one of its temp files exists in `folders`, once
    `ready()` has been true: a SIGKILL then lands while it is writing. Returns those temp files."""
    deadline, armed = time.monotonic() + timeout, False
    while time.monotonic() < deadline and process.poll() is None:
        armed = armed or ready()
        if armed and _temps(folders):
            os.kill(process.pid, signal.SIGSTOP)
            _wait_stopped(process.pid)
            caught = _temps(folders)
            if caught:
                return caught
            os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.0002)
    raise AssertionError(f"the process never showed a temp file in {folders} (exit code {process.poll()})")


def _kill(process: subprocess.Popen) -> None:
    process.kill()  # SIGKILL, delivered even to a stopped process
    process.wait(timeout=30)
    process.stderr.close()


def _tensors(path: Path):
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_kill_9_while_saving_keeps_every_file_loadable_and_resume_matches_an_uninterrupted_run(
        tmp_path, base_models, tiny_dataset, config_file, one_thread):
    from lora_trainer.training.trainer import train

    steps = 16
    settings = dict(train={"max_steps": steps}, dataset={"flip": True},
                    output={"save_every_steps": 1, "save_state_every_steps": 1, "keep_last": 3})
    reference = train(tiny_config(base_models["sd1"], tiny_dataset, tmp_path / "reference", **settings))

    path, config = config_file(**settings)
    out, logs = Path(config.output.dir), config.logs_dir
    after = random.Random().randint(2, steps - 4)  # kill during the first write after this step's save
    process = popen("train", path)
    caught = freeze_mid_write(process, [out, logs], ready=lambda: (out / f"tiny-step{after:06d}.safetensors").exists())
    _kill(process)

    assert all(p.exists() for p in caught), "the kill left the temp file of the interrupted write"
    saved = sorted(out.glob("tiny-step*.safetensors"))
    assert saved and not (out / "tiny.safetensors").exists()
    for lora in saved:  # every file there is whole: safetensors parses it and our loader reads it
        network = read_kohya(lora)
        assert len(network.modules) == len(read_kohya(reference.output).modules), lora.name

    resumed = cli("train", path, "--resume", logs / "state", "--quiet")
    assert resumed.returncode == 0, f"killed after step {after}: {resumed.stderr}"
    assert leftovers(tmp_path) == [], "the next start removes what the killed run left"
    a, b = _tensors(reference.output), _tensors(out / "tiny.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), f"killed after step {after}: {key} differs"


def _caption_dataset(root: Path, count: int) -> dict:
    from PIL import Image

    folder = root / "1_many"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "0.png")
    png = (folder / "0.png").read_bytes()
    originals = {}
    for index in range(count):
        (folder / f"{index}.png").write_bytes(png)
        caption = folder / f"{index}.txt"
        caption.write_bytes(f"subject, tag{index % 97}, detail {index}".encode())
        originals[caption] = caption.read_bytes()
    return originals


def test_kill_9_while_the_tags_cli_rewrites_captions_loses_nothing(tmp_path):
    originals = _caption_dataset(tmp_path / "data", 3000)
    folder = tmp_path / "data" / "1_many"
    process = popen("tags", "add", tmp_path / "data", "hardened")
    caught = freeze_mid_write(process, [folder], ready=lambda: (tmp_path / "data" / ".lora_trainer" / "history").is_dir())
    _kill(process)

    assert all(p.exists() for p in caught)
    written = 0
    for caption, before in originals.items():
        now = caption.read_bytes()
        assert now in (before, before + b", hardened"), f"{caption.name} is neither the old nor the new caption: {now!r}"
        written += now != before

    undo = cli("tags", "undo", tmp_path / "data")  # the next start: it tidies up, then reverts the killed edit
    assert "Traceback" not in undo.stderr, undo.stderr
    assert leftovers(tmp_path / "data") == []
    assert {caption: caption.read_bytes() for caption in originals} == originals, f"{written} were written before the kill"


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_during_the_save_is_a_clear_error_and_the_previous_file_survives(config_file):
    path, config = config_file(train={"max_steps": 2}, output={"overwrite": True})
    first = cli("train", path, "--quiet")
    assert first.returncode == 0, first.stderr
    target = Path(config.output.dir) / "tiny.safetensors"
    previous = target.read_bytes()

    result = subprocess.run([sys.executable, "-m", "lora_trainer", "train", str(path), "--quiet"], cwd=REPO, env=CHILD_ENV,
                            capture_output=True, text=True, preexec_fn=_file_size_limit(len(previous) // 2))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"could not write {target}" in result.stderr and "file-size limit" in result.stderr
    assert "previous version of that file is unchanged" in result.stderr
    assert target.read_bytes() == previous
    assert leftovers(Path(config.output.dir)) == []


def test_a_full_disk_while_saving_the_state_keeps_the_previous_state_resumable(config_file):
    from lora_trainer.training.state import load_state

    path, config = config_file(train={"max_steps": 4})
    assert cli("train", path, "--quiet").returncode == 0
    state = config.logs_dir / "state"
    lora_bytes = (Path(config.output.dir) / "tiny.safetensors").stat().st_size  # fp16; the state's adapters are fp32
    result = subprocess.run([sys.executable, "-m", "lora_trainer", "train", str(path), "--quiet", "--resume", str(state),
                             "--set", "train.max_steps=8", "--set", "output.save_state_every_steps=2", "--set", "output.overwrite=true"],
                            cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, preexec_fn=_file_size_limit(lora_bytes * 3 // 2))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"could not write {state}" in result.stderr
    assert load_state(state)[2].step == 4, "the last good state is still there and loads"
    assert leftovers(config.logs_dir) == []


def test_a_nan_gradient_stops_the_run_and_no_saved_file_holds_nan(base_models, tiny_dataset, tmp_path, one_thread):
    """The loss of the poisoned step still looks fine; its update is what turns the weights NaN."""
    from lora_trainer.models import load_bundle
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.trainer import train

    config = tiny_config(base_models["sd1"], tiny_dataset, tmp_path / "out", output={"save_every_steps": 2})
    bundle = load_bundle(config.model.checkpoint)

    def poison_gradients(event) -> None:
        if event.kind == "step" and event.data["step"] == 5:
            trainable = next(p for p in bundle.unet.parameters() if p.requires_grad)
            trainable.register_hook(lambda grad: torch.full_like(grad, float("nan")))

    result = train(config, bundle=bundle, events=EventBus([poison_gradients]))
    assert result.status == "nan" and result.output is None
    saved = sorted(Path(config.output.dir).glob("tiny*.safetensors"))
    assert [p.name for p in saved] == ["tiny-step000002.safetensors", "tiny-step000004.safetensors"]
    for lora in saved:
        assert all(math.isfinite(float(t.float().abs().max())) for t in _tensors(lora).values()), lora.name
    assert not any(p.requires_grad for p in bundle.unet.parameters())  # adapters removed


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_state_caught_between_its_two_renames_is_put_back_the_newest_first(tmp_path):
    """A kill between "state -> .state.<pid>.old" and ".state.<pid>.tmp -> state" leaves no state
    folder at all; the next start must find the complete one instead of losing the run."""
    from lora_trainer.training.state import STATE_FILES, recover_state

    pid = _dead_pid()
    for tag, step in (("old", 4), ("tmp", 5)):
        folder = tmp_path / f".state.{pid}.{tag}"
        folder.mkdir()
        for name in STATE_FILES:
            (folder / name).write_text('{"step": %d}' % step)
    half = tmp_path / f".other.{pid}.tmp"
    half.mkdir()
    assert recover_state(tmp_path / "state") == tmp_path / "state"
    assert (tmp_path / "state" / "state.json").read_text() == '{"step": 5}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


_PRESET_WRITER = """
import sys
from lora_trainer.config import save_user_preset, TrainConfig
config = TrainConfig()
config.dataset.dir = "x" * 40_000_000  # a big file: the write takes long enough to be caught mid-way
while True:
    save_user_preset(sys.argv[1], "mine", config, include_run_specific=True)
"""


def test_kill_9_while_saving_a_preset_keeps_the_old_one_and_the_next_save_removes_the_temp(tmp_path):
    from lora_trainer.config import TrainConfig, list_presets, load_preset, save_user_preset

    folder = tmp_path / "presets"
    old = TrainConfig()
    old.train.unet_lr = 3e-4
    save_user_preset(folder, "mine", old)
    process = subprocess.Popen([sys.executable, "-c", _PRESET_WRITER, str(folder)], cwd=REPO, env=CHILD_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = freeze_mid_write(process, [folder])
    _kill(process)

    assert all(str(process.pid) in p.name for p in caught), caught  # the writer's pid names its temp
    assert "mine" in list_presets(folder)
    survivor = load_preset("mine", folder)  # the old preset or a complete new one, never half of one
    assert survivor["train"]["unet_lr"] == 3e-4 or len(survivor["dataset"]["dir"]) == 40_000_000

    save_user_preset(folder, "other", old)  # the next save tidies the folder
    assert _temps([folder]) == []
