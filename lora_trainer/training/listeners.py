"""Event listeners for headless use: metrics.jsonl, console progress, JSON events, TensorBoard."""

import json
import sys
from pathlib import Path
from typing import IO, Optional

from lora_trainer.errors import UserError
from lora_trainer.training.events import Event, parked_note


class MetricsWriter:
    """`metrics.jsonl`: one JSON object per step (step, loss, lr, ...), flushed each line."""

    def __init__(self, logs_dir: Path):
        Path(logs_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(logs_dir) / "metrics.jsonl"
        self._handle: Optional[IO[str]] = None

    def __call__(self, event: Event) -> None:
        if event.kind == "step":
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(json.dumps(event.to_json()) + "\n")
            self._handle.flush()
        elif event.kind == "done":
            self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ConsoleProgress:
    """A tqdm bar on a terminal; plain lines (no carriage returns) in logs and notebooks' files."""

    def __init__(self, stream: IO[str] = sys.stderr, quiet: bool = False, every: int = 10):
        self.stream = stream
        self.quiet = quiet
        self.every = every
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._bar = None

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.kind in ("warning", "error"):
            self._print(f"{event.kind}: {data.get('message', '')}")
            return
        if event.kind == "done":
            self._close_bar()
            self._print(f"{data.get('status', 'done')}: {data.get('output') or ''}".rstrip(": "))
            return
        if self.quiet:
            return
        if event.kind == "start":
            processes = int(data.get("processes", 1))
            where = f"{data.get('device')}" + (f" (x {processes} processes)" if processes > 1 else "")
            self._print(f"training {data.get('name', '')}: {data.get('total_steps')} steps on {where}" + parked_note(data.get("parked")))
            if self.tty:
                from tqdm import tqdm

                self._bar = tqdm(total=data.get("total_steps"), initial=data.get("step", 0), file=self.stream, unit="step")
        elif event.kind == "step":
            if self._bar is not None:
                self._bar.update(data["step"] - self._bar.n)
                self._bar.set_postfix(loss=f"{data['loss']:.4f}", lr=f"{data['lr']:.2e}")
            elif data["step"] % self.every == 0 or data["step"] == data.get("total"):
                self._print(f"step {data['step']}/{data['total']} loss {data['loss']:.4f} lr {data['lr']:.2e} "
                            f"{data.get('it_s', 0):.2f} it/s eta {data.get('eta_s', 0):.0f}s")
        elif event.kind == "save":
            self._print(f"saved {data.get('path')}")
        elif event.kind == "sample":
            self._print(f"samples at step {data.get('step')}: {', '.join(data.get('paths', []))}")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonEvents:
    """`--json-events`: every event as one JSON line on stdout, for machine consumers."""

    def __init__(self, stream: IO[str] = sys.stdout):
        self.stream = stream

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_json(), default=str) + "\n")
        self.stream.flush()


class TensorBoardWriter:
    """Loss, lr, it/s and sample images as TensorBoard events in `logs_dir` (optional dependency).

    Scalars `loss`, `lr`, `it_per_s` per step; images `sample_<n>` (one per prompt) at each sample
    step. Created by the trainer when `[output] tensorboard = true`, on rank 0 only.
    """

    def __init__(self, logs_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise UserError(
                "[output] tensorboard = true needs the tensorboard package: pip install tensorboard "
                "(or set tensorboard = false)"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(logs_dir))

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.kind == "step":
            step = data["step"]
            self.writer.add_scalar("loss", data["loss"], step)
            self.writer.add_scalar("lr", data["lr"], step)
            if "it_s" in data:
                self.writer.add_scalar("it_per_s", data["it_s"], step)
        elif event.kind == "sample":
            import numpy as np

            for index, image in enumerate(data.get("images", [])):
                self.writer.add_image(f"sample_{index}", np.asarray(image), data["step"], dataformats="HWC")
        elif event.kind == "done":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
