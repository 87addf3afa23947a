"""The Host protocol: everything the tab needs from where it runs (A1111, Forge, standalone).

The UI talks only to a Host. The standalone host loads a checkpoint file and renders with a
diffusers pipeline; the A1111 host (`host/a1111.py`) wraps the WebUI's loaded model, its GPU
lock, progress and Lora list.
"""

from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from lora_trainer.training.events import EventBus
from lora_trainer.training.trainer import RunResult


class Host(Protocol):
    name: str  # "standalone", "a1111"

    def defaults(self) -> dict:
        """Partial config the form starts with (checkpoint, output folder, ...)."""

    def user_data_dir(self) -> Path:
        """Where user presets are kept."""

    def runs_dir(self) -> Optional[Path]:
        """Where a run's logs, samples and resumable state go unless the form names a folder;
        None = beside the LoRA (`<output.dir>/<name>_logs`)."""

    def allowed_roots(self) -> Optional[List[Path]]:
        """Folders the UI may read and write when shared on a network; None = anywhere."""

    def train(self, config, events: EventBus, should_stop: Callable[[], bool], resume: Optional[Path] = None) -> RunResult:
        """Run one training job to the end (in the calling thread)."""

    def render_grid(self, lora_path: Path, prompts: List[str], strengths: List[float], seed: int, steps: int,
                    size: int) -> list:
        """Images of `prompts` with the LoRA at each strength (row-major: prompt, strength)."""

    def after_save(self, lora_path: Path) -> None:
        """Make a new LoRA usable at once (refresh the WebUI's list)."""

    @property
    def can_autotag(self) -> bool:
        """Whether interrogators (DeepDanbooru/BLIP) are available."""

    def autotag(self, images: Sequence[Path], method: str, progress: Optional[Callable[[int, int], None]] = None,
                should_stop: Optional[Callable[[], bool]] = None) -> List[Optional[List[Tuple[str, float]]]]:
        """Scored tags per image from the host's interrogators, in order: `method` "deepdanbooru"
        gives `[(tag, probability), ...]` (every tag over a low floor: the caller applies the
        threshold), "blip" gives `[(caption, 1.0)]`; None for an image that cannot be read.
        `progress(done, total)` after each image; stops early (a shorter list) once
        `should_stop()` is true. Raises `UserError` where auto-tagging is not possible (no
        WebUI, or a training job holds the GPU)."""
