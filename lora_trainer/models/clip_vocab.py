"""Finding the CLIP BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`, from open_clip, MIT licence).

The file is not committed here. Search order: `$LORA_TRAINER_CLIP_VOCAB`; an installed
`open_clip` package (A1111 ships open-clip-torch; located without importing it, since it needs
torchvision); our user cache. `python -m lora_trainer.models.clip_vocab --fetch` fills the cache
from the `open_clip_torch` wheel on PyPI (what `make setup` runs).
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from lora_trainer.errors import UserError

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
WHEEL = "open_clip_torch==2.20.0"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lora_trainer"


def _from_open_clip() -> Optional[Path]:
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / VOCAB_NAME
        if candidate.is_file():
            return candidate
    return None


def find_vocab() -> Optional[Path]:
    explicit = os.environ.get("LORA_TRAINER_CLIP_VOCAB")
    if explicit and Path(explicit).is_file():
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
            "the CLIP tokenizer vocabulary was not found; run `python -m lora_trainer.models.clip_vocab --fetch` "
            "(make setup does), install open-clip-torch, or set LORA_TRAINER_CLIP_VOCAB to a bpe_simple_vocab_16e6.txt.gz"
        )
    return found


def fetch() -> Path:
    """Extract the vocabulary (and its licence) from the open_clip_torch wheel into the cache."""
    target = cache_dir() / VOCAB_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", temp], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wheel = next(Path(temp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith("/" + VOCAB_NAME):
                    partial = target.with_suffix(".part")
                    partial.write_bytes(archive.read(member))
                    partial.replace(target)
                elif member.endswith(".dist-info/LICENSE"):
                    (target.parent / "open_clip_LICENSE.txt").write_bytes(archive.read(member))
    if not target.is_file():
        raise UserError(f"{WHEEL} did not contain {VOCAB_NAME}")
    return target


def main(argv) -> int:
    if argv[:1] != ["--fetch"]:
        print("usage: python -m lora_trainer.models.clip_vocab --fetch", file=sys.stderr)
        return 2
    already = find_vocab()
    if already:
        print(f"CLIP vocabulary: {already}")
        return 0
    print(f"CLIP vocabulary: {fetch()} (extracted from {WHEEL})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
