"""Finding the CLIP BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`, from open_clip, MIT licence).

The file may not be committed here, so it is looked up, in this order: `$LORA_TRAINER_CLIP_VOCAB`;
an installed `open_clip` package (A1111 ships open-clip-torch; located without importing it, since
importing needs torchvision); our user cache. `python -m lora_trainer.models.clip_vocab --fetch`
fills the cache from the `open_clip_torch` wheel on PyPI (what `make setup` runs).
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

from lora_trainer.errors import UserError

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
LICENSE_NAME = "open_clip_LICENSE.txt"
WHEEL = "open_clip_torch==2.20.0"
ENV_VAR = "LORA_TRAINER_CLIP_VOCAB"
FETCH_COMMAND = "python -m lora_trainer.models.clip_vocab --fetch"


def cache_dir() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/lora_trainer`: derived tokenizer files live here too."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lora_trainer"


def _from_open_clip() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec("open_clip")  # finds, does not import
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / VOCAB_NAME
        if candidate.is_file():
            return candidate
    return None


def find_vocab() -> Optional[Path]:
    """The vocabulary file, or None. A set but wrong `$LORA_TRAINER_CLIP_VOCAB` is an error, not skipped."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"{ENV_VAR}={explicit} is not a file; point it at a {VOCAB_NAME} or unset it")
        return Path(explicit)
    found = _from_open_clip()
    if found:
        return found
    cached = cache_dir() / VOCAB_NAME
    return cached if cached.is_file() else None


def require_vocab() -> Path:
    found = find_vocab()
    if found is None:
        raise UserError(
            f"the CLIP tokenizer vocabulary ({VOCAB_NAME}) was not found; run `{FETCH_COMMAND}` (make setup does), "
            f"install open-clip-torch, or set {ENV_VAR} to that file"
        )
    return found


def _write_atomic(target: Path, data: bytes) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)


def fetch() -> Path:
    """Extract the vocabulary (and its licence) from the open_clip_torch wheel into the cache."""
    target = cache_dir() / VOCAB_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", WHEEL, "-d", temp]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(temp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise UserError(f"could not download {WHEEL} to extract {VOCAB_NAME}: {detail[0]}; "
                            f"install open-clip-torch or set {ENV_VAR} instead")
        with zipfile.ZipFile(wheels[0]) as archive:
            for member in archive.namelist():
                if member.endswith(".dist-info/LICENSE"):
                    _write_atomic(target.parent / LICENSE_NAME, archive.read(member))
            members = [m for m in archive.namelist() if m.endswith("/" + VOCAB_NAME)]
            if not members:
                raise UserError(f"{WHEEL} does not contain {VOCAB_NAME}")
            _write_atomic(target, archive.read(members[0]))  # last: its presence means "done"
    return target


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_trainer.models.clip_vocab",
                                     description=f"Locate (and with --fetch, download) {VOCAB_NAME}.")
    parser.add_argument("--fetch", action="store_true", help="download it into the cache when it is not found")
    args = parser.parse_args(argv)
    try:
        found = find_vocab()
        if found is None and args.fetch:
            print(f"CLIP vocabulary: {fetch()} (extracted from {WHEEL})")
            return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    if found is None:
        print(f"CLIP vocabulary: not found; run `{FETCH_COMMAND}`", file=sys.stderr)
        return 1
    print(f"CLIP vocabulary: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
