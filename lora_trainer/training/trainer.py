"""The training loop: config in, kohya-format LoRA out, everything reported as events.

`train(config)` loads (or is given) the base model, prepares the data, injects adapters,
runs the optimisation with the model's own noise schedule, saves intermediate files and a
resumable state, and always removes the adapters again, whatever happens.

Under a launcher (`accelerate launch`, `train --num-processes N`) the same loop runs data-parallel:
every rank walks the same order of global batches (batch_size x N items, the per-device
convention of kohya and accelerate), draws the randomness of the whole global batch (flips,
caption augmentation, noise, timesteps) from the same seeded streams and trains on its own
strided slice of it. So an item gets the same noise and timestep whichever rank trains it, and a
single process is the N = 1 case of the same code. Gradients are summed across ranks (see
`training.distributed`); only rank 0 writes files and reports events.
"""

import math
import random
import time
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from lora_trainer.dataset.training_captions import CaptionAugment, training_caption
from lora_trainer.errors import StorageError, UserError
from lora_trainer.networks.adapters import AdapterSet, NetworkSpec, inject
from lora_trainer.training import loss as losses
from lora_trainer.training import noise as noises
from lora_trainer.training.cpu_convs import TinyMapConvs
from lora_trainer.training.data import TrainItem, collate_latents, epoch_batches, steps_per_epoch
from lora_trainer.training.distributed import Processes, SingleProcess, pick_device, processes_for, stop_on_signals
from lora_trainer.training.events import EventBus, Listener
from lora_trainer.training.offload import FrozenOffload
from lora_trainer.training.optim import build_optimizer, build_scheduler
from lora_trainer.training.outputs import OutputWriter
from lora_trainer.training.state import (RunState, capture_rng, check_world_size, load_state, process_rng,
                                         restore_process_rng, restore_rng, save_state)

__all__ = ["train", "RunResult", "RunContext", "Loop", "run_loop", "pick_device", "total_steps"]

NAN_ADVICE = (
    "the loss or the weights became NaN/inf; nothing from that step was saved. Likely causes: a learning "
    "rate that is too high, fp16 overflow (try mixed_precision = \"bf16\" or \"no\"), or an fp16 VAE "
    "producing NaN latents (SDXL: use an fp32 VAE)."
)
OOM_ADVICE = (
    "out of memory. Lower batch_size or resolution, turn on gradient_checkpointing and cache_latents, "
    "train the UNet only (train_text_encoder = false), or use the \"Low memory\" preset."
)


@dataclass
class RunResult:
    status: str  # done | interrupted | nan | stopped
    output: Optional[Path]
    state_dir: Optional[Path]
    step: int
    total_steps: int
    last_loss: Optional[float]


class StopRequested(Exception):
    """Raised inside the loop when the host asks to stop (Interrupt, model changed...)."""


@dataclass
class RunContext:
    """Everything one run needs, built once by `prepare_run` and passed explicitly."""

    config: object
    bundle: object
    items: List[TrainItem]
    facts: object
    device: torch.device
    events: EventBus
    output: OutputWriter
    should_stop: Callable[[], bool]
    check_model: Callable[[], Optional[str]]
    processes: Optional[Processes] = None  # None: this process alone
    offload: Optional[FrozenOffload] = None  # None: nothing parked

    def __post_init__(self):
        self.processes = self.processes or SingleProcess(self.device)
        self.offload = self.offload or FrozenOffload(self.bundle, False)


def total_steps(config, items: List[TrainItem], world_size: int = 1) -> int:
    """Optimizer steps of the run; an epoch has fewer of them when N processes share each step."""
    if config.train.max_steps and config.train.max_steps > 0:
        return int(config.train.max_steps)
    return int(config.train.epochs) * steps_per_epoch(items, config.train.batch_size * world_size, config.train.grad_accum)


