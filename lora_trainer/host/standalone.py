"""The standalone host: a checkpoint file, a diffusers pipeline for test grids, local folders."""

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from lora_trainer.errors import UserError
from lora_trainer.training.events import EventBus



def default_user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lora_trainer"


class StandaloneHost:
    name = "standalone"
    can_autotag = False

    def __init__(self, checkpoint: Optional[Path] = None, output_dir: Path = Path("output"), dataset_dir: Optional[Path] = None,
                 user_data: Optional[Path] = None, allowed_roots: Optional[List[Path]] = None, extra_defaults: Optional[dict] = None):
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.output_dir = Path(output_dir)
        self.dataset_dir = dataset_dir
        self._user_data = Path(user_data) if user_data else default_user_data_dir()
        self._roots = allowed_roots
        self._extra = extra_defaults or {}
        self._bundle = None

    def defaults(self) -> dict:
        values = {"model": {"checkpoint": str(self.checkpoint or "")}, "output": {"dir": str(self.output_dir)}}
        if self.dataset_dir:
            values["dataset"] = {"dir": str(self.dataset_dir)}
        for section, extra in self._extra.items():
            values.setdefault(section, {}).update(extra)
        return values

    def user_data_dir(self) -> Path:
        return self._user_data

    def runs_dir(self) -> Optional[Path]:
        return None

    def allowed_roots(self) -> Optional[List[Path]]:
        return self._roots

    def _load(self, config):
        from lora_trainer.models import load_bundle

        key = (config.model.checkpoint, config.model.family, config.model.prediction_type)
        if self._bundle is None or self._bundle[0] != key:
            self._bundle = (key, load_bundle(config.model.checkpoint, family=config.model.family, prediction_type=config.model.prediction_type))
        return self._bundle[1]

    def train(self, config, events: EventBus, should_stop: Callable[[], bool], resume: Optional[Path] = None):
        from lora_trainer.training.distributed import SingleProcess, pick_device
        from lora_trainer.training.trainer import train

        bundle = self._load(config)
        alone = SingleProcess(pick_device(config.train.device))  # the tab trains in its own process, never under a launcher
        return train(config, bundle=bundle, events=events, should_stop=should_stop, resume=resume, processes=alone)

    def render_grid(self, lora_path: Path, prompts: List[str], strengths: List[float], seed: int, steps: int, size: int,
                    checkpoint: Optional[str] = None) -> list:
        from lora_trainer.config import TrainConfig
        from lora_trainer.networks.load import apply_kohya, read_kohya
        from lora_trainer.networks.strength import set_strength
        from lora_trainer.training.sampling import render

        config = TrainConfig()
        config.model.checkpoint = checkpoint or str(self.checkpoint)
        bundle = self._load(config)
        components = {"unet": bundle.unet, **{f"text_encoder_{i}": e for i, e in enumerate(bundle.text_encoders)}}
        adapters = apply_kohya(read_kohya(lora_path), components, bundle.config)
        images = []
        try:
            for strength in strengths:
                set_strength(adapters, strength)
                images.extend(render(bundle, prompts, seed=seed, steps=steps, width=size, height=size))
        finally:
            adapters.remove()
        return images

    def after_save(self, lora_path: Path) -> None:
        pass

    def autotag(self, images: Sequence[Path], method: str, progress=None, should_stop=None) -> list:
        raise UserError("auto-tagging uses the WebUI's interrogators (DeepDanbooru, BLIP): run the tab inside AUTOMATIC1111")
