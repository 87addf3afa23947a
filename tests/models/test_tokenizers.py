"""CLIP tokenizers built without the hub must give the ids A1111 gives, for every text encoder kind."""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.errors import UserError
from lora_trainer.models import clip_vocab
from lora_trainer.models.conditioning import token_count, token_counts, tokenize_chunks
from lora_trainer.models.families import tiny_config
from lora_trainer.models.tokenizers import load_clip_tokenizer, tokenizers_for, write_tokenizer_files

pytestmark = pytest.mark.both_profiles

# Reference ids: transformers' slow CLIPTokenizer with ftfy installed, as A1111 runs it.
REFERENCE = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "hello world": [49406, 3306, 1002, 49407],
    "<|startoftext|>": [49406, 49406, 49407],
    # CLIP keeps "don't" and ")," as one piece each (BERT's fallback pre-tokenizer splits them).
    "1girl, solo, (masterpiece:1.2), don't": [49406, 272, 1611, 267, 5797, 267, 263, 12066, 281, 272, 269, 273, 2361,
                                              847, 713, 49407],
    # ftfy straightens curly quotes and undoes ligatures and full-width forms before BPE.
    "the woman’s “red” dress": [49406, 518, 2308, 568, 257, 736, 257, 2595, 49407],
    "ﬁne ＦＵＬＬ\u3000width": [49406, 3797, 1476, 23571, 49407],
    "Café  Crème\tBrûlée": [49406, 15304, 1075, 12138, 614, 711, 127, 119, 75, 13489, 49407],
    "日本語のテキスト": [49406, 39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486, 49407],
}


@pytest.mark.parametrize("kind", ["clip_l", "open_clip"])
def test_ids_equal_the_reference_clip_tokenizer(kind):
    tokenizer = load_clip_tokenizer(kind)
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>", "!"]) == [49406, 49407, 0]
    for text, ids in REFERENCE.items():
        assert tokenizer(text)["input_ids"] == ids, text


def test_padding_follows_the_text_encoder_kind():
    assert load_clip_tokenizer("clip_l").pad_token_id == 49407
    assert load_clip_tokenizer("open_clip").pad_token_id == 0
    for family, pads in (("sd1", [49407]), ("sd2", [0]), ("sdxl", [49407, 0])):
        tokenizers = tokenizers_for(tiny_config(family))
        assert [t.pad_token_id for t in tokenizers] == pads, family
        for tokenizer, pad in zip(tokenizers, pads):
            row = tokenize_chunks(tokenizer, ["a cat"])[0, 0].tolist()
            assert row == [49406, 320, 2368, 49407] + [pad] * 73


def test_tokenizer_built_from_the_bpe_vocabulary_alone(tmp_path):
    folder = write_tokenizer_files(clip_vocab.require_vocab(), tmp_path / "tok")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert len(merges) == 1 + 48894  # header + rules
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["<|endoftext|>"] == 49407
    tokenizer = load_clip_tokenizer("open_clip", folder)
    for text, ids in REFERENCE.items():
        assert tokenizer(text)["input_ids"] == ids, text


