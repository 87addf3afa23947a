"""The caption one training step sees: kohya's keep_tokens, shuffle, tag dropout, caption dropout.

Works on tags (comma-separated, as `tags.parse_tags` splits them), never on files.
"""

import random
from dataclasses import dataclass
from typing import Optional

from lora_trainer.dataset.tags import join_tags, parse_tags


@dataclass(frozen=True)
class CaptionAugment:
    keep_tokens: int = 0  # leading tags that never move or drop (trigger words)
    shuffle: bool = False
    tag_dropout: float = 0.0  # chance of dropping each tag after keep_tokens
    caption_dropout: float = 0.0  # chance of training on the empty caption

    def __post_init__(self):
        for name in ("tag_dropout", "caption_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.keep_tokens < 0:
            raise ValueError(f"keep_tokens must be 0 or more, got {self.keep_tokens}")


def fallback_caption(caption: Optional[str], class_token: str) -> str:
    """A missing or empty caption trains on the folder's class token, as kohya does."""
    return caption if caption and caption.strip() else class_token


def training_caption(caption: str, augment: CaptionAugment, rng: Optional[random.Random] = None) -> str:
    """Caption dropout first, then tag dropout and shuffling of the tags after `keep_tokens`."""
    rng = rng or random.Random()
    if augment.caption_dropout and rng.random() < augment.caption_dropout:
        return ""
    tags = parse_tags(caption)
    fixed, rest = tags[:augment.keep_tokens], tags[augment.keep_tokens:]
    if augment.tag_dropout:
        rest = [t for t in rest if rng.random() >= augment.tag_dropout]
    if augment.shuffle:
        rng.shuffle(rest)
    return join_tags(fixed + rest)
