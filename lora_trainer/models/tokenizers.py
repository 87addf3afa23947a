"""CLIP tokenizers without the hub: from a local folder, the HF cache, or the BPE vocabulary.

All SD text encoders use the same 49408-token CLIP vocabulary; they differ in padding:
CLIP-L (SD1, SDXL TE1) pads with `<|endoftext|>`, OpenCLIP (SD2, SDXL TE2) with id 0 (`!`).
"""

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

from lora_trainer.errors import UserError
from lora_trainer.models.clip_vocab import cache_dir, require_vocab
from lora_trainer.models.families import CLIP_L, OPEN_CLIP, ModelConfig

VOCAB_SIZE = 49408
MAX_LENGTH = 77
_HUB_NAMES = {CLIP_L: "openai/clip-vit-large-patch14", OPEN_CLIP: "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"}
_PAD = {CLIP_L: "<|endoftext|>", OPEN_CLIP: "!"}


def bytes_to_unicode() -> Dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


def _write_tokenizer_files(vocab_gz: Path, folder: Path) -> Path:
    """vocab.json and merges.txt for transformers' CLIPTokenizer, derived from the BPE file."""
    lines = gzip.open(vocab_gz, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:VOCAB_SIZE - 256 - 2 + 1 - 256]  # 48894 merges
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE:
        raise UserError(f"{vocab_gz}: unexpected vocabulary ({len(vocab)} tokens instead of {VOCAB_SIZE})")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "vocab.json.part"
    partial.write_text(json.dumps({token: index for index, token in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    partial.replace(folder / "vocab.json")
    return folder


def _from_folder(folder: Path, kind: str):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder), pad_token=_PAD[kind], model_max_length=MAX_LENGTH)
    if len(tokenizer) != VOCAB_SIZE:
        raise UserError(f"{folder}: tokenizer has {len(tokenizer)} tokens, expected the CLIP vocabulary of {VOCAB_SIZE}")
    return tokenizer


def _from_hf_cache(kind: str):
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(_HUB_NAMES[kind], local_files_only=True, pad_token=_PAD[kind], model_max_length=MAX_LENGTH)
    except (OSError, ValueError):
        return None
    # Offline loading can silently produce a 2-token tokenizer; only a full vocabulary counts.
    return tokenizer if len(tokenizer) == VOCAB_SIZE else None


@lru_cache(maxsize=None)
def _cached(kind: str, folder: Optional[str]):
    if folder:
        return _from_folder(Path(folder), kind)
    tokenizer = _from_hf_cache(kind)
    if tokenizer is not None:
        return tokenizer
    files = cache_dir() / "clip_tokenizer"
    if not (files / "vocab.json").is_file():
        _write_tokenizer_files(require_vocab(), files)
    return _from_folder(files, kind)


def load_clip_tokenizer(kind: str, folder: Optional[Path] = None):
    """A CLIP tokenizer with the padding of `kind` (clip_l or open_clip); cached per process."""
    if kind not in _PAD:
        raise ValueError(f"unknown text encoder kind {kind!r}")
    return _cached(kind, str(folder) if folder else None)


def tokenizers_for(config: ModelConfig, folder: Optional[Path] = None) -> List:
    """One tokenizer per text encoder of `config`."""
    return [load_clip_tokenizer(spec["kind"], folder) for spec in config.text_encoders]