def autocast_precision(requested: str, weight_dtype: torch.dtype) -> str:
    """The precision a step runs in: half-precision frozen weights get autocast to their dtype.

    Over fp16/bf16 base weights (the WebUI's usual fp16 model) "no" would run every op in half,
    norms and softmax included; autocast keeps those in fp32 and the adapters stay fp32.
    """
    if requested == "no" and weight_dtype in (torch.float16, torch.bfloat16):
        return "fp16" if weight_dtype == torch.float16 else "bf16"
    return requested


def _network_spec(config) -> NetworkSpec:
    net = config.network
    return NetworkSpec(type=net.type, rank=int(net.rank), alpha=float(net.alpha), conv_rank=int(net.conv_rank),
                       conv_alpha=float(net.conv_alpha), dora=bool(net.dora), dropout=float(net.dropout))


def _components(bundle, train_text_encoder: bool) -> Dict[str, torch.nn.Module]:
    components = {"unet": bundle.unet}
    if train_text_encoder:
        for index, encoder in enumerate(bundle.text_encoders):
            components[f"text_encoder_{index}"] = encoder
    return components


def _param_groups(adapters: AdapterSet, config) -> List[Dict]:
    groups = []
    for name in adapters.tuners:
        lr = config.train.unet_lr if name == "unet" else config.train.text_encoder_lr
        params = adapters.parameters(name)
        if params and lr > 0:
            groups.append({"params": params, "lr": float(lr), "name": name})
    if not groups:
        raise UserError("nothing to train: every learning rate is 0 (set train.unet_lr or train.text_encoder_lr above 0)")
    return groups


Encoding = Tuple[torch.Tensor, Optional[torch.Tensor]]  # (hidden states, pooled)


def _nbytes(entry: Encoding) -> int:
    return sum(t.numel() * t.element_size() for t in entry if t is not None)


class Conditioner:
    """Caption -> conditioning; frozen text encoders' outputs are kept per caption.

    The cache is bounded (least recently used out first, `cache_bytes` in all) and off when
    every step shuffles or drops tags: such a run sees a new caption almost every step, and an
    unbounded cache grew by one encoding per step, in RAM or VRAM, for the whole run.
    """

    CACHE_BYTES = 256 * 2 ** 20

    def __init__(self, bundle, config, train_text_encoder: bool, cache_bytes: int = CACHE_BYTES):
        from lora_trainer.models.conditioning import encode_text

        self._encode = encode_text
        self.bundle, self.clip_skip = bundle, int(config.model.clip_skip)
        self.trainable = train_text_encoder
        varies = bool(config.dataset.shuffle_tags) or float(config.dataset.tag_dropout) > 0
        self.cache_bytes = 0 if varies else int(cache_bytes)
        self._cache: "OrderedDict[str, Encoding]" = OrderedDict()
        self._cached_bytes = 0

    def encode(self, captions: List[str]):
        return self._encode(self.bundle.text_encoders, self.bundle.tokenizers, self.bundle.family, captions, self.clip_skip)

    def _one(self, caption: str) -> Encoding:
        """One caption's encoding on its own (so it keeps its own chunk count), cached if room."""
        if caption in self._cache:
            self._cache.move_to_end(caption)
            return self._cache[caption]
        with torch.no_grad():
            encoded = self.encode([caption])
        entry = (encoded.hidden_states, encoded.pooled)
        size = _nbytes(entry)
        if size <= self.cache_bytes:
            self._cache[caption] = entry
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= _nbytes(dropped)
        return entry

    def precompute(self, captions: Sequence[str]) -> bool:
        """Encode every caption the run can see once and keep them on the CPU, so that frozen text
        encoders can leave the device. False (and nothing kept) when they are trained, when the
        captions vary per step, or when the encodings would not fit the cache."""
        if self.trainable or self.cache_bytes == 0:
            return False
        kept: "OrderedDict[str, Encoding]" = OrderedDict()
        total = 0
        for caption in dict.fromkeys(captions):
            with torch.no_grad():
                encoded = self.encode([caption])
            entry = (encoded.hidden_states.cpu(), None if encoded.pooled is None else encoded.pooled.cpu())
            total += _nbytes(entry)
            if total > self.cache_bytes:
                return False
            kept[caption] = entry
        self._cache, self._cached_bytes = kept, total
        return True

    def __call__(self, captions: List[str]):
        from lora_trainer.models.conditioning import TextConditioning

        if self.trainable:
            return self.encode(captions)
        entries = {caption: self._one(caption) for caption in dict.fromkeys(captions)}
        if len({entries[c][0].shape[1] for c in captions}) > 1:  # different chunk counts: encode together, padded
            with torch.no_grad():
                return self.encode(captions)
        hidden = torch.cat([entries[c][0] for c in captions])
        pooled = None if entries[captions[0]][1] is None else torch.cat([entries[c][1] for c in captions])
        return TextConditioning(hidden, pooled)


