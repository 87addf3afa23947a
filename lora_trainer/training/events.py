"""One stream of events for a run: start, step, sample, save, warning, error, done.

The trainer only emits; the UI, the CLI progress bar, metrics.jsonl and TensorBoard are
listeners. A listener that raises is dropped with a warning, never the run.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

logger = logging.getLogger(__name__)

KINDS = ("start", "step", "sample", "save", "warning", "error", "done")


@dataclass
class Event:
    kind: str
    data: Dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> Dict[str, Any]:
        """A JSON-safe dict (images are replaced by their file paths)."""
        data = {k: v for k, v in self.data.items() if k != "images"}
        return {"event": self.kind, "time": round(self.time, 3), **data}


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self, listeners: List[Listener] = ()):
        self.listeners: List[Listener] = list(listeners)

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        """Detach `listener` (no error if it is gone already, e.g. dropped after a failure)."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def emit(self, kind: str, **data: Any) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = Event(kind, data)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not end the run
                logger.warning("event listener %r failed and was removed: %s", listener, exc)
                self.listeners.remove(listener)
        return event

    def warning(self, message: str) -> None:
        self.emit("warning", message=message)


_PARKED_NAMES = {"vae": "VAE", "text_encoders": "text encoder(s)"}


def parked_note(parked) -> str:
    """What a "start" event's `parked` list means, for a log line ("" when nothing is parked)."""
    names = [_PARKED_NAMES.get(name, name) for name in parked or []]
    return f" ({' and '.join(names)} parked in RAM)" if names else ""
