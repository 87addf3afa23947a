"""The A1111 host: train on the WebUI's loaded checkpoint, zero copy, under its GPU lock.

The only module that imports A1111's `modules`. It turns `shared.sd_model` into a ModelBundle
(views of the live weights), runs the job under `call_queue.queue_lock` so generation waits,
mirrors progress into `shared.state`, honours Interrupt, checks every step that the model is
still the one captured, and refreshes the Lora list afterwards. Everything below it is tested
for real in CI; this file needs a WebUI (`tests/integration/test_a1111.py`).
"""

from pathlib import Path
from typing import Callable, List, Optional

from modules import call_queue, devices, extra_networks, lowvram, processing, shared

from lora_trainer.errors import UserError
from lora_trainer.training.events import Event, EventBus

SETTINGS_SECTION = ("lora_trainer", "LoRA Trainer")


def _lora_dir() -> Path:
    return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(shared.models_path) / "Lora")


def _refuse_unsupported(model) -> None:
    if getattr(model, "is_sd3", False):
        raise UserError("the loaded model is SD3; LoRA training supports SD1.x, SD2.x and SDXL checkpoints")
    if getattr(shared.cmd_opts, "lowvram", False):  # not `model.lowvram`: --medvram sets that too
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
    bundle.storage_owners = list(model.parameters()) + list(model.buffers())  # they follow a parked VAE / text encoder
    bundle.tokenizers = [theirs or ours for theirs, ours in zip(_webui_clip_tokenizers(model), bundle.tokenizers)]
    info = getattr(model, "sd_checkpoint_info", None)
    if info is not None:
        bundle.name = getattr(info, "name_for_extra", "") or bundle.name
        bundle.sha256 = getattr(info, "sha256", "") or ""
    return bundle


def _webui_clip_tokenizers(model) -> list:
    """The WebUI's own transformers CLIP tokenizer for each text encoder (None where it uses
    open_clip's): captions are then split into ids exactly as the WebUI splits prompts."""
    if getattr(model, "is_sdxl", False):
        embedders = list(getattr(getattr(model, "conditioner", None), "embedders", []))[:2]
    else:
        embedders = [getattr(model, "cond_stage_model", None)]
    found = []
    for embedder in embedders:
        tokenizer = getattr(getattr(embedder, "wrapped", embedder), "tokenizer", None)
        found.append(tokenizer if hasattr(tokenizer, "bos_token_id") and callable(tokenizer) else None)
    return found


def _restore_unmerged_weights(model) -> None:
    """A1111 merges LoRAs into the weights in place and restores them lazily: restore them now."""
    try:
        import networks  # A1111's built-in Lora extension (on sys.path inside the WebUI)
    except ImportError:
        return
    import torch

    with torch.no_grad():  # the WebUI's parameters require grad; A1111 itself restores under no_grad
        for module in model.modules():
            if getattr(module, "network_current_names", ()):
                networks.network_restore_weights_from_backup(module)
                module.network_current_names = ()


def _deactivate_other_networks(model) -> None:
    """Other LoRAs/hypernetworks must be neither merged into the weights we train on nor applied."""
    extra_networks.activate(processing.StableDiffusionProcessingTxt2Img(), {})
    _restore_unmerged_weights(model)


def _medvram(model) -> bool:
    opts = shared.cmd_opts
    return bool(getattr(opts, "medvram", False) or (getattr(opts, "medvram_sdxl", False) and getattr(model, "is_sdxl", False)))


def _apply_medvram_policy(model, config, events: EventBus) -> None:
    """--medvram swaps modules between devices on every forward: train the UNet only, resident.

    Everything goes to the CPU first; latents and text outputs are computed once before the
    loop (frozen text encoders are cached per caption), and the UNet then stays on the GPU.
    """
    if not _medvram(model):
        return
    lowvram.send_everything_to_cpu()
    config.dataset.cache_latents = True
    if config.network.train_text_encoder:
        config.network.train_text_encoder = False
        events.warning("--medvram: training the UNet only (text encoder outputs are precomputed); "
                       "restart without --medvram to train the text encoder too")