def run_captions(config, items: Sequence[TrainItem]) -> List[str]:
    """Every caption the text encoders can be given in a run whose captions do not vary per step
    (no shuffling or tag dropout): each item's, as training normalises it, and "" for caption dropout."""
    fixed = CaptionAugment(int(config.dataset.keep_tokens), False, 0.0, 0.0)
    captions = [training_caption(item.caption, fixed) for item in items]
    return captions + ([""] if float(config.dataset.caption_dropout) > 0 else [])


def _unet_kwargs(bundle, batch: List[TrainItem], cond, device, dtype) -> Dict:
    kwargs = {"encoder_hidden_states": cond.hidden_states.to(device, dtype)}
    if bundle.family == "sdxl":
        from lora_trainer.models.conditioning import sdxl_time_ids

        time_ids = torch.stack([
            sdxl_time_ids(item.original_size, item.crop_top_left, (item.bucket[1], item.bucket[0])) for item in batch
        ]).to(device, dtype)
        kwargs["added_cond_kwargs"] = {"text_embeds": cond.pooled.to(device, dtype), "time_ids": time_ids}
    return kwargs


@dataclass
class Draws:
    """The randomness of one global micro-batch, one entry per item (every rank draws all of it)."""

    flips: List[bool]
    captions: List[str]
    noise: torch.Tensor  # [B, C, h, w] on the CPU
    timesteps: torch.Tensor  # [B] on the CPU


def _by_device_and_dtype(tensors: List[torch.Tensor]) -> List[List[torch.Tensor]]:
    groups: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    return list(groups.values())


