"""Captions -> what the UNet needs, computed the way A1111 computes it at inference.

SD1: the last hidden state, or with clip skip N the hidden state N from the end passed through
the final layer norm. SD2: the last hidden state of our 23-layer OpenCLIP tower, which is the
original's penultimate layer with its final norm. SDXL: the penultimate hidden states of both
encoders side by side (no final norm), TE2's pooled projection, and the size conditioning
(`time_ids`). Clip skip only changes SD1, as in A1111 (it ignores the setting for SD2/SDXL).

Captions over 75 tokens are encoded in 75-token chunks (up to `max_chunks`), each wrapped as
BOS + chunk + EOS + padding to 77, encoded on its own and concatenated along the sequence, so a
LoRA learns from the same tensors the WebUI feeds the UNet for long prompts.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

CHUNK = 75  # tokens per chunk, between BOS and EOS
FAMILY_ENCODERS = {"sd1": 1, "sd2": 1, "sdxl": 2}


@dataclass
class TextConditioning:
    hidden_states: torch.Tensor  # [B, 77 * chunks, C]
    pooled: Optional[torch.Tensor] = None  # [B, P] for SDXL (TE2's projection of its first chunk), else None


def _bodies(tokenizer, captions: Sequence[str]) -> List[List[int]]:
    if not captions:
        return []
    return tokenizer(list(captions), add_special_tokens=False)["input_ids"]


def token_count(tokenizer, caption: str) -> int:
    """Tokens of a caption without BOS/EOS (A1111 shows this against 75/150/225)."""
    return len(_bodies(tokenizer, [caption])[0])


def token_counts(tokenizer, captions: Sequence[str]) -> List[int]:
    """`token_count` for many captions in one batched call (the tag editor counts whole datasets)."""
    return [len(ids) for ids in _bodies(tokenizer, captions)]


def tokenize_chunks(tokenizer, captions: Sequence[str], max_chunks: int = 3) -> torch.Tensor:
    """[B, chunks, 77] token ids. Tokens past 75 * max_chunks are dropped; every caption gets the
    batch's chunk count, shorter ones padding chunks (BOS, EOS, pad...)."""
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, not {max_chunks}")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    bodies = [ids[: CHUNK * max_chunks] for ids in _bodies(tokenizer, captions)]
    chunks = max([1] + [-(-len(body) // CHUNK) for body in bodies])
    rows = []
    for body in bodies:
        row = []
        for index in range(chunks):
            ids = [bos] + body[index * CHUNK:(index + 1) * CHUNK] + [eos]
            row.append(ids + [pad] * (CHUNK + 2 - len(ids)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), chunks, CHUNK + 2)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _encode_chunks(encoder, ids: torch.Tensor, layer: Optional[int], final_norm: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Encode [B, k, 77] ids (all chunks in one batch); returns ([B, 77k, C], first chunk's pooled or None).

    layer=None: last_hidden_state (final norm included); else hidden_states[layer], normed if asked.
    """
    batch, chunks, length = ids.shape
    out = encoder(ids.reshape(batch * chunks, length).to(_device(encoder)), output_hidden_states=layer is not None)
    if layer is None:
        hidden = out.last_hidden_state
    else:
        hidden = out.hidden_states[layer]
        if final_norm:
            hidden = encoder.text_model.final_layer_norm(hidden)
    hidden = hidden.reshape(batch, chunks * length, hidden.shape[-1])
    pooled = getattr(out, "text_embeds", None)
    if pooled is not None:
        pooled = pooled.reshape(batch, chunks, -1)[:, 0]
    return hidden, pooled


def encode_text(text_encoders: Sequence[torch.nn.Module], tokenizers: Sequence, family: str, captions: Sequence[str],
                clip_skip: int = 1, max_chunks: int = 3) -> TextConditioning:
    """Conditioning for a batch of captions. Differentiable: call it under torch.no_grad() when
    the text encoders are frozen, with grad enabled to train text-encoder LoRA."""
    if family not in FAMILY_ENCODERS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILY_ENCODERS)}")
    expected = FAMILY_ENCODERS[family]
    if len(text_encoders) != expected or len(tokenizers) != expected:
        raise ValueError(f"{family} needs {expected} text encoder(s) and tokenizer(s), "
                         f"got {len(text_encoders)} and {len(tokenizers)}")
    if family == "sdxl":
        parts, pooled = [], None
        for encoder, tokenizer in zip(text_encoders, tokenizers):
            hidden, this_pooled = _encode_chunks(encoder, tokenize_chunks(tokenizer, captions, max_chunks), -2, False)
            parts.append(hidden)
            pooled = this_pooled if this_pooled is not None else pooled
        if pooled is None:
            raise ValueError("SDXL's second text encoder must be a CLIPTextModelWithProjection (pooled text_embeds)")
        return TextConditioning(torch.cat(parts, dim=-1), pooled)
    encoder, tokenizer = text_encoders[0], tokenizers[0]
    ids = tokenize_chunks(tokenizer, captions, max_chunks)
    if family == "sd1" and clip_skip != 1:
        layers = encoder.config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip must be between 1 and {layers} for this text encoder, not {clip_skip}")
        hidden, _ = _encode_chunks(encoder, ids, -clip_skip, True)
    else:
        hidden, _ = _encode_chunks(encoder, ids, None, False)
    return TextConditioning(hidden)


def sdxl_time_ids(original_size: Tuple[int, int], crop_top_left: Tuple[int, int], target_size: Tuple[int, int],
                  dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
    """[6] = original (h, w), crop (top, left), target (h, w), as SDXL was trained; stack for a batch."""
    values = [*original_size, *crop_top_left, *target_size]
    if len(values) != 6:
        raise ValueError(f"sizes must be (h, w) pairs, got {original_size}, {crop_top_left}, {target_size}")
    return torch.tensor(values, dtype=dtype, device=device)
