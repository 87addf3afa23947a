"""The one training job of a server, kept outside any browser session.

A page (re)load, a second browser tab or a lost connection only changes who is watching: the
job lives here, in a background thread, and every page polls `snapshot()`. Only one job runs
at a time; a second Start is refused with a message.
"""

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from lora_trainer.errors import UserError
from lora_trainer.training.events import Event, EventBus, parked_note

LOG_LINES = 400


@dataclass
class JobState:
    status: str = "idle"  # idle | preparing | running | stopping | done | interrupted | failed | nan
    name: str = ""
    step: int = 0
    total: int = 0
    it_s: float = 0.0
    eta_s: float = 0.0
    losses: List[float] = field(default_factory=list)
    samples: List[Dict] = field(default_factory=list)  # {"step": n, "path": str, "prompt": str}
    log: List[str] = field(default_factory=list)
    output: Optional[str] = None
    activation: str = ""  # the LoRA's activation text (its sidecar): what the test grid and txt2img start from
    state_dir: Optional[str] = None
    error: Optional[str] = None
    started: float = 0.0
    version: int = 0  # bumps on every change: cheap "anything new?" checks

    @property
    def active(self) -> bool:
        return self.status in ("preparing", "running", "stopping")


def _activation_text(lora: Path) -> str:
    import json

    try:
        return str(json.loads(Path(lora).with_suffix(".json").read_text(encoding="utf-8")).get("activation text", ""))
    except (OSError, ValueError):
        return ""


class JobManager:
    def __init__(self, host):
        self.host = host
        self.state = JobState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.config = None  # the last job's config: a reloaded page shows it again

    # --- control ------------------------------------------------------------------------
    def start(self, config, resume: Optional[Path] = None) -> None:
        with self._lock:
            if self.state.active:
                raise UserError(f"a training job ({self.state.name}) is already running; stop it first or watch it here")
            self.state = JobState(status="preparing", name=config.output.name, total=config.train.max_steps, started=time.time())
            self._stop.clear()
            self.config = config
        self._thread = threading.Thread(target=self._run, args=(config, resume), name="lora-trainer-job", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self.state.active:
                self.state.status = "stopping"
                self._log("stop requested: saving a resumable state")
        self._stop.set()

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> JobState:
        with self._lock:
            copy = JobState(**{k: (list(v) if isinstance(v, list) else v) for k, v in self.state.__dict__.items()})
        return copy

    # --- the worker ---------------------------------------------------------------------
    def _run(self, config, resume: Optional[Path]) -> None:
        events = EventBus([self._on_event])
        try:
            result = self.host.train(config, events, self._stop.is_set, resume)
            with self._lock:
                self.state.status = result.status
                self.state.output = str(result.output) if result.output else None
                self.state.activation = _activation_text(result.output) if result.output else ""
                self.state.state_dir = str(result.state_dir) if result.state_dir else None
                self._bump()
            if result.output:
                self.host.after_save(Path(result.output))
        except UserError as exc:
            self._fail(str(exc))
        except Exception as exc:  # the server must keep running; the log has the details
            self._fail(f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._log(traceback.format_exc(limit=6))

    def _fail(self, message: str) -> None:
        with self._lock:
            self.state.status, self.state.error = "failed", message
            self._log(f"error: {message}")

    def _on_event(self, event: Event) -> None:
        data = event.data
        with self._lock:
            state = self.state
            if event.kind == "start":
                state.status = "stopping" if self._stop.is_set() else "running"
                state.total, state.step = data.get("total_steps", state.total), data.get("step", 0)
                self._log(f"training {data.get('name')}: {data.get('images')} images, {state.total} steps on {data.get('device')}"
                          + parked_note(data.get("parked")))
            elif event.kind == "step":
                state.step, state.total = data["step"], data["total"]
                state.it_s, state.eta_s = data.get("it_s", 0.0), data.get("eta_s", 0.0)
                state.losses.append(float(data["loss"]))
                if data["step"] % 10 == 0:
                    self._log(f"step {data['step']}/{data['total']} loss {data['loss']:.4f}")
            elif event.kind == "sample":
                for path, prompt in zip(data.get("paths", []), data.get("prompts", [])):
                    state.samples.append({"step": data["step"], "path": path, "prompt": prompt})
                self._log(f"samples at step {data['step']}")
            elif event.kind == "save":
                self._log(f"saved {data['path']}")
            elif event.kind in ("warning", "error"):
                self._log(f"{event.kind}: {data.get('message')}")
            elif event.kind == "done":
                self._log(f"{data.get('status')}" + (f": {data['output']}" if data.get("output") else ""))
            self._bump()

    def _log(self, line: str) -> None:
        self.state.log = (self.state.log + [time.strftime("%H:%M:%S ") + line])[-LOG_LINES:]
        self._bump()

    def _bump(self) -> None:
        self.state.version += 1
