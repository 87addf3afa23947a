"""What the tab's buttons do, as plain methods (the unit tests call them directly).

The controller turns form values into a `TrainConfig`, validates it field by field, starts and
stops the one job of this server, and reads its progress for every polling page. It returns
plain data; `tab.py` maps it onto gradio components.
"""

import html
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lora_trainer.errors import UserError
from lora_trainer.ui import fields
from lora_trainer.ui.jobs import JobManager, JobState


class TabController:
    def __init__(self, host):
        self.host = host
        self.jobs = JobManager(host)
        self.paths: List[Tuple[str, str]] = fields.BASIC + fields.ELSEWHERE + fields.advanced_fields()

    # --- config -------------------------------------------------------------------------
    def initial_values(self) -> List[Any]:
        from lora_trainer.config import parse_dict

        config, _ = parse_dict(self.host.defaults())
        return fields.config_to_values(self.paths, config.to_dict())

    def form_values(self) -> List[Any]:
        """What a (re)loaded page shows: the last job's settings, else the defaults."""
        if self.jobs.config is not None:
            values = self.jobs.config.to_dict()
            if values["output"]["logs_dir"] == self._default_logs_dir(self.jobs.config.output.name):
                values["output"]["logs_dir"] = ""  # derived from the name: a new name gets its own
            return fields.config_to_values(self.paths, values)
        return self.initial_values()

    def _default_logs_dir(self, name: str) -> Optional[str]:
        from lora_trainer.config import sanitize_output_name

        runs = getattr(self.host, "runs_dir", lambda: None)()
        try:
            stem = sanitize_output_name(name)
        except UserError:  # reported on the name's field
            return None
        return str(Path(runs) / stem) if runs is not None else None

    def build_config(self, values: List[Any]):
        """(config, [FieldError]) from the form's values, in `self.paths` order."""
        from lora_trainer.config import parse_dict, validate

        config, errors = parse_dict(fields.values_to_dict(self.paths, values))
        typed_logs_dir = config.output.logs_dir
        if not typed_logs_dir:
            config.output.logs_dir = self._default_logs_dir(config.output.name) or ""
        errors = list(errors) + list(validate(config))
        errors += self._path_errors(config, typed_logs_dir)
        return config, errors

    def _path_errors(self, config, typed_logs_dir: str = "") -> list:
        from lora_trainer.config import FieldError

        problems = []
        if not config.dataset.dir:
            problems.append(FieldError("dataset.dir", "choose the dataset folder (Dataset tab)"))
        elif not Path(config.dataset.dir).is_dir():
            problems.append(FieldError("dataset.dir", f"{config.dataset.dir} is not a folder"))
        if not config.model.checkpoint:
            problems.append(FieldError("model.checkpoint", "no base model: load a checkpoint"))
        roots = self.host.allowed_roots()
        if roots is not None:
            checkpoint = config.model.checkpoint
            if checkpoint == str(self.host.defaults().get("model", {}).get("checkpoint", "")):
                checkpoint = ""  # the host's own model (the WebUI's loaded checkpoint) needs no confining
            for path_name, value in (("dataset.dir", config.dataset.dir), ("dataset.reg_dir", config.dataset.reg_dir),
                                     ("output.dir", config.output.dir), ("output.logs_dir", typed_logs_dir),
                                     ("model.checkpoint", checkpoint)):
                if value and not _inside_any(Path(value), roots):
                    problems.append(FieldError(path_name, _shared_message(roots)))
        return problems

    @staticmethod
    def errors_markdown(errors) -> str:
        if not errors:
            return ""
        return "**Please fix these settings:**\n" + "\n".join(f"- `{e.path}`: {e.message}" for e in errors)

    # --- actions ------------------------------------------------------------------------
    def start(self, values: List[Any], resume: bool = False) -> Tuple[str, list]:
        """Start (or resume) training; returns (message, errors)."""
        config, errors = self.build_config(values)
        if errors:
            return self.errors_markdown(errors), errors
        resume_dir = None
        if resume:
            resume_dir = config.logs_dir / "state"
            if not (resume_dir / "state.json").is_file():
                return f"Nothing to resume for **{config.output.name}**: no saved state in `{resume_dir}`.", []
            config.output.overwrite = True  # the resumed run finishes the same file
        try:
            self.jobs.start(config, resume_dir)
        except UserError as exc:
            return str(exc), []
        return f"{'Resuming' if resume else 'Started'} **{html.escape(config.output.name)}**.", []

    def stop(self) -> str:
        state = self.jobs.snapshot()
        if not state.active:
            return "No training is running."
        self.jobs.stop()
        return "Stopping: the current step finishes, then a resumable state is saved."

    def check_dataset(self, folder: str, caption_extension: str = ".txt", resolution: int = 512) -> str:
        from lora_trainer.dataset.buckets import assign_bucket, bucket_report, make_buckets
        from lora_trainer.dataset.captions import CaptionStore
        from lora_trainer.dataset.check import check_dataset
        from lora_trainer.dataset.scan import require_images, scan

        if not folder:
            return "Choose a dataset folder first."
        roots = self.host.allowed_roots()
        if roots is not None and not _inside_any(Path(folder), roots):
            return _shared_message(roots).capitalize() + "."
        try:
            entries = scan(Path(folder), caption_extension or ".txt")
            require_images(entries, Path(folder))
        except UserError as exc:
            return f"**{html.escape(str(exc))}**"
        store = CaptionStore(Path(folder), entries)
        report = check_dataset(Path(folder), entries, store)
        buckets = make_buckets(int(resolution or 512), 256, max(1024, int(resolution or 512)))
        sizes = [tuple(int(v) for v in key.split("x")) for key, n in report["resolutions"].items() for _ in range(n)]
        by_bucket = bucket_report(assign_bucket(size, buckets, int(resolution or 512)) for size in sizes)
        return _report_markdown(report, by_bucket)

    def poll(self) -> JobState:
        return self.jobs.snapshot()

    def test_grid(self, lora: str, prompts: str, strengths: str, seed: float, steps: float = 20, size: float = 0):
        """Render the grid; returns (images with captions, message)."""
        path = Path(lora) if lora else None
        roots = self.host.allowed_roots()
        if path is not None and roots is not None and not _inside_any(path, roots):
            return [], _shared_message(roots).capitalize() + "."
        if path is None or not path.is_file():
            return [], "Train a LoRA first (or give the path of one)."
        if self.jobs.snapshot().active:
            return [], "Training is running; the test grid waits until it is done."
        try:
            values = [float(s) for s in strengths.replace(",", " ").split()] or [0, 0.4, 0.7, 1.0]
        except ValueError:
            return [], "Strengths must be numbers, e.g. 0 0.4 0.7 1.0"
        prompt_list = [p.strip() for p in prompts.splitlines() if p.strip()]
        if not prompt_list:
            return [], "Write at least one prompt."
        if not int(size):
            from lora_trainer.networks.metadata import file_metadata, training_resolution

            size = training_resolution(file_metadata(path))
        images = self.host.render_grid(path, prompt_list, values, int(seed), max(1, int(steps)), int(size))
        captioned = [(image, f"{strength:g} · {prompt}") for (strength, prompt), image in zip([(s, p) for s in values for p in prompt_list], images)]
        return captioned, f"{len(images)} images: strengths {', '.join(f'{v:g}' for v in values)}"

    def import_settings(self, path: Optional[str], values: List[Any]) -> Tuple[List[Any], str]:
        """Fill the form from a kohya_ss GUI JSON or an sd-scripts TOML; say what was ignored."""
        from lora_trainer.config import import_config

        if not path:
            return values, "Choose a kohya_ss .json or sd-scripts .toml file to import."
        roots = self.host.allowed_roots()
        if roots is not None and not _inside_any(Path(path), roots + [upload_dir()]):
            return values, "Import failed: " + _shared_message(roots) + " (or upload the file)"
        try:
            result = import_config(path)
        except UserError as exc:
            return values, f"Import failed: {html.escape(str(exc))}"
        current = fields.values_to_dict(self.paths, values)
        imported = result.config.to_dict()
        keep = {("model", "checkpoint"), ("output", "dir")}  # this host decides the base model and the Lora folder
        for section, items in imported.items():
            for key, value in items.items():
                if (section, key) not in keep:
                    current.setdefault(section, {})[key] = value
        lines = [f"Imported **{html.escape(Path(path).name)}**."]
        lines += [f"- note: {html.escape(note)}" for note in result.notes]
        if result.ignored:
            lines.append(f"Ignored {len(result.ignored)} setting(s):")
            lines += [f"- `{html.escape(str(item.key))}`: {html.escape(item.reason)}" for item in result.ignored]
        return fields.config_to_values(self.paths, current), "\n".join(lines)

    # --- presets ------------------------------------------------------------------------
    def _preset_folder(self) -> Path:
        return self.host.user_data_dir() / "presets"

    def preset_names(self) -> List[str]:
        from lora_trainer.config import list_presets

        return list_presets(self._preset_folder())

    def apply_preset(self, name: str, values: List[Any]) -> Tuple[List[Any], str]:
        from lora_trainer.config import load_preset

        try:
            update = load_preset(name, self._preset_folder())
        except UserError as exc:
            return values, str(exc)
        current = fields.values_to_dict(self.paths, values)
        for section, items in update.items():
            current.setdefault(section, {}).update(items)
        return fields.config_to_values(self.paths, current), f"Applied preset **{html.escape(name)}**."

    def save_preset(self, name: str, values: List[Any]) -> str:
        from lora_trainer.config import parse_dict, save_user_preset

        config, _ = parse_dict(fields.values_to_dict(self.paths, values))
        try:
            path = save_user_preset(self._preset_folder(), name, config)
        except UserError as exc:
            return f"Preset not saved: {exc}"
        return f"Saved preset **{html.escape(Path(path).stem)}**."