def test_a_folder_with_another_vocabulary_is_refused(tmp_path):
    # e.g. a GPT-2-style tokenizer folder picked by mistake: loads fine, but is not CLIP's.
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<|startoftext|>": 3, "<|endoftext|>": 4}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(UserError, match="not the CLIP tokenizer"):
        load_clip_tokenizer("clip_l", tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nx y\n")  # a merge of unknown symbols: unusable
    with pytest.raises(UserError, match="cannot load a CLIP tokenizer"):
        load_clip_tokenizer("open_clip", tmp_path)


def test_a_corrupt_bpe_file_is_reported(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as handle:
        handle.write("#version\na b\n")
    with pytest.raises(UserError, match="not CLIP's BPE vocabulary"):
        write_tokenizer_files(bad, tmp_path / "tok")


def test_token_counts_exclude_bos_and_eos():
    tokenizer = load_clip_tokenizer("clip_l")
    captions = ["a photo of a cat", "", ", ".join(["red"] * 50)]
    assert token_count(tokenizer, captions[0]) == 5
    assert token_counts(tokenizer, captions) == [5, 0, 99]


@pytest.fixture
def no_vocab(tmp_path, monkeypatch):
    """An empty cache and no override: the state of a machine where setup never ran."""
    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed here, so the vocabulary is always found")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LORA_TRAINER_CLIP_VOCAB", raising=False)
    return tmp_path / "cache" / "lora_trainer"


def test_missing_vocabulary_says_how_to_fetch_it(no_vocab):
    assert clip_vocab.find_vocab() is None
    with pytest.raises(UserError, match=r"python -m lora_trainer\.models\.clip_vocab --fetch"):
        clip_vocab.require_vocab()


def test_vocabulary_override_by_environment(no_vocab, monkeypatch, tmp_path):
    real = Path(gzip.__file__)  # any existing file: the override is taken as given
    monkeypatch.setenv("LORA_TRAINER_CLIP_VOCAB", str(real))
    assert clip_vocab.find_vocab() == real
    monkeypatch.setenv("LORA_TRAINER_CLIP_VOCAB", str(tmp_path / "missing.txt.gz"))
    with pytest.raises(UserError, match="LORA_TRAINER_CLIP_VOCAB"):
        clip_vocab.find_vocab()


def test_fetch_fills_the_cache_once(no_vocab):
    """What `make setup` runs: downloads the open_clip_torch wheel through pip, keeps one file and its licence."""
    command = [sys.executable, "-m", "lora_trainer.models.clip_vocab", "--fetch"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    target = no_vocab / "bpe_simple_vocab_16e6.txt.gz"
    assert first.stdout.strip() == f"CLIP vocabulary: {target} (extracted from open_clip_torch==2.20.0)"
    assert "Permission is hereby granted" in (no_vocab / "open_clip_LICENSE.txt").read_text()  # MIT
    assert sorted(p.name for p in no_vocab.iterdir()) == ["bpe_simple_vocab_16e6.txt.gz", "open_clip_LICENSE.txt"]
    stamp = target.stat().st_mtime_ns
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and second.stdout.strip() == f"CLIP vocabulary: {target}"
    assert target.stat().st_mtime_ns == stamp
    assert write_tokenizer_files(target, no_vocab / "tok").joinpath("merges.txt").is_file()


HF_CACHE_SCRIPT = """
from lora_trainer.models.tokenizers import load_clip_tokenizer
t = load_clip_tokenizer("clip_l")
print(t.name_or_path, len(t), t("a photo of a cat")["input_ids"])
"""


@pytest.mark.parametrize("cached", ["clip", "two_tokens"])
def test_hf_cache_is_used_only_when_it_holds_the_full_vocabulary(tmp_path, cached):
    """A WebUI usually has openai/clip-vit-large-patch14 in its HF cache; an incomplete one (offline
    loading then yields a 2-token tokenizer) must not be used."""
    repo = tmp_path / "hub" / "models--openai--clip-vit-large-patch14"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    if cached == "clip":
        write_tokenizer_files(clip_vocab.require_vocab(), tmp_path / "files")
        for name in ("vocab.json", "merges.txt"):
            (snapshot / name).write_bytes((tmp_path / "files" / name).read_bytes())
    else:
        (snapshot / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
        (snapshot / "merges.txt").write_text("#version: 0.2\n")
    hub = str(tmp_path / "hub")
    env = dict(os.environ, HF_HUB_CACHE=hub, HUGGINGFACE_HUB_CACHE=hub, HF_HUB_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-c", HF_CACHE_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    source, size, ids = result.stdout.strip().split(" ", 2)
    assert (source == "openai/clip-vit-large-patch14") == (cached == "clip")
    assert size == "49408" and ids == "[49406, 320, 1125, 539, 320, 2368, 49407]"
