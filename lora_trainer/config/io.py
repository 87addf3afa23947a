"""Config files (TOML or JSON by suffix) and `--set section.key=value` overrides."""

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from lora_trainer.config.schema import SECTION_CLASSES, FieldError, TrainConfig, field_default
from lora_trainer.config.validate import coerce, parse_dict, raise_for, suggest, validate
from lora_trainer.errors import ConfigError
from lora_trainer.files import clean_stale_temp_files, write_atomically

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10 (A1111)
    import tomli as tomllib

PathLike = Union[str, Path]


# --- overrides ---------------------------------------------------------------------------
def parse_override(text: str) -> Tuple[str, str, Any]:
    """"section.key=value" -> (section, key, value typed by the field's type).

    `train.max_steps=500` gives 500 (int), `train.unet_lr=1e-4` 0.0001, `dataset.flip=yes` True,
    `output.name=123` "123" (text stays text), `sample.prompts=["a","b"]` a list (one plain
    string gives a one-prompt list). Raises ConfigError naming the key and what is allowed
    (its `.errors` holds the FieldError).
    """
    def fail(path: str, message: str):
        error = ConfigError(f"--set {path}: {message}" if path != "--set" else f"--set {message}")
        error.errors = [FieldError(path, message)]
        raise error

    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        fail("--set", f"expects section.key=value (e.g. train.max_steps=500), not {text!r}")
    path, raw = text.split("=", 1)
    section, key = (part.strip() for part in path.strip().split(".", 1))
    if section not in SECTION_CLASSES:
        fail(section, f"unknown section {section!r}{suggest(section, SECTION_CLASSES)} (sections: {', '.join(SECTION_CLASSES)})")
    known = {f.name: f for f in fields(SECTION_CLASSES[section])}
    if key not in known:
        fail(f"{section}.{key}", f"unknown setting{suggest(key, known)}")
    default = field_default(known[key])
    raw = raw.strip()
    value: Any = raw
    if isinstance(default, list) and raw.startswith("["):
        value = _json_or(raw, raw)
    elif isinstance(default, str) and len(raw) >= 2 and raw[0] == raw[-1] == '"':
        value = _json_or(raw, raw)
    coerced, error = coerce(value, default, f"{section}.{key}")
    if error:
        fail(error.path, error.message)
    if isinstance(default, list) and isinstance(value, str) and coerced:
        coerced = [raw]  # one prompt, even with commas
    return section, key, coerced


def _json_or(text: str, fallback: Any) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return fallback


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """A copy of `config` with every `section.key=value` applied; one ConfigError lists all bad ones."""
    out, problems = config.copy(), []
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        setattr(getattr(out, section), key, value)
    if problems:
        raise ConfigError("\n".join(problems))
    return out


# --- reading -----------------------------------------------------------------------------
def read_file(path: PathLike) -> Dict[str, Any]:
    """The raw nested dict of a .toml or .json file (ConfigError when missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'TOML'}: {exc}") from exc
    if isinstance(data, dict) and _looks_like_kohya(data):
        raise ConfigError(f"{path} looks like a kohya_ss / sd-scripts config; import it first "
                          f"(lora_trainer.config.import_config) to convert it")
    return data


def _looks_like_kohya(data: Dict[str, Any]) -> bool:
    flat = dict(data)
    for value in data.values():
        if isinstance(value, dict):
            flat.update(value)
    return not (set(data) & set(SECTION_CLASSES)) and bool({"pretrained_model_name_or_path", "train_data_dir", "network_dim"} & set(flat))


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """Two nested section dicts merged key by key (`update` wins); inputs are not modified."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config(path: Optional[PathLike] = None, overrides: Sequence[str] = (), base: Optional[Dict[str, Any]] = None,
                *, check_paths: bool = False, validate_config: bool = True) -> TrainConfig:
    """Defaults <- `base` (a preset's partial dict) <- file <- `--set` overrides.

    Raises one ConfigError listing every problem (unknown keys with did-you-mean, wrong types,
    bad --set, then the `validate` rules unless `validate_config=False`).
    """
    data: Dict[str, Any] = merge({}, base or {})
    if path is not None:
        data = merge(data, read_file(path))
    config, errors = parse_dict(data)
    messages: List[FieldError] = list(errors)
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as exc:
            messages.extend(getattr(exc, "errors", [FieldError("--set", str(exc))]))
            continue
        setattr(getattr(config, section), key, value)
    if validate_config:  # every problem at once; a bad value kept its default, so skip rules on those keys
        bad = {m.path for m in messages}
        messages += [e for e in validate(config, check_paths=check_paths) if e.path not in bad]
    raise_for(messages, f"{path}" if path is not None else "the configuration")
    return config


# --- writing -----------------------------------------------------------------------------
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0xD800 else "\\ufffd")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {True: "nan"}.get(value != value, "inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def to_toml(config: Union[TrainConfig, Dict[str, Dict[str, Any]]], comments: bool = True) -> str:
    """TOML text of a config (or of a nested dict), each key preceded by its help as a comment."""
    data = config.to_dict() if isinstance(config, TrainConfig) else config
    helps = {f"{s}.{f.name}": f.metadata.get("help", "") for s, cls in SECTION_CLASSES.items() for f in fields(cls)}
    lines: List[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            help_text = helps.get(f"{section}.{key}")
            if comments and help_text:
                lines.append(f"# {help_text}")
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text through `files.write_atomically`: readers never see half a file, and the pid-named
    temp a killed writer leaves is removed by the next `clean_stale_temp_files` of that folder."""
    clean_stale_temp_files(Path(path).parent)
    return write_atomically(path, text.encode("utf-8"))


def save_config(path: PathLike, config: TrainConfig) -> Path:
    """TOML (`.toml`, with help comments) or JSON (`.json`) by suffix, written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".toml":
        text = to_toml(config)
    else:
        raise ConfigError(f"cannot save a config as {path.name!r}: use a .toml or .json file name")
    return atomic_write_text(path, text)