def _reset_lora_caches(stem: str) -> None:
    """A re-trained name must not reuse stale merged weights or cached conditioning."""
    _restore_unmerged_weights(shared.sd_model)
    try:
        import networks

        networks.update_available_networks_by_names([stem])
    except ImportError:
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
        model = {"checkpoint": getattr(info, "filename", "")}
        if not getattr(shared.sd_model, "is_sdxl", False):  # SDXL always uses the penultimate layers
            model["clip_skip"] = int(getattr(shared.opts, "CLIP_stop_at_last_layers", 1) or 1)  # as the user generates
        return {"model": model, "output": {"dir": str(_lora_dir())}}

    def user_data_dir(self) -> Path:
        return Path(shared.data_path) / "lora_trainer"

    def runs_dir(self) -> Optional[Path]:
        """Not inside the Lora folder: the WebUI would list the state's .safetensors as cards."""
        return self.user_data_dir() / "runs"

    def allowed_roots(self) -> Optional[List[Path]]:
        """None (anywhere) on a local WebUI; when it is shared, the folders of the
        `lora_trainer_allowed_roots` setting, by default the WebUI's folders and the home folder."""
        from lora_trainer.host.roots import is_shared_server, parse_roots

        if not is_shared_server(shared.cmd_opts):
            return None
        defaults = [Path(getattr(shared, "script_path", shared.data_path)), Path(shared.data_path), Path.home()]
        return parse_roots(getattr(shared.opts, "lora_trainer_allowed_roots", ""), defaults)

    def train(self, config, events: EventBus, should_stop: Callable[[], bool], resume: Optional[Path] = None):
        from lora_trainer.training.distributed import SingleProcess, pick_device
        from lora_trainer.training.trainer import train

        with call_queue.queue_lock:
            shared.state.begin(job="train_lora")
            try:
                model = shared.sd_model
                info = getattr(model, "sd_checkpoint_info", None)
                config.model.checkpoint = getattr(info, "filename", config.model.checkpoint)
                config.train.device = str(devices.device)
                _deactivate_other_networks(model)
                _apply_medvram_policy(model, config, events)
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
                             processes=alone, offload=_offload_setting())
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

    def autotag(self, images, method: str, progress=None, should_stop=None) -> list:
        return _autotag(images, method, progress, should_stop)

    def after_save(self, lora_path: Path) -> None:
        """Make the card and `<lora:name:w>` work now; give the card a preview if training made none."""
        lora_path = Path(lora_path)
        _reset_lora_caches(lora_path.stem)
        preview = lora_path.with_name(f"{lora_path.stem}.preview.png")
        if not preview.exists():
            size, activation = _preview_settings(lora_path)
            images = self.render_grid(lora_path, [activation or "a picture"], [0.8], seed=1234, steps=20, size=size)
            if images:
                images[0].save(preview)


def _preview_settings(lora_path: Path):
    """Training resolution (from the file's metadata) and activation text (from its sidecar)."""
    import json

    from lora_trainer.networks.metadata import file_metadata, training_resolution

    try:
        activation = json.loads(lora_path.with_suffix(".json").read_text(encoding="utf-8")).get("activation text", "")
    except (OSError, ValueError):
        activation = ""
    return training_resolution(file_metadata(lora_path)), activation


def on_ui_tabs():
    from lora_trainer.ui.tab import build_tab

    return [(build_tab(A1111Host()), "Train LoRA", "train_lora")]


OFFLOAD_CHOICES = {"auto": None, "always": True, "never": False}


def _offload_setting() -> Optional[bool]:
    """The `train(offload=...)` of the setting: None (auto), True or False."""
    return OFFLOAD_CHOICES.get(str(getattr(shared.opts, "lora_trainer_offload", "auto")), None)


def on_ui_settings():
    shared.opts.add_option(
        "lora_trainer_allowed_roots",
        shared.OptionInfo("", "Train LoRA: folders allowed when the WebUI is shared (--listen/--share); one per line",
                          section=SETTINGS_SECTION),
    )
    import gradio as gr

    shared.opts.add_option(
        "lora_trainer_offload",
        shared.OptionInfo("auto", "Train LoRA: park the VAE and frozen text encoders in RAM while training "
                          "(frees VRAM for the UNet; auto = when they are on the GPU)",
                          gr.Radio, {"choices": list(OFFLOAD_CHOICES)}, section=SETTINGS_SECTION),
    )


# --- Tag editor: auto-tagging with the WebUI's own interrogators --------------------------------

AUTOTAG_METHODS = ("deepdanbooru", "blip")
_DEEPBOORU_FLOOR = 0.05  # lower scores are noise at any threshold a person would pick
_TRAINING_JOB = "train_lora"  # the `shared.state.job` A1111Host.train runs under


