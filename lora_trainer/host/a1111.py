"""The A1111 host: train on the WebUI's loaded checkpoint, zero copy, under its GPU lock.

The only module that imports A1111's `modules`. It turns `shared.sd_model` into a ModelBundle
(views of the live weights), runs the job under `call_queue.queue_lock` so generation waits,
mirrors progress into `shared.state`, honours Interrupt, checks every step that the model is
still the one captured, and refreshes the Lora list afterwards. Everything below it is tested
for real in CI; this file needs a WebUI (`tests/integration/test_a1111.py`).
"""

from pathlib import Path
from typing import Callable, List, Optional

from modules import call_queue, devices, extra_networks, processing, shared

from lora_trainer.errors import UserError
from lora_trainer.training.events import Event, EventBus

SETTINGS_SECTION = ("lora_trainer", "LoRA Trainer")


def _lora_dir() -> Path:
    return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(shared.models_path) / "Lora")


def _refuse_unsupported(model) -> None:
    if getattr(model, "is_sd3", False):
        raise UserError("the loaded model is SD3; LoRA training supports SD1.x, SD2.x and SDXL checkpoints")
    if getattr(shared.cmd_opts, "lowvram", False) or getattr(model, "lowvram", False):
        raise UserError("training is not possible with --lowvram (layers move between devices); restart without it or use --medvram")
    if getattr(devices, "fp8", False):
        raise UserError("the model is stored in fp8 (Settings > Optimizations > FP8 weight); turn that off to train")
    first = getattr(getattr(model, "model", None), "diffusion_model", None)
    if first is not None and first.input_blocks[0][0].weight.shape[1] != 4:
        raise UserError("the loaded model is an inpainting/edit model; load a regular checkpoint to train")


def capture_bundle(model):
    """A ModelBundle whose tensors are views of the loaded model's (no second copy)."""
    from lora_trainer.models import load_bundle

    _refuse_unsupported(model)
    family = "sdxl" if model.is_sdxl else "sd2" if model.is_sd2 else "sd1"
    prediction = "v_prediction" if getattr(model, "parameterization", "eps") == "v" else "epsilon"
    bundle = load_bundle(model.state_dict(), family=family, prediction_type=prediction)
    info = getattr(model, "sd_checkpoint_info", None)
    if info is not None:
        bundle.name = getattr(info, "name_for_extra", "") or bundle.name
        bundle.sha256 = getattr(info, "sha256", "") or ""
    return bundle


def _deactivate_other_networks() -> None:
    """Other LoRAs/hypernetworks must not be merged into the weights we train on."""
    p = processing.StableDiffusionProcessingTxt2Img()
    extra_networks.activate(p, {})


def _reset_lora_caches(stem: str) -> None:
    """A re-trained name must not reuse stale merged weights or cached conditioning."""
    try:
        import networks  # A1111's built-in Lora extension

        for module in shared.sd_model.modules():
            if getattr(module, "network_current_names", ()):
                networks.network_restore_weights_from_backup(module)
                module.network_current_names = ()
        networks.update_available_networks_by_names([stem])
    except Exception:
        pass
    for cls in (processing.StableDiffusionProcessing, processing.StableDiffusionProcessingTxt2Img):
        for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            if hasattr(cls, name):
                setattr(cls, name, [None, None])


class A1111Host:
    name = "a1111"
    can_send_to_txt2img = True

    @property
    def can_autotag(self) -> bool:
        return True

    def defaults(self) -> dict:
        info = getattr(shared.sd_model, "sd_checkpoint_info", None)
        return {"model": {"checkpoint": getattr(info, "filename", "")}, "output": {"dir": str(_lora_dir())}}

    def user_data_dir(self) -> Path:
        return Path(shared.data_path) / "lora_trainer"

    def allowed_roots(self) -> Optional[List[Path]]:
        shared_server = getattr(shared.cmd_opts, "listen", False) or getattr(shared.cmd_opts, "share", False)
        if not shared_server:
            return None
        return [Path(shared.data_path).resolve(), Path.home().resolve()]

    def train(self, config, events: EventBus, should_stop: Callable[[], bool], resume: Optional[Path] = None):
        from lora_trainer.training.distributed import SingleProcess, pick_device
        from lora_trainer.training.trainer import train

        with call_queue.queue_lock:
            shared.state.begin(job="train_lora")
            try:
                model = shared.sd_model
                info = getattr(model, "sd_checkpoint_info", None)
                config.model.checkpoint = getattr(info, "filename", config.model.checkpoint)
                _deactivate_other_networks()
                bundle = capture_bundle(model)
                events.add(self._progress_listener)

                def stop() -> bool:
                    return should_stop() or bool(shared.state.interrupted)

                def model_changed() -> Optional[str]:
                    if shared.sd_model is not model:
                        return "the WebUI's checkpoint was changed or unloaded during training"
                    return None

                alone = SingleProcess(pick_device(config.train.device))  # the WebUI's process, whatever its environment says
                return train(config, bundle=bundle, events=events, should_stop=stop, check_model=model_changed, resume=resume,
                             processes=alone)
            finally:
                shared.state.end()
                devices.torch_gc()

    @staticmethod
    def _progress_listener(event: Event) -> None:
        state = shared.state
        if event.kind == "start":
            state.job_count = int(event.data.get("total_steps", 0))
        elif event.kind == "step":
            state.job_no = int(event.data["step"])
            state.textinfo = f"Training LoRA: step {event.data['step']}/{event.data['total']}, loss {event.data['loss']:.4f}"
        elif event.kind == "sample" and event.data.get("images"):
            state.assign_current_image(event.data["images"][0])

    def render_grid(self, lora_path: Path, prompts: List[str], strengths: List[float], seed: int, steps: int, size: int) -> list:
        stem = Path(lora_path).stem
        images = []
        with call_queue.queue_lock:
            for strength in strengths:
                for prompt in prompts:
                    p = processing.StableDiffusionProcessingTxt2Img(
                        sd_model=shared.sd_model, prompt=f"{prompt} <lora:{stem}:{strength:g}>", negative_prompt="",
                        steps=steps, cfg_scale=7, width=size, height=size, seed=seed, batch_size=1, n_iter=1,
                        do_not_save_samples=True, do_not_save_grid=True,
                        override_settings={"sd_model_checkpoint": shared.sd_model.sd_checkpoint_info.title},
                    )
                    try:
                        images.extend(processing.process_images(p).images)
                    finally:
                        p.close()
        return images

    def after_save(self, lora_path: Path) -> None:
        _reset_lora_caches(Path(lora_path).stem)


def on_ui_tabs():
    from lora_trainer.ui.tab import build_tab

    return [(build_tab(A1111Host()), "Train LoRA", "train_lora")]


def on_ui_settings():
    shared.opts.add_option(
        "lora_trainer_allowed_roots",
        shared.OptionInfo("", "Train LoRA: folders allowed when the WebUI is shared (--listen/--share); one per line",
                          section=SETTINGS_SECTION),
    )
