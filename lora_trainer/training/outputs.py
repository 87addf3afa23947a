"""Where a run writes: the LoRA file and its sidecars, intermediate saves, samples, state.

`<output.dir>/<name>.safetensors` (+ `<name>.json`, `<name>.preview.png`), intermediate
`<name>-step000500.safetensors` with keep-last-N, and under `logs_dir`: samples/, state/,
metrics.jsonl. Every file is written atomically; an existing final file is never replaced
unless the config allows it, and that is checked before any training starts. The first check
also tidies what a killed run left: its temp files, and a state caught mid-replacement.
"""

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

import torch

from lora_trainer.errors import UserError
from lora_trainer.files import clean_stale_temp_files, write_atomically
from lora_trainer.networks.export import save_lora
from lora_trainer.training.state import recover_state

_STEP_FILE = re.compile(r"-step(\d{6,})\.safetensors$")


class OutputWriter:
    def __init__(self, output_dir: Path, name: str, logs_dir: Path, overwrite: bool = False, keep_last: int = 0):
        self.dir = Path(output_dir)
        self.name = name
        self.logs_dir = Path(logs_dir)
        self.overwrite = overwrite
        self.keep_last = keep_last
        self.last_sample: Optional[object] = None
        self.state_saved = False  # whether this run has written a resumable state yet

    @property
    def final_path(self) -> Path:
        return self.dir / f"{self.name}.safetensors"

    @property
    def state_dir(self) -> Path:
        return self.logs_dir / "state"

    @property
    def samples_dir(self) -> Path:
        return self.logs_dir / "samples"

    def check_target(self) -> None:
        """Fail before training, not after, if the LoRA file exists and may not be replaced (reads only)."""
        if self.final_path.exists() and not self.overwrite:
            raise UserError(f"{self.final_path} already exists; choose another output name, or set output.overwrite = true")

    def check_writable(self) -> None:
        """`check_target`, then create the folders (a folder we cannot write fails now too)."""
        self.check_target()
        for folder in (self.dir, self.logs_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the folder {folder}: {exc.strerror}") from exc
        recover_state(self.state_dir)
        for folder in (self.dir, self.logs_dir, self.samples_dir):
            clean_stale_temp_files(folder)

    def intermediate_path(self, step: int) -> Path:
        return self.dir / f"{self.name}-step{step:06d}.safetensors"

    def save_intermediate(self, step: int, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> Path:
        path = save_lora(self.intermediate_path(step), tensors, {**metadata, "ss_output_name": path_stem(self.intermediate_path(step))}, overwrite=True)
        self._prune()
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        saved = sorted(self.dir.glob(f"{glob_escape(self.name)}-step*.safetensors"), key=_step_of)
        for old in saved[:-self.keep_last]:
            old.unlink(missing_ok=True)

    def save_final(self, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str], sidecar: Dict) -> Path:
        path = save_lora(self.final_path, tensors, metadata, overwrite=self.overwrite)
        write_atomically(self.dir / f"{self.name}.json", json.dumps(sidecar, indent=2, ensure_ascii=False).encode("utf-8"))
        if self.last_sample is not None:
            self.save_preview(self.last_sample)
        return path

    def save_preview(self, image) -> Path:
        path = self.dir / f"{self.name}.preview.png"
        write_atomically(path, _png(image))
        return path

    def save_samples(self, step: int, images: List) -> List[Path]:
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, image in enumerate(images):
            path = self.samples_dir / f"step{step:06d}_{index}.png"
            write_atomically(path, _png(image), fsync=False)  # a sample is not worth an fsync per image
            paths.append(path)
        if images:
            self.last_sample = images[0]
        return paths


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def path_stem(path: Path) -> str:
    return Path(path).name[: -len(".safetensors")]


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def _step_of(path: Path) -> int:
    match = _STEP_FILE.search(path.name)
    return int(match.group(1)) if match else -1
