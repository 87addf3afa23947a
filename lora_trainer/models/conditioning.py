"""Captions -> what the UNet needs, the way A1111 and kohya compute it.

SD1: the last hidden state, or with clip skip N the hidden state N from the end passed
through the final layer norm. SD2: the last hidden state of our 23-layer OpenCLIP tower (the
penultimate layer of the original, with its final norm). SDXL: the penultimate hidden states
of both encoders side by side (no final norm), plus TE2's pooled projection and the size
conditioning (`time_ids`). Captions over 75 tokens are encoded in 75-token chunks (up to
`max_chunks`), each wrapped as BOS + chunk + EOS + padding to 77, and concatenated.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

CHUNK = 75


@dataclass
class TextConditioning:
    hidden_states: torch.Tensor  # [B, 77 * chunks, C]
    pooled: Optional[torch.Tensor] = None  # [B, P] (SDXL)


def token_count(tokenizer, caption: str) -> int:
    """Tokens of a caption, without BOS/EOS (A1111 shows this against 75/150/225)."""
    return len(tokenizer(caption, add_special_tokens=False)["input_ids"])


def tokenize_chunks(tokenizer, captions: Sequence[str], max_chunks: int = 3) -> torch.Tensor:
    """[B, chunks, 77] token ids; every caption gets the batch's chunk count (padding chunks if short)."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    bodies = [tokenizer(c, add_special_tokens=False)["input_ids"][: CHUNK * max_chunks] for c in captions]
    chunks = max(1, max((len(b) + CHUNK - 1) // CHUNK for b in bodies))
    rows = []
    for body in bodies:
        row = []
        for index in range(chunks):
            part = body[index * CHUNK:(index + 1) * CHUNK]
            ids = [bos] + part + [eos]
            row.append(ids + [pad] * (CHUNK + 2 - len(ids)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def _encode_chunks(encoder, ids: torch.Tensor, layer: Optional[int], final_norm: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Encode [B, k, 77] ids chunk by chunk; returns ([B, 77k, C], pooled of the first chunk or None)."""
    batch, chunks, length = ids.shape
    flat = ids.reshape(batch * chunks, length).to(encoder.device)
    out = encoder(flat, output_hidden_states=layer is not None)
    if layer is None:
        hidden = out[0]  # last_hidden_state, final norm included
    else:
        hidden = out.hidden_states[layer]
        if final_norm:
            hidden = encoder.text_model.final_layer_norm(hidden)
    hidden = hidden.reshape(batch, chunks * length, hidden.shape[-1])
    pooled = getattr(out, "text_embeds", None)
    if pooled is not None:
        pooled = pooled.reshape(batch, chunks, -1)[:, 0]
    return hidden, pooled


def encode_text(text_encoders: List, tokenizers: List, family: str, captions: Sequence[str], clip_skip: int = 1,
                max_chunks: int = 3) -> TextConditioning:
    """Conditioning for a batch of captions; keeps gradients if the encoders train."""
    if family == "sdxl":
        parts = []
        pooled = None
        for encoder, tokenizer in zip(text_encoders, tokenizers):
            hidden, this_pooled = _encode_chunks(encoder, tokenize_chunks(tokenizer, captions, max_chunks), -2, False)
            parts.append(hidden)
            pooled = this_pooled if this_pooled is not None else pooled
        return TextConditioning(torch.cat(parts, dim=-1), pooled)
    encoder, tokenizer = text_encoders[0], tokenizers[0]
    ids = tokenize_chunks(tokenizer, captions, max_chunks)
    if family == "sd1" and clip_skip > 1:
        hidden, _ = _encode_chunks(encoder, ids, -clip_skip, True)
    else:
        hidden, _ = _encode_chunks(encoder, ids, None, False)
    return TextConditioning(hidden)


def sdxl_time_ids(original_size: Tuple[int, int], crop_top_left: Tuple[int, int], target_size: Tuple[int, int],
                  dtype=torch.float32, device=None) -> torch.Tensor:
    """[6]: original (h, w), crop (top, left), target (h, w), as SDXL was trained."""
    values = list(original_size) + list(crop_top_left) + list(target_size)
    return torch.tensor(values, dtype=dtype, device=device)