def upload_dir() -> Path:
    """Where gradio keeps uploaded files (GRADIO_TEMP_DIR, else <temp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def _shared_message(roots: List[Path]) -> str:
    return "this server is shared: only folders under " + ", ".join(map(str, roots)) + " are allowed"


def _inside_any(path: Path, roots: List[Path]) -> bool:
    """Whether `path`, with symlinks and `..` resolved, is one of `roots` or below one."""
    resolved = path.expanduser().resolve()
    return any(resolved == root.resolve() or root.resolve() in resolved.parents for root in roots)


def _report_markdown(report: Dict, buckets: Dict[str, int]) -> str:
    lines = [f"**{report['images']} images** in {len(report['folders'])} folder(s)"]
    for name, folder in report["folders"].items():
        kind = " (regularization)" if folder.get("regularization") else ""
        lines.append(f"- `{name}`: {folder['images']} images × {folder['repeats']} repeats{kind}")
    for key, title in (("captions_missing", "Missing captions"), ("captions_empty", "Empty captions"),
                       ("non_utf8", "Captions that are not UTF-8"), ("unreadable", "Unreadable images")):
        if report.get(key):
            shown = ", ".join(f"`{Path(str(p)).name}`" for p in report[key][:5])
            lines.append(f"- ⚠ {title}: {len(report[key])} ({shown}{'…' if len(report[key]) > 5 else ''})")
    if report.get("duplicates"):
        lines.append(f"- ⚠ Duplicate images: {len(report['duplicates'])} group(s)")
    if buckets:
        lines.append("\n**Buckets:** " + ", ".join(f"{k}: {n}" for k, n in buckets.items()))
    top = list(report.get("tag_frequency", {}).items())[:12]
    if top:
        lines.append("\n**Top tags:** " + ", ".join(f"{html.escape(t)} ({n})" for t, n in top))
    return "\n".join(lines)


def progress_html(state: JobState) -> str:
    """The progress bar with step/total, it/s and ETA."""
    if state.status == "idle":
        return "<div class='train-lora-progress'>No training yet.</div>"
    percent = 100.0 * state.step / state.total if state.total else 0.0
    eta = f"{int(state.eta_s // 60)}:{int(state.eta_s % 60):02d}" if state.eta_s else "–"
    status = {"preparing": "Preparing data…", "running": "Training", "stopping": "Stopping…", "done": "Done",
              "interrupted": "Stopped (resumable)", "failed": "Failed", "nan": "Stopped: loss became NaN"}.get(state.status, state.status)
    return (
        f"<div class='train-lora-progress' data-status='{state.status}'>"
        f"<div class='train-lora-progress-text'>{html.escape(status)} — <b>{html.escape(state.name)}</b>: "
        f"step <span class='train-lora-step'>{state.step}</span>/{state.total} · {state.it_s:.2f} it/s · ETA {eta}</div>"
        f"<div class='train-lora-bar'><div style='width:{percent:.1f}%'></div></div></div>"
    )