def _deepbooru_tag_text(tag: str) -> str:
    """A DeepDanbooru tag written as the WebUI's own settings say (spaces, escaped brackets)."""
    import re

    if getattr(shared.opts, "deepbooru_use_spaces", True):
        tag = tag.replace("_", " ")
    if getattr(shared.opts, "deepbooru_escape", True):
        tag = re.sub(r"([\\()])", r"\\\1", tag)
    return tag


def _deepbooru_scores(pil_image) -> List:
    """Every (tag, probability) of one image over the floor: what `deepbooru.tag_multi` computes
    before it applies the global threshold setting (the tag editor has its own threshold)."""
    import numpy as np
    import torch
    from modules import deepbooru, images

    model = deepbooru.model.model
    picture = images.resize_image(2, pil_image.convert("RGB"), 512, 512)
    batch = np.expand_dims(np.array(picture, dtype=np.float32), 0) / 255
    with torch.no_grad(), devices.autocast():
        scores = model(torch.from_numpy(batch).to(devices.device))[0].detach().float().cpu().numpy()
    filtered = {t.strip().replace(" ", "_") for t in (getattr(shared.opts, "deepbooru_filter_tags", "") or "").split(",")}
    return [(_deepbooru_tag_text(tag), float(score)) for tag, score in zip(model.tags, scores)
            if score >= _DEEPBOORU_FLOOR and not tag.startswith("rating:") and tag not in filtered]


def _blip_captioner():
    """(caption function, release function) of the WebUI's BLIP alone.

    `Interrogator.load()` also loads CLIP ViT-L (~1.7 GB, and a download on first use) that a
    caption does not need; this is the BLIP half of it, as the WebUI itself does it.
    """
    interrogator = shared.interrogator
    if interrogator.blip_model is None:
        interrogator.blip_model = interrogator.load_blip_model()
        if not shared.cmd_opts.no_half and not interrogator.running_on_cpu:
            interrogator.blip_model = interrogator.blip_model.half()
    interrogator.blip_model = interrogator.blip_model.to(devices.device_interrogate)
    interrogator.dtype = next(interrogator.blip_model.parameters()).dtype  # what generate_caption casts the image to
    return interrogator.generate_caption, interrogator.send_blip_to_ram


def _autotag(images, method: str, progress=None, should_stop=None) -> list:
    """Host.autotag for the WebUI: under its GPU lock (generation waits, and so do we), never
    while a LoRA trains, with progress in the WebUI's own bar and its Interrupt honoured."""
    from lora_trainer.dataset.images import ImageProblem, open_rgb

    if method not in AUTOTAG_METHODS:
        raise UserError(f"auto-tag method {method!r} is not known; use one of {', '.join(AUTOTAG_METHODS)}")
    if getattr(shared.state, "job", "") == _TRAINING_JOB:
        raise UserError("a LoRA is training and holds the GPU: auto-tag when it is done")
    images = list(images)
    results: list = []
    with call_queue.queue_lock:
        if getattr(shared.state, "job", "") == _TRAINING_JOB:  # started while we waited for the lock
            raise UserError("a LoRA is training and holds the GPU: auto-tag when it is done")
        shared.state.begin(job="train_lora_autotag")
        shared.state.job_count = len(images)
        try:
            if getattr(shared.cmd_opts, "lowvram", False) or getattr(shared.cmd_opts, "medvram", False):
                from modules import lowvram

                lowvram.send_everything_to_cpu()
                devices.torch_gc()
            if method == "deepdanbooru":
                from modules import deepbooru

                deepbooru.model.start()
                tag, finish = _deepbooru_scores, deepbooru.model.stop
            else:
                caption, finish = _blip_captioner()
                tag = lambda pil: [(caption(pil), 1.0)]  # noqa: E731 - one "tag": the whole caption
            try:
                for done, path in enumerate(images, start=1):
                    if (should_stop is not None and should_stop()) or shared.state.interrupted:
                        break
                    try:
                        results.append(tag(open_rgb(path)))
                    except ImageProblem:
                        results.append(None)
                    shared.state.job_no = done
                    shared.state.textinfo = f"Auto-tagging for the Train LoRA tab: {done}/{len(images)}"
                    if progress is not None:
                        progress(done, len(images))
            finally:
                finish()
        finally:
            shared.state.end()
            devices.torch_gc()
    return results