def gradient_norm(params: List[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The total L2 norm of the gradients, which are scaled down to `max_norm` when it is above 0
    and they are above it (`clip_grad_norm_`'s factor). NaN or inf when any gradient is: the one
    number the NaN guard needs. The norm is read anyway (the guard), so unlike `clip_grad_norm_`
    the gradients are not multiplied by 1 when there is nothing to clip (one pass less over
    hundreds of small tensors)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    groups = _by_device_and_dtype(grads)
    device = grads[0].device
    per_group = [torch.linalg.vector_norm(torch.stack(torch._foreach_norm(group))).float().to(device) for group in groups]
    norm = torch.linalg.vector_norm(torch.stack(per_group))
    total = float(norm)
    if max_norm > 0 and math.isfinite(total) and total > max_norm:  # not finite: the guard stops the step
        for group in groups:
            torch._foreach_mul_(group, max_norm / (total + 1e-6))
    return norm


class Loop:
    """One run's optimisation state and step function (kept small; `train` drives it)."""

    def __init__(self, ctx: RunContext, adapters: AdapterSet, total: int):
        config, bundle = ctx.config, ctx.bundle
        self.ctx, self.adapters, self.total = ctx, adapters, total
        self.processes: Processes = ctx.processes
        self.seed = int(config.train.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.rng = random.Random(self.seed)
        self.optimizer = build_optimizer(config.train.optimizer, _param_groups(adapters, config),
                                         float(config.train.weight_decay), ctx.device.type)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = build_scheduler(config.train.scheduler, self.optimizer, int(config.train.warmup_steps), total,
                                         int(config.train.lr_scheduler_num_cycles),
                                         float(config.train.lr_scheduler_power))
        self.conditioner = Conditioner(bundle, config, any(n != "unet" for n in adapters.tuners))
        self.tiny_maps = TinyMapConvs(bundle.unet, ctx.device)  # after `inject`: the adapters' convs too
        self.precision = autocast_precision(config.train.mixed_precision, next(bundle.unet.parameters()).dtype)
        if self.precision != config.train.mixed_precision:
            ctx.events.warning(f"the base model's weights are {self.precision}: training with {self.precision} autocast "
                               "(adapters stay fp32)")
        self.scaler = torch.cuda.amp.GradScaler() if self.precision == "fp16" and ctx.device.type == "cuda" else None
        self.state = RunState()
        data = config.dataset
        self.augment = CaptionAugment(int(data.keep_tokens), bool(data.shuffle_tags), float(data.tag_dropout), float(data.caption_dropout))

    # --- data order -------------------------------------------------------------------
    def next_batch(self) -> List[int]:
        state = self.state
        while state.position >= len(state.order):
            if state.order:
                state.epoch += 1
            global_batch = int(self.ctx.config.train.batch_size) * self.processes.world_size
            state.order = epoch_batches(self.ctx.items, global_batch, self.rng)
            state.position = 0
        batch = state.order[state.position]
        state.position += 1
        return batch

    # --- one micro-batch -----------------------------------------------------------------
    def draw(self, items: Sequence[TrainItem]) -> Draws:
        """Flips, captions, noise and timesteps for a whole global micro-batch, in the order a
        single process has always drawn them (so N = 1 is unchanged); on the CPU, so that the
        values do not depend on the device either."""
        config = self.ctx.config
        flips = [bool(config.dataset.flip) and self.rng.random() < 0.5 for _ in items]
        captions = [training_caption(item.caption, self.augment, self.rng) for item in items]
        shape = (len(items),) + tuple(items[0].latents[False].shape)  # a batch shares one bucket
        noise = noises.sample_noise(torch.empty(shape), self.generator, float(config.train.noise_offset),
                                    int(config.train.multires_noise_iterations),
                                    float(config.train.multires_noise_discount))
        low, high = int(config.train.timestep_min), int(config.train.timestep_max)
        timesteps = noises.sample_timesteps(len(items), self.generator, low, high, "cpu")
        return Draws(flips, captions, noise, timesteps)

    def micro_loss(self, indices: List[int]) -> Optional[torch.Tensor]:
        """This rank's share of the global micro-batch's mean loss: the sum over its items divided
        by the global batch size (summed over ranks, that is the mean). None: no item here."""
        ctx, config, bundle = self.ctx, self.ctx.config, self.ctx.bundle
        draws = self.draw([ctx.items[i] for i in indices])
        mine = self.processes.shard(len(indices))
        if not mine:
            return None
        items = [ctx.items[indices[p]] for p in mine]
        captions = [draws.captions[p] for p in mine]
        dtype = next(bundle.unet.parameters()).dtype
        latents = collate_latents(items, [draws.flips[p] for p in mine]).to(ctx.device)
        noise = draws.noise[mine].to(ctx.device)
        timesteps = draws.timesteps[mine].to(ctx.device)
        scheduler = bundle.noise_scheduler
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = losses.training_target(scheduler, latents, noise, timesteps)
        with self._autocast():
            cond = self.conditioner(captions)
            with self.tiny_maps.active():
                prediction = bundle.unet(noisy.to(dtype), timesteps, **_unet_kwargs(bundle, items, cond, ctx.device, dtype)).sample
        per_sample = losses.per_sample_loss(prediction, target, config.train.loss_type,
                                            float(config.train.huber_c))
        weights = losses.loss_weights(scheduler, timesteps, float(config.train.min_snr_gamma),
                                      bool(config.train.debiased_estimation))
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device)
        prior = float(config.dataset.prior_loss_weight)
        if prior != 1.0:
            per_sample = per_sample * torch.tensor([prior if item.is_reg else 1.0 for item in items], device=per_sample.device)
        return per_sample.sum() / len(indices)

    def _autocast(self):
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast(self.ctx.device.type, dtype=dtype)
        return torch.autocast(self.ctx.device.type, enabled=False)

    # --- one optimizer step --------------------------------------------------------------
    def step(self) -> float:
        """One optimizer step over `grad_accum` global micro-batches; the global mean loss (NaN: stop)."""
        accum = int(self.ctx.config.train.grad_accum)
        total = 0.0
        for _ in range(accum):
            loss = self.micro_loss(self.next_batch())
            if loss is None:
                continue
            loss = loss / accum
            value = float(loss.detach())
            if not math.isfinite(value):
                total = float("nan")
                break
            with self.tiny_maps.active():  # the same kernels when checkpointing recomputes the forward
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += value
        total = self.processes.sum(total)  # every rank decides on the same value
        if not math.isfinite(total):
            return float("nan")
        self.processes.sum_gradients(self.params)
        norm = self.clip_gradients()
        if self.scaler:  # fp16: a step with inf gradients is skipped by the scaler, which lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif math.isfinite(norm):
            self.optimizer.step()
        else:  # a NaN/inf gradient would poison the weights while the loss still looked fine: stop first
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        return total

    def clip_gradients(self) -> float:
        """The gradients' total norm (NaN/inf: a bad step), clipped to `max_grad_norm`: the first
        part of the update, as gradient transforms are in optax or Lightning's optimizer step."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        return float(gradient_norm(self.params, float(self.ctx.config.train.max_grad_norm)))

    # --- resume --------------------------------------------------------------------------
    def snapshot(self, folder: Path) -> Path:
        """Save the resumable state (every rank takes part; rank 0 writes it)."""
        capture_rng(self.generator, self.rng, self.state)
        self.state.torch_global_rng = None
        self.state.rank_rngs = self.processes.gather(process_rng(self.ctx.device))
        self.state.world_size = self.processes.world_size
        if self.processes.is_main:
            save_state(folder, self.adapters.state_dict(), self.optimizer, self.scheduler, self.state)
            self.ctx.output.state_saved = True
        self.processes.barrier()  # no rank reads it, or ends, before it is complete
        return Path(folder)

    def restore(self, folder: Path) -> None:
        tensors, optim, state = load_state(folder)
        check_world_size(state, folder, self.processes.world_size)
        self.adapters.load_state_dict(tensors)
        self.optimizer.load_state_dict(optim["optimizer"])
        self.scheduler.load_state_dict(optim["scheduler"])
        self.state = state
        restore_rng(self.generator, self.rng, state)
        restore_process_rng(state, self.processes.rank, self.ctx.device)


def _emit_samples(loop: Loop, step: int) -> None:
    from lora_trainer.training.sampling import render

    ctx, sample = loop.ctx, loop.ctx.config.sample
    prompts = [p for p in (sample.prompts or []) if p.strip()]
    if not prompts:
        return
    size = int(ctx.config.dataset.resolution)
    with ctx.offload.resident():  # the parked VAE / text encoders render on the device, as before
        images = render(ctx.bundle, prompts, seed=int(sample.seed), steps=int(sample.steps),
                        width=int(sample.width or size), height=int(sample.height or size),
                        cfg_scale=float(sample.cfg_scale), negative_prompt=sample.negative_prompt,
                        clip_skip=int(ctx.config.model.clip_skip), device=ctx.device)
    paths = ctx.output.save_samples(step, images)
    ctx.events.emit("sample", step=step, images=images, paths=[str(p) for p in paths], prompts=prompts)


def _metadata(loop: Loop, started: float, final: bool) -> Dict[str, str]:
    from lora_trainer.networks.metadata import lora_metadata

    from lora_trainer.models.families import real_config
    from lora_trainer.networks.inspect_lora import BASE_CONFIG_KEY

    ctx = loop.ctx
    extra = {}
    if ctx.bundle.config != real_config(ctx.bundle.family):
        extra[BASE_CONFIG_KEY] = ctx.bundle.config.to_json()  # so `inspect --check` knows a non-standard base
    return extra | lora_metadata(
        ctx.config, family=ctx.bundle.family, prediction_type=ctx.bundle.prediction_type,
        output_name=ctx.output.name, data=ctx.facts, started_at=started, finished_at=time.time(),
        steps=loop.state.step, epoch=loop.state.epoch + (1 if final else 0), total_steps=loop.total,
        base_model_name=ctx.bundle.name, base_model_sha256=getattr(ctx.bundle, "sha256", "") or "",
        trigger=_trigger(ctx), num_processes=ctx.processes.world_size,
    )


def _trigger(ctx: RunContext) -> str:
    from lora_trainer.networks.metadata import common_leading_tags

    explicit = ctx.config.dataset.trigger_word
    if explicit:
        return explicit
    captions = [[t.strip() for t in item.caption.split(",") if t.strip()] for item in ctx.items if not item.is_reg]
    return common_leading_tags(captions, limit=1)


def _save_final(loop: Loop, started: float) -> Path:
    from lora_trainer.networks.export import kohya_state_dict
    from lora_trainer.networks.metadata import sidecar

    ctx = loop.ctx
    tensors = kohya_state_dict(loop.adapters, ctx.bundle.config, ctx.config.output.save_precision)
    side = sidecar(ctx.bundle.family, _trigger(ctx), description=f"Trained with sd-webui-lora-trainer for {loop.state.step} steps.")
    path = ctx.output.save_final(tensors, _metadata(loop, started, final=True), side)
    ctx.events.emit("save", step=loop.state.step, path=str(path), final=True)
    return path


def _save_intermediate(loop: Loop, started: float) -> None:
    from lora_trainer.networks.export import kohya_state_dict

    ctx = loop.ctx
    tensors = kohya_state_dict(loop.adapters, ctx.bundle.config, ctx.config.output.save_precision)
    path = ctx.output.save_intermediate(loop.state.step, tensors, _metadata(loop, started, final=False))
    ctx.events.emit("save", step=loop.state.step, path=str(path), final=False)


def _every(step: int, n) -> bool:
    return bool(n) and int(n) > 0 and step % int(n) == 0


def run_loop(loop: Loop) -> RunResult:
    """Drive `loop` to its total, with saves, samples, stop checks and the NaN guard.

    Every rank runs this; the stop decision is agreed on by all of them once per step, and
    files (saves, samples) are written by rank 0 only.
    """
    ctx, config, events = loop.ctx, loop.ctx.config, loop.ctx.events
    main = ctx.processes.is_main
    started, clock = time.time(), time.perf_counter()
    first_step = loop.state.step
    last_loss: Optional[float] = None
    events.emit("start", name=ctx.output.name, step=first_step, total_steps=loop.total, device=str(ctx.device),
                family=ctx.bundle.family, images=len(ctx.items), processes=ctx.processes.world_size,
                parked=ctx.offload.parked)
    try:
        while loop.state.step < loop.total:
            reason = ctx.check_model()
            if ctx.processes.any(bool(ctx.should_stop() or reason)):
                raise StopRequested(reason or "stop requested")
            loss = loop.step()
            if not math.isfinite(loss):
                events.emit("error", step=loop.state.step, message=NAN_ADVICE)
                events.emit("done", status="nan", step=loop.state.step, output=None)
                return RunResult("nan", None, None, loop.state.step, loop.total, last_loss)
            last_loss = loss
            loop.state.losses = (loop.state.losses + [loss])[-2000:]
            step = loop.state.step
            elapsed = time.perf_counter() - clock
            rate = (step - first_step) / elapsed if elapsed > 0 else 0.0
            events.emit("step", step=step, total=loop.total, loss=loss, lr=loop.scheduler.get_last_lr()[0],
                        it_s=rate, eta_s=(loop.total - step) / rate if rate else 0.0, epoch=loop.state.epoch)
            if main and step < loop.total and _every(step, config.output.save_every_steps):
                _save_intermediate(loop, started)
            if main and _every(step, config.sample.every_steps):
                _emit_samples(loop, step)
            if step < loop.total and _every(step, config.output.save_state_every_steps):
                loop.snapshot(ctx.output.state_dir)
    except StopRequested as stop:
        return _interrupted(loop, str(stop), last_loss)
    except KeyboardInterrupt:
        if ctx.processes.world_size > 1:
            raise  # ranks stop at different places: only an agreed stop (stop_on_signals) saves a consistent state
        return _interrupted(loop, "interrupted", last_loss)
    if main and config.sample.every_steps and not _every(loop.state.step, config.sample.every_steps):
        _emit_samples(loop, loop.state.step)  # a preview of the final weights
    path = _save_final(loop, started) if main else ctx.output.final_path
    state_dir = loop.snapshot(ctx.output.state_dir)
    events.emit("done", status="done", step=loop.state.step, output=str(path), state_dir=str(state_dir))
    return RunResult("done", path, state_dir, loop.state.step, loop.total, last_loss)


def _interrupted(loop: Loop, message: str, last_loss: Optional[float]) -> RunResult:
    state_dir = loop.snapshot(loop.ctx.output.state_dir)
    loop.ctx.events.emit("warning", message=f"{message}; resumable state saved in {state_dir}")
    loop.ctx.events.emit("done", status="interrupted", step=loop.state.step, output=None, state_dir=str(state_dir))
    return RunResult("interrupted", None, state_dir, loop.state.step, loop.total, last_loss)


def _load_base(config, events: EventBus):
    from lora_trainer.models import load_bundle

    bundle = load_bundle(config.model.checkpoint, family=config.model.family, prediction_type=config.model.prediction_type)
    for note in bundle.notes:
        events.warning(note)
    return bundle


def _set_checkpointing(bundle, enabled: bool) -> None:
    if enabled:
        bundle.unet.enable_gradient_checkpointing()  # diffusers uses use_reentrant=False
    elif getattr(bundle.unet, "is_gradient_checkpointing", False):
        bundle.unet.disable_gradient_checkpointing()


def _log_listeners(config, output: OutputWriter) -> List[Listener]:
    """The run's own log files: metrics.jsonl always, TensorBoard events when asked for."""
    from lora_trainer.training.listeners import MetricsWriter, TensorBoardWriter

    listeners: List[Listener] = [MetricsWriter(output.logs_dir)]
    if config.output.tensorboard:
        listeners.append(TensorBoardWriter(output.logs_dir))
    return listeners


@contextmanager
def _attached(events: EventBus, listeners: List[Listener]) -> Iterator[None]:
    """Listeners for this run only: removed and closed afterwards, whatever happens."""
    for listener in listeners:
        events.add(listener)
    try:
        yield
    finally:
        for listener in listeners:
            events.remove(listener)
            close = getattr(listener, "close", None)
            if close is not None:
                close()


def train(config, *, bundle=None, events: Optional[EventBus] = None, should_stop: Optional[Callable[[], bool]] = None,
          check_model: Optional[Callable[[], Optional[str]]] = None, resume: Optional[Path] = None,
          output: Optional[OutputWriter] = None, processes: Optional[Processes] = None,
          offload: Optional[bool] = None) -> RunResult:
    """Run one training job; the adapters are removed from the model afterwards, always.

    `offload`: park the VAE (once latents are encoded) and frozen text encoders (once every
    caption is encoded) on the CPU during the run; None: whatever is on an accelerator.

    `processes`: None means this process alone, unless a launcher started several (then each one
    calls `train` and they train data-parallel). On ranks other than 0, `events` receives nothing
    and no file is written: rank 0 reports and saves for the run.
    """
    from lora_trainer.config import raise_for, validate

    raise_for(validate(config))
    processes = processes or processes_for(config.train.device)
    events = (events or EventBus()) if processes.is_main else EventBus()
    output = output or OutputWriter(Path(config.output.dir), config.output_stem, config.logs_dir,
                                    bool(config.output.overwrite), int(config.output.keep_last))
    if processes.is_main:
        output.check_writable()
    else:
        output.check_target()  # the same verdict on every rank, without touching the disk
    listeners = _log_listeners(config, output) if processes.is_main else []
    with stop_on_signals(processes) as signalled, _attached(events, listeners):
        stop_flag = should_stop or (lambda: False)
        try:
            return _train(config, bundle, events, lambda: stop_flag() or signalled.is_set(), check_model, resume, output,
                          processes, offload)
        except StorageError as exc:
            raise _storage_failure(exc, output, events) from exc


def _storage_failure(exc: StorageError, output: OutputWriter, events: EventBus) -> StorageError:
    """The write error, plus where training can continue from once there is room again."""
    message = str(exc)
    if output.state_saved:
        message += f" Training can continue from the last saved state: --resume {output.state_dir}"
    events.emit("error", message=message)
    return StorageError(message)


def _train(config, bundle, events: EventBus, should_stop: Callable[[], bool], check_model, resume: Optional[Path],
           output: OutputWriter, processes: Processes, offload_mode: Optional[bool]) -> RunResult:
    device = processes.device
    bundle = bundle or _load_base(config, events)
    if config.train.zero_terminal_snr:
        noises.zero_terminal_snr(bundle.noise_scheduler)
    torch.manual_seed(int(config.train.seed))
    offload = FrozenOffload(bundle, offload_mode)
    try:
        return _train_with(config, bundle, events, should_stop, check_model, resume, output, processes, offload)
    finally:
        offload.restore()


def _train_with(config, bundle, events: EventBus, should_stop: Callable[[], bool], check_model, resume: Optional[Path],
                output: OutputWriter, processes: Processes, offload: FrozenOffload) -> RunResult:
    from lora_trainer.training.prepare import prepare_items

    device = processes.device
    with processes.main_first() if config.dataset.cache_latents else nullcontext():  # rank 0 fills the disk cache
        items, facts = prepare_items(config, bundle, device, events, should_stop)
    offload.park("vae")  # idle until a sample is rendered
    ctx = RunContext(config, bundle, items, facts, device, events, output, should_stop, check_model or (lambda: None),
                     processes, offload)
    bundle.unet.to(device)
    for encoder in bundle.text_encoders:
        encoder.to(device)
    adapters = inject(_components(bundle, bool(config.network.train_text_encoder)), _network_spec(config))
    try:
        _set_checkpointing(bundle, bool(config.train.gradient_checkpointing))
        for name in adapters.tuners:
            adapters.components[name].train()
        loop = Loop(ctx, adapters, total_steps(config, items, processes.world_size))
        if offload.wants("text_encoders") and loop.conditioner.precompute(run_captions(config, items)):
            offload.park("text_encoders")  # frozen, and every caption is encoded
        if resume:
            loop.restore(Path(resume))
        return run_loop(loop)
    except torch.cuda.OutOfMemoryError as exc:
        events.emit("error", message=OOM_ADVICE)
        raise UserError(OOM_ADVICE) from exc
    finally:
        _set_checkpointing(bundle, False)
        adapters.remove()
        for module in [bundle.unet] + list(bundle.text_encoders):
            module.eval()
