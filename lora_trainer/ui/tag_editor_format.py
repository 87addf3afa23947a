"""Text the tag editor shows: the unsaved banner, token counts, filter building, problem lists.

Pure functions of plain values (no gradio, no session), so what a person reads is tested
directly.
"""

import html
from pathlib import Path
from typing import Dict, List, Optional, Sequence

AUTOTAG_NEEDS_WEBUI = ("Auto-tagging uses the WebUI's own interrogators (DeepDanbooru tags, BLIP captions), so it works "
                       "when this tab runs inside AUTOMATIC1111. Here, tag by hand or in batches; or open the "
                       "dataset in the WebUI's Train LoRA tab to auto-tag it.")
CHUNK = 75  # tokens per CLIP window; captions are trained in up to 3 windows (75 / 150 / 225)
MAX_TOKENS = 3 * CHUNK


def banner_html(unsaved: int, conflicts: int = 0, folder: Optional[str] = None) -> str:
    """The unsaved-changes banner. `data-unsaved` is what the page's leave/reload warning reads."""
    if unsaved:
        text = f"● {unsaved:,} unsaved change{'s' if unsaved != 1 else ''}: Save writes them to the caption files"
        if conflicts:
            text += f" · {conflicts:,} changed on disk meanwhile (see below)"
        kind = "unsaved"
    elif folder:
        text, kind = "All changes saved.", "saved"
    else:
        text, kind = "No dataset open: choose its folder in the Dataset tab, then Open.", "empty"
    return f"<div class='train-lora-tags-banner' data-unsaved='{int(unsaved)}' data-kind='{kind}'>{html.escape(text)}</div>"


def tokens_html(count: Optional[int], error: Optional[str] = None) -> str:
    """`23 / 75 tokens`, against the next window (150, 225); past 225 the rest is cut off."""
    if count is None:
        return f"<div class='train-lora-tags-tokens' data-level='unknown'>Token count unavailable: {html.escape(error or 'no tokenizer')}</div>"
    limit = min(MAX_TOKENS, max(CHUNK, -(-count // CHUNK) * CHUNK))
    level = "ok" if count <= CHUNK else ("chunks" if count <= MAX_TOKENS else "over")
    note = {"ok": "one 75-token window",
            "chunks": f"{-(-count // CHUNK)} windows of 75",
            "over": f"over {MAX_TOKENS}: training cuts off the last {count - MAX_TOKENS}"}[level]
    return (f"<div class='train-lora-tags-tokens' data-level='{level}' data-count='{count}'>"
            f"<b>{count}</b> / {limit} tokens · {html.escape(note)}</div>")


def quote_tag(tag: str) -> str:
    """A tag as a filter term: quoted when it holds brackets or quotes (`"poster (object)"`)."""
    if not any(ch in tag for ch in '()"\\'):
        return tag
    if '"' not in tag:
        return f'"{tag}"'
    return "".join("\\" + ch if ch in "()" else ch for ch in tag)


def combine_filter(expression: str, tag: str, operator: str) -> str:
    """The filter with `tag` joined by AND / OR / NOT (AND NOT). The expression so far is put
    in parentheses where the new operator would otherwise bind into it (`a OR b` + AND c is
    `(a OR b) AND c`)."""
    if operator not in ("AND", "OR", "NOT"):
        raise ValueError(f"operator must be AND, OR or NOT, not {operator!r}")
    term = quote_tag(tag.strip())
    if operator == "NOT":
        term = f"NOT {term}"
    expression = (expression or "").strip()
    if not expression:
        return term
    joiner = "OR" if operator == "OR" else "AND"
    other = " AND " if joiner == "OR" else " OR "
    if other in f" {expression} ":
        expression = f"({expression})"
    return f"{expression} {joiner} {term}"


def problems_markdown(scan_notes: Sequence[str], non_utf8: Sequence[str], unreadable_captions: Sequence[str],
                      bad_images: Dict[str, str], checked: bool, limit: int = 50) -> str:
    """The problems panel: every bad file, what happens to it, and what to do."""
    lines: List[str] = []

    def section(title: str, items: Sequence[str]) -> None:
        if not items:
            return
        if lines:
            lines.append("")
        lines.append(f"**{title}** ({len(items)})")
        lines.extend(f"- {html.escape(item)}" for item in list(items)[:limit])
        if len(items) > limit:
            lines.append(f"- … and {len(items) - limit} more")

    section("Images that cannot be read: skipped (no thumbnail, not auto-tagged, left out of training)",
            [f"{Path(path).name}: {reason.split(': ', 1)[-1]}" for path, reason in sorted(bad_images.items())])
    section("Captions that are not valid UTF-8: shown with �, skipped by batch edits; edit one on its own "
            "to save it as UTF-8 (the original is backed up)", non_utf8)
    section("Captions that cannot be read: skipped, never written", unreadable_captions)
    section("Notes from the folder scan", scan_notes)
    if not lines:
        lines.append("No problems found" + ("." if checked else " so far (images are checked as their thumbnails are "
                                                               "made; Check all images decodes every one)."))
    elif not checked:
        lines.append("\n_Images are checked as their thumbnails are made; Check all images decodes every one._")
    return "\n".join(lines)
