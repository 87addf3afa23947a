"""Security: a network-facing server needs a password and confines folders; no pickle runs; the
engine writes safetensors, JSON, PNG and text only.

The servers are real processes on a free port; the confinement is checked on the tab's own
handlers with real folders and symlinks.
"""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch

from lora_trainer.cli.ui_command import listen_settings
from lora_trainer.errors import CheckpointError
from lora_trainer.host.standalone import StandaloneHost
from lora_trainer.ui.controller import TabController

from .helpers import CHILD_ENV, REPO, cli

PACKAGE = REPO / "lora_trainer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ui(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lora_trainer", "ui", *map(str, args)], cwd=REPO, env=CHILD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_listening_on_the_network_without_a_password_is_refused():
    result = cli("ui", "--listen", "--port", _free_port())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--auth user:password" in result.stderr and "--insecure-no-auth" in result.stderr


def test_insecure_no_auth_starts_only_with_a_warning():
    process = _ui("--listen", "--insecure-no-auth", "--port", _free_port())
    try:
        first = process.stderr.readline()
        assert first.startswith("WARNING: listening on the network without a password")
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()


def _get(url: str, headers=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_with_auth_the_network_server_answers_only_after_a_login(tmp_path):
    port = _free_port()
    process = _ui("--listen", "--auth", "alice:s3cret", "--port", port, "--output", tmp_path / "out")
    url = f"http://127.0.0.1:{port}"
    try:
        status = _first_answer(url + "/config", process)
        assert status == 401, "the tab's config is not served without logging in"
        wrong = urllib.parse.urlencode({"username": "alice", "password": "guess"}).encode()
        assert _post(url + "/login", wrong)[0] == 400
        status, cookie = _post(url + "/login", urllib.parse.urlencode({"username": "alice", "password": "s3cret"}).encode())
        assert status == 200 and cookie
        assert _get(url + "/config", {"Cookie": cookie}) == 200
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()


def _first_answer(url: str, process: subprocess.Popen, timeout: float = 180) -> int:
    """The HTTP status of `url` once the server is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return _get(url)
        except OSError:  # not listening yet
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.5)
    raise AssertionError(f"{url} never answered")


def _post(url: str, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, "; ".join(c.split(";", 1)[0] for c in response.headers.get_all("set-cookie") or [])
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_the_standalone_server_on_the_network_confines_folders_to_its_roots(tmp_path):
    from lora_trainer.__main__ import build_parser

    args = build_parser().parse_args(["ui", "--listen", "--auth", "a:b", "--allowed-root", str(tmp_path)])
    assert listen_settings(args) == (("a", "b"), [tmp_path.resolve()])
    defaults = build_parser().parse_args(["ui", "--listen", "--auth", "a:b"])
    assert listen_settings(defaults)[1] == [Path.cwd().resolve(), Path.home().resolve()]
    assert listen_settings(build_parser().parse_args(["ui"])) == (None, None)  # loopback: the user's own machine


@pytest.fixture
def shared_tab(tmp_path, base_models, tiny_dataset):
    """The tab of a server shared on the network, allowed only under tmp_path/root."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_dataset, root / "data")
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    host = StandaloneHost(base_models["sd1"], root / "out", root / "data", user_data=tmp_path / "user", allowed_roots=[root])
    return TabController(host), root, tmp_path / "outside"


def _values(controller, **changes):
    values = dict(zip(controller.paths, controller.initial_values()))
    values.update({tuple(k.split("__")): v for k, v in changes.items()})
    return [values[p] for p in controller.paths]


def test_a_shared_tab_accepts_folders_under_its_roots(shared_tab):
    controller, root, _ = shared_tab
    _, errors = controller.build_config(_values(controller, output__logs_dir=str(root / "logs")))
    assert errors == []


@pytest.mark.parametrize("field", ["dataset.dir", "dataset.reg_dir", "output.dir", "output.logs_dir", "model.checkpoint"])
@pytest.mark.parametrize("where", ["outside", "symlink", "dotdot"])
def test_a_shared_tab_refuses_any_folder_outside_its_roots(shared_tab, field, where):
    controller, root, outside = shared_tab
    target = {"outside": outside, "symlink": root / "escape", "dotdot": root / "data" / ".." / ".." / "outside"}[where]
    message, errors = controller.start(_values(controller, **{field.replace(".", "__"): str(target)}))
    assert field in {e.path for e in errors}
    assert "only folders under" in next(e.message for e in errors if e.path == field)
    assert controller.poll().status == "idle" and not list(outside.iterdir())


def test_a_shared_tab_reads_no_dataset_lora_or_settings_file_outside_its_roots(shared_tab, tmp_path):
    controller, root, outside = shared_tab
    (outside / "x.safetensors").write_bytes(b"not read")
    (outside / "settings.json").write_text("{}")
    assert "only folders under" in controller.check_dataset(str(root / "escape"))
    images, text = controller.test_grid(str(outside / "x.safetensors"), "a", "1", 1)
    assert images == [] and "only folders under" in text
    values = controller.initial_values()
    assert "only folders under" in controller.import_settings(str(outside / "settings.json"), values)[1]


@pytest.mark.parametrize("where", ["outside", "symlink", "dotdot"])
def test_a_shared_tag_editor_opens_no_folder_outside_its_roots(shared_tab, where):
    from lora_trainer.ui.tag_editor_controller import TagEditorController, View

    controller, root, outside = shared_tab
    (outside / "secret.png").write_bytes((root / "data").rglob("*.png").__next__().read_bytes())
    (outside / "secret.txt").write_text("private caption")
    editor = TagEditorController(controller.host)
    target = {"outside": outside, "symlink": root / "escape", "dotdot": root / "data" / ".." / ".." / "outside"}[where]
    screen = editor.open(View(), str(target))
    assert "only folders under" in (screen.status or "")
    assert editor.session is None  # nothing of the outside folder was read into the editor
    assert editor.open(View(), str(root / "data")).status and editor.session is not None  # inside: opens


class _Payload:
    """A pickle that creates a file when unpickled: what a malicious .bin would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_diffusers_folder_with_a_code_carrying_pickle_is_refused_and_nothing_runs(base_models, tmp_path):
    from lora_trainer.models import load_bundle
    from lora_trainer.models.diffusers_folder import write_diffusers_configs

    bundle = load_bundle(base_models["sd1"])
    folder = tmp_path / "pipeline"
    write_diffusers_configs(bundle.config, folder, tokenizers=bundle.tokenizers)
    bundle.unet.save_pretrained(folder / "unet")
    bundle.vae.save_pretrained(folder / "vae")
    encoder = folder / "text_encoder"
    for stale in encoder.glob("*.safetensors"):
        stale.unlink()
    state = bundle.text_encoders[0].state_dict()
    torch.save(state, encoder / "pytorch_model.bin")  # plain tensors: loads, through weights_only
    again = load_bundle(folder)
    assert all(torch.equal(state[k], v) for k, v in again.text_encoders[0].state_dict().items())

    marker = tmp_path / "code-ran"
    torch.save({**state, "payload": _Payload(marker)}, encoder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused"):
        load_bundle(folder)
    assert not marker.exists()


def _calls(text: str, name: str):
    """The argument text of every `name(...)` call in `text` (parentheses balanced)."""
    start = text.find(name + "(")
    while start >= 0:
        depth, index = 0, start + len(name)
        for index in range(start + len(name), len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                break
        yield text[start + len(name) + 1:index]
        start = text.find(name + "(", index)


def test_every_torch_load_in_the_engine_is_weights_only_and_nothing_pickles():
    loads, offenders = 0, []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for arguments in _calls(text, "torch.load"):
            loads += 1
            if "weights_only=True" not in arguments:
                offenders.append(f"{path.relative_to(REPO)}: torch.load({arguments})")
        for call in ("torch.save(", "pickle.load(", "pickle.loads(", "pickle.dump(", "dill.", "joblib.load("):
            if call in text:
                offenders.append(f"{path.relative_to(REPO)}: {call}")
    assert loads >= 2 and not offenders, offenders
