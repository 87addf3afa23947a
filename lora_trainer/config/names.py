"""Output names and paths from untrusted input: never a write outside the output folder."""

import os
import re
import unicodedata
from pathlib import Path
from typing import Union

from lora_trainer.errors import ConfigError

_DEVICES = {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$"}
_RESERVED = _DEVICES | {f"{port}{n}" for port in ("com", "lpt") for n in list("123456789") + ["\u00b9", "\u00b2", "\u00b3"]}
MAX_NAME_CHARS = 120
# Filesystems allow 255 bytes per name; keep room for "-step00001000.preview.png" and similar suffixes.
MAX_NAME_BYTES = 200
_KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiner: part of Persian, Indic and emoji spellings
_SUFFIXES = (".safetensors", ".ckpt", ".pt")


def _is_dropped(ch: str) -> bool:
    """Control, format (bidi overrides, zero-width), surrogate, private and unassigned characters."""
    return unicodedata.category(ch)[0] == "C" and ch not in _KEEP_FORMAT


def _truncate(text: str) -> str:
    """Cut to the limits without splitting a character or leaving a combining mark alone."""
    while len(text) > MAX_NAME_CHARS or len(text.encode("utf-8")) > MAX_NAME_BYTES:
        text = text[:-1]
        while text and unicodedata.combining(text[-1]):
            text = text[:-1]
    return text.rstrip(". ")


def sanitize_output_name(name: str, *, truncate: bool = False) -> str:
    """A safe file stem for the LoRA (also its `<lora:NAME:0.8>` name), or ConfigError saying why not.

    Kept: letters of any script, digits, spaces, `-`, `_`, `.` inside the name. Cleaned up quietly:
    a trailing `.safetensors`, control/format characters, characters Windows forbids or A1111's
    `<lora:...>` syntax breaks on (`<>:"|?*` become `_`), leading dots, trailing dots and spaces.
    Refused: empty names, paths (`/`, `\\`, `..`), reserved Windows device names (CON, NUL, COM1...),
    a leading `~` (home-folder expansion),
    and names over 120 characters / 200 UTF-8 bytes (unless `truncate=True`, which shortens them).
    """
    if not isinstance(name, str):
        raise ConfigError(f"the output name must be text, not {name!r}")
    text = unicodedata.normalize("NFC", name).strip()
    for suffix in _SUFFIXES:
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)].rstrip()
    if "/" in text or "\\" in text or text == ".." or text.startswith("~"):
        raise ConfigError(f"{name!r} is a path; give a plain file name such as my_lora (the folder is output.dir)")
    text = "".join(ch for ch in text if not _is_dropped(ch))
    text = re.sub(r'[<>:"|?*]', "_", text).strip().lstrip(".").rstrip(". ")
    if not text:
        raise ConfigError(f"{name!r} is not a usable file name; use letters, digits, - or _")
    if text.split(".")[0].strip().lower() in _RESERVED:
        raise ConfigError(f"{text!r} is a reserved device name on Windows; choose another name")
    if len(text) > MAX_NAME_CHARS or len(text.encode("utf-8")) > MAX_NAME_BYTES:
        if not truncate:
            raise ConfigError(f"the name is too long ({len(text)} characters, {len(text.encode('utf-8'))} bytes); "
                              f"keep it under {MAX_NAME_CHARS} characters and {MAX_NAME_BYTES} bytes")
        text = _truncate(text)
    return text


def resolve_inside(folder: Union[str, Path], filename: Union[str, Path]) -> Path:
    """`folder/filename` resolved, refusing anything that lands outside `folder` or on it.

    Symlinks are followed (an existing link pointing elsewhere is refused), as are `..` parts
    and absolute names. The folder itself does not need to exist yet.
    """
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(root / filename))
    if target == root or root not in target.parents:
        raise ConfigError(f"{str(filename)!r} would be written outside {root}; refusing")
    return target
