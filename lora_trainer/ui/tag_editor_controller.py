"""What the tag editor's controls do, as plain methods (tests call them directly on real files).

One `TagEditorController` per server holds the open dataset's `EditSession`, so unsaved edits
survive a page reload or a lost connection and two browser tabs see the same captions. What
each browser looks at (filter, page, selected image) is its own `View`, kept in a gr.State.
Every action returns a `Screen`: plain data that `tag_editor.py` maps onto components, with
None meaning "leave that part as it is".

Only one page of thumbnails is ever made and sent (the next page is prefetched in the
background); the filter and the tag counts run over in-memory tag sets, so a 10,000-image
dataset stays interactive.
"""

import html
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from lora_trainer.dataset import autotag as A
from lora_trainer.dataset import edits
from lora_trainer.dataset import tags as T
from lora_trainer.dataset.images import ImageProblem, open_preview
from lora_trainer.dataset.library import EditReport
from lora_trainer.dataset.session import EditSession
from lora_trainer.dataset.thumbnails import ThumbnailCache
from lora_trainer.errors import UserError
from lora_trainer.ui.tag_editor_format import (AUTOTAG_NEEDS_WEBUI, banner_html, combine_filter, problems_markdown,
                                              tokens_html)

DEFAULT_PAGE_SIZE = 48
MAX_PAGE_SIZE = 400
TAG_ROWS = 120  # rows of the tag list sent at once (the search narrows it; a longer table only slows the page)
PREVIEW_SIDE = 1024  # the selected image, large
TARGETS = ("selected", "shown", "untagged")
METHODS = {"deepdanbooru": "DeepDanbooru", "blip": "BLIP"}


@dataclass
class View:
    """What one browser tab looks at."""

    expression: str = ""
    indices: List[int] = field(default_factory=list)  # the images the filter shows, in dataset order
    computed: Tuple[int, int] = (-1, -1)  # (session serial, session version) `indices` belong to
    page: int = 0  # 0-based
    page_size: int = DEFAULT_PAGE_SIZE
    selected: Optional[int] = None  # dataset index of the image open in the editor
    tag_rows: List[str] = field(default_factory=list)  # tags of the tag list, in row order
    search: str = ""
    sort: str = "count"

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.indices) // self.page_size))

    def on_page(self) -> List[int]:
        start = self.page * self.page_size
        return self.indices[start:start + self.page_size]


@dataclass
class Detail:
    """The selected image in the per-image editor."""

    index: int
    image: Optional[object]  # PIL image, or None when it cannot be shown
    title: str  # markdown
    tag_choices: List[str]  # "1 · tag", one per tag, in order
    text: str
    tokens: str  # html
    editable: bool
    selected_choice: Optional[str] = None  # the tag choice to keep highlighted (after a move)


@dataclass
class Screen:
    view: View
    banner: str
    status: Optional[str] = None
    gallery: Optional[list] = None  # [(PIL image, label)] of the page
    page_label: Optional[str] = None
    frequency: Optional[List[list]] = None  # [[tag, shown, all]]
    detail: Optional[Detail] = None
    clear_detail: bool = False
    conflicts: Optional[str] = None  # markdown; "" hides the conflict row
    confirm: Optional[str] = None  # a question waiting for Yes ("open", "overwrite"); "" hides it
    confirm_text: str = ""
    problems: Optional[str] = None
    undo: str = "Undo"
    redo: str = "Redo"
    can_undo: bool = False
    can_redo: bool = False
    summary: Optional[str] = None  # "10,000 images in /path"
    expression: Optional[str] = None  # the filter as applied (the filter box shows it)


def _report_text(report: EditReport) -> str:
    return html.escape(report.summary(), quote=False).replace("\n", "  \n")


class TagEditorController:
    def __init__(self, host, busy: Callable[[], bool] = lambda: False, thumbnail_size: int = 200):
        self.host = host
        self.busy = busy  # true while a training job runs (auto-tag must not start then)
        self.session: Optional[EditSession] = None
        self.folder: Optional[Path] = None
        self.serial = 0  # which opened dataset a View's indices belong to
        self.thumbnails = ThumbnailCache(size=thumbnail_size)
        self.checked_images = False
        self._checked_problems: Dict[str, str] = {}  # image -> why, from "Check all images"
        self._lock = threading.RLock()
        self._tokenizer = None
        self._tokenizer_error: Optional[str] = None
        self._tokenizer_thread: Optional[threading.Thread] = None
        self._stop_autotag = threading.Event()
        self.autotag_running = False

    # --- opening -----------------------------------------------------------------------------

    def open(self, view: View, folder: str, caption_extension: str = ".txt", discard: bool = False) -> Screen:
        """Open (or reload) a dataset folder. Unsaved edits are never dropped silently: with
        unsaved changes this asks first, and `discard=True` is the answer."""
        if not folder or not str(folder).strip():
            return self._screen(view, status="Choose the dataset folder in the Dataset tab first.")
        path = Path(str(folder).strip()).expanduser()
        roots = self.host.allowed_roots()
        if roots is not None and not any(_inside(path, root) for root in roots):
            return self._screen(view, status="This server is shared: only folders under " + ", ".join(map(str, roots)) + " are allowed.")
        with self._lock:
            if self.session is not None and self.session.unsaved and not discard:
                same = self.folder == path
                question = (f"{self.session.unsaved:,} unsaved change(s) in `{self.folder}` would be lost by "
                            + ("reloading it" if same else f"opening `{path}`") + ". Discard them?")
                return self._screen(view, status="Save first, or confirm below.", confirm="open", confirm_text=question)
            started = time.perf_counter()
            try:
                session = EditSession.open(path, caption_extension or ".txt")
            except UserError as exc:
                return self._screen(view, status=f"**{html.escape(str(exc))}**", confirm="")
            self.session, self.folder = session, path
            self.serial += 1
            self.thumbnails.clear()
            self.checked_images, self._checked_problems = False, {}
        self._warm_tokenizer()
        view = View(page_size=view.page_size, search=view.search, sort=view.sort)
        self._refilter(view)
        elapsed = time.perf_counter() - started
        notes = []
        if session.index.non_utf8_captions() or session.index.unreadable_captions():
            notes.append("some captions cannot be edited in batches: see Problems")
        status = f"Opened {len(session):,} images in {elapsed:.1f} s." + (f" Note: {'; '.join(notes)}." if notes else "")
        screen = self._screen(view, status=status, gallery=True, frequency=True, clear_detail=True, confirm="",
                              problems=True, conflicts="")
        screen.expression = ""  # a freshly opened dataset shows every image
        return screen

    def show(self, view: View, folder: str, caption_extension: str = ".txt") -> Screen:
        """The Tags tab comes into view (or the page loads): open the Dataset tab's folder if
        nothing is open or it changed and nothing is unsaved; else show what is open, with
        files changed on disk meanwhile taken in (saved captions) or flagged (unsaved ones)."""
        path = Path(str(folder).strip()).expanduser() if folder and str(folder).strip() else None
        with self._lock:
            session = self.session
            if path is not None and (session is None or (self.folder != path and not session.unsaved)):
                return self.open(view, str(path), caption_extension)
            if session is None:
                return self._screen(view, status="Choose the dataset folder in the Dataset tab, then Open.")
            reread, conflicts = session.refresh()
        status = None
        if path is not None and self.folder != path:
            status = (f"Still showing `{self.folder}`, which has unsaved changes: Save them (or Open to discard them) "
                      f"to switch to `{path}`.")
        elif reread or conflicts:
            status = f"{len(reread)} caption(s) changed on disk were re-read" + (
                f"; {len(conflicts)} with unsaved edits changed on disk too (see below)" if conflicts else "") + "."
        self._refilter(view)
        return self._screen(view, status=status, gallery=True, frequency=True, detail=True, conflicts=None)

    def resume(self, view: View) -> Screen:
        """A (re)loaded page: show the dataset open on the server, with its unsaved edits."""
        if self.session is None:
            return self._screen(view)
        with self._lock:
            self._refilter(view)
        status = f"{self.session.unsaved:,} unsaved change(s) kept from before the page was reloaded." if self.session.unsaved else None
        return self._screen(view, status=status, gallery=True, frequency=True, problems=True)

    def cancel(self, view: View) -> Screen:
        """No to the question asked (open and discard, overwrite)."""
        return self._screen(view, status="Cancelled: nothing changed.", confirm="")

    # --- browsing ----------------------------------------------------------------------------

    def _refilter(self, view: View, expression: Optional[str] = None) -> None:
        session = self.session
        if session is None:
            view.indices, view.computed = [], (-1, -1)
            return
        if expression is not None:
            view.expression = expression.strip()
        view.indices = session.filter(view.expression)
        view.computed = (self.serial, session.version)
        view.page = min(view.page, view.pages - 1)
        if view.selected is not None and view.selected >= len(session):
            view.selected = None

    def _current(self, view: View) -> None:
        """Re-run the view's filter if the captions changed since (another tab, an undo...)."""
        if self.session is not None and view.computed != (self.serial, self.session.version):
            self._refilter(view)

    def apply_filter(self, view: View, expression: str) -> Screen:
        try:
            with self._lock:
                self._refilter(view, expression)
        except UserError as exc:
            return self._screen(view, status=f"**Filter not applied:** {html.escape(str(exc))}")
        view.page = 0
        total = len(self.session) if self.session else 0
        what = f"`{html.escape(view.expression)}`" if view.expression else "no filter"
        screen = self._screen(view, status=f"{len(view.indices):,} of {total:,} images shown ({what}).", gallery=True, frequency=True)
        screen.expression = view.expression
        return screen

    def add_to_filter(self, view: View, expression: str, tag: str, operator: str) -> Screen:
        """Join the picked tag into the filter with AND / OR / NOT, and apply it."""
        if not tag or not tag.strip():
            return self._screen(view, status="Pick a tag in the tag list first (click its row).")
        return self.apply_filter(view, combine_filter(expression, tag, operator))

    def go_to_page(self, view: View, page: float, page_size: Optional[float] = None) -> Screen:
        """Page `page` (1-based, clamped); a new page size keeps the first shown image in view."""
        with self._lock:
            self._current(view)
            if page_size is not None:
                size = max(1, min(MAX_PAGE_SIZE, int(page_size or DEFAULT_PAGE_SIZE)))
                if size != view.page_size:
                    first = view.page * view.page_size
                    view.page_size = size
                    page = first // size + 1
            view.page = max(0, min(view.pages - 1, int(page or 1) - 1))
        return self._screen(view, gallery=True)

    def next_page(self, view: View, step: int = 1) -> Screen:
        return self.go_to_page(view, view.page + 1 + step)

    def tag_list(self, view: View, search: str, sort: str) -> Screen:
        view.search, view.sort = search or "", sort or "count"
        return self._screen(view, frequency=True)

    def frequency_rows(self, view: View) -> List[list]:
        """[[tag, count in the shown images, count in all]] matching the search, most frequent
        (in the shown images) first or by name; at most TAG_ROWS rows. Sets `view.tag_rows`."""
        session = self.session
        if session is None:
            view.tag_rows = []
            return []
        shown = session.frequency(view.indices) if len(view.indices) != len(session) else None
        total = session.frequency()
        counts = shown if shown is not None else total
        needle = T.tag_key(view.search) if view.search else ""
        tags = [t for t in total if needle in t] if needle else list(total)
        if view.sort == "name":
            tags.sort()
        else:
            tags.sort(key=lambda t: (-counts.get(t, 0), -total[t], t))
        tags = tags[:TAG_ROWS]
        view.tag_rows = tags
        return [[t, counts.get(t, 0), total[t]] for t in tags]

    def picked_tag(self, view: View, row: Optional[int]) -> str:
        """The tag of a clicked row of the tag list."""
        if row is None or not 0 <= int(row) < len(view.tag_rows):
            return ""
        return view.tag_rows[int(row)]

    def page_items(self, view: View) -> list:
        """The page's thumbnails with labels; prefetches the next page."""
        session = self.session
        if session is None:
            return []
        on_page = view.on_page()
        paths = [session.index.entries[i].image for i in on_page]
        thumbs = self.thumbnails.get_many(paths)
        items = []
        for i, thumb in zip(on_page, thumbs):
            name = session.index.entries[i].image.name
            mark = "● " if session.is_unsaved(i) else ""
            if thumb.data is None:
                items.append((self._placeholder(), f"⚠ {name}: cannot be read"))
            else:  # the thumbnail's file goes out as it is (a picture object would be re-encoded each time)
                items.append((str(thumb.path) if thumb.path else thumb.image, f"{mark}{name}"))
        start = (view.page + 1) * view.page_size
        following = view.indices[start:start + view.page_size]
        if following:
            self.thumbnails.prefetch([session.index.entries[i].image for i in following])
        return items

    def _placeholder(self):
        """A grey tile with a cross, for an image that cannot be read (a file, sent as it is)."""
        path = self.thumbnails.folder / "unreadable.png"
        if not path.is_file():
            from PIL import Image, ImageDraw

            size = self.thumbnails.size
            tile = Image.new("RGB", (size, size), (200, 200, 200))
            draw = ImageDraw.Draw(tile)
            for line in ((size // 4, size // 4, 3 * size // 4, 3 * size // 4), (3 * size // 4, size // 4, size // 4, 3 * size // 4)):
                draw.line(line, fill=(160, 30, 30), width=max(2, size // 20))
            try:
                self.thumbnails.folder.mkdir(parents=True, exist_ok=True)
                tile.save(path)
            except OSError:
                return tile
        return str(path)

    # --- the selected image ------------------------------------------------------------------

    def select(self, view: View, position: Optional[int]) -> Screen:
        """The image at `position` on the current page opens in the editor."""
        with self._lock:
            self._current(view)
            on_page = view.on_page()
            if position is None or not 0 <= int(position) < len(on_page):
                return self._screen(view, status="That image is no longer on this page.", gallery=True)
            view.selected = on_page[int(position)]
        return self._screen(view, detail=True)

    def step_selection(self, view: View, step: int) -> Screen:
        """The previous/next shown image (turning the page when needed)."""
        with self._lock:
            self._current(view)
            if not view.indices:
                return self._screen(view)
            if view.selected in view.indices:
                position = view.indices.index(view.selected) + step
            else:
                position = view.page * view.page_size if step > 0 else view.page * view.page_size + len(view.on_page()) - 1
            position = max(0, min(len(view.indices) - 1, position))
            view.selected = view.indices[position]
            page = position // view.page_size
            turned = page != view.page
            view.page = page
        return self._screen(view, detail=True, gallery=turned)

    def detail(self, index: int) -> Detail:
        session = self.session
        entry = session.index.entries[index]
        caption = session.index.captions[index]
        try:
            image = open_preview(entry.image, PREVIEW_SIDE)
            problem = None
        except ImageProblem as exc:
            image, problem = None, str(exc)
        notes = []
        if problem:
            notes.append(f"⚠ {problem} (skipped in training)")
        if caption.error:
            notes.append(f"⚠ {caption.error}: it cannot be edited")
        elif caption.non_utf8:
            notes.append("⚠ this caption is not valid UTF-8 (shown with �); applying an edit saves it as UTF-8, "
                         "and the original is backed up")
        elif not caption.exists:
            notes.append("no caption file yet: one is created when you save tags for it")
        if session.is_unsaved(index):
            notes.append("● unsaved")
        title = f"**{html.escape(session.index.relative(index))}**" + "".join(f"  \n{html.escape(n)}" for n in notes)
        text = session.text(index)
        return Detail(index, image, title, [f"{n} · {t}" for n, t in enumerate(session.tags[index], start=1)], text,
                      self.tokens(text), caption.error is None)

    def tokens(self, text: str) -> str:
        tokenizer = self.tokenizer()
        if tokenizer is None:
            return tokens_html(None, self._tokenizer_error)
        return tokens_html(T.token_count(tokenizer, text))

    def tokenizer(self):
        """The CLIP tokenizer training uses (every SD family shares its vocabulary, so the count is
        the model's); a host may offer its own through `caption_tokenizer()`. None if unavailable."""
        if self._tokenizer_thread is not None:
            self._tokenizer_thread.join()
        if self._tokenizer is None:  # not loaded, or failed (e.g. raced another thread's first import): try now
            self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> None:
        self._tokenizer_error = None
        try:
            custom = getattr(self.host, "caption_tokenizer", None)
            if custom is not None:
                self._tokenizer = custom()
            else:
                from lora_trainer.models.families import CLIP_L
                from lora_trainer.models.tokenizers import load_clip_tokenizer

                self._tokenizer = load_clip_tokenizer(CLIP_L)
        except Exception as exc:  # noqa: BLE001 - a missing vocabulary must not break editing
            self._tokenizer_error = str(exc) or type(exc).__name__

    def _warm_tokenizer(self) -> None:
        """Load the tokenizer in the background while the first page is looked at."""
        if self._tokenizer is None and self._tokenizer_thread is None:
            self._tokenizer_thread = threading.Thread(target=self._load_tokenizer, name="lora-trainer-tokenizer", daemon=True)
            self._tokenizer_thread.start()

    def _selected(self, view: View) -> Optional[int]:
        if self.session is None or view.selected is None or view.selected >= len(self.session):
            return None
        return view.selected

    def _edit_selected(self, view: View, action: Callable[[int], EditReport]) -> Screen:
        with self._lock:
            index = self._selected(view)
            if index is None:
                return self._screen(view, status="Select an image in the gallery first.")
            try:
                report = action(index)
            except UserError as exc:
                return self._screen(view, status=f"**{html.escape(str(exc))}**")
            self._refilter(view)
        return self._screen(view, status=_report_text(report), detail=True, gallery=True, frequency=True)

    def set_caption_text(self, view: View, text: str) -> Screen:
        return self._edit_selected(view, lambda i: self.session.set_text(i, text or ""))

    def add_image_tag(self, view: View, tag: str, front: bool = False) -> Screen:
        if not T.parse_tags(tag or ""):
            return self._screen(view, status="Type the tag to add first.")

        def add(i: int) -> EditReport:
            new = edits.add(tag, "front" if front else "back").apply(list(self.session.tags[i]), self.session.keys[i])
            return self.session.set_tags(i, new, f"add {tag.strip()!r} to {self.session.index.entries[i].image.name}")

        return self._edit_selected(view, add)

    def change_image_tag(self, view: View, choice: Optional[str], how: str) -> Screen:
        """Remove, move up/down or to the front the chosen tag ("3 · tag") of the selected image."""
        position = _choice_position(choice)
        if position is None:
            return self._screen(view, status="Click one of the image's tags first.")

        def change(i: int) -> EditReport:
            tags = list(self.session.tags[i])
            if not 0 <= position < len(tags):
                raise UserError("that tag is no longer there (the caption changed); pick it again")
            tag = tags[position]
            if how == "remove":
                del tags[position]
            elif how in ("up", "down", "front"):
                target = 0 if how == "front" else max(0, min(len(tags) - 1, position + (-1 if how == "up" else 1)))
                tags.insert(target, tags.pop(position))
            else:
                raise ValueError(f"unknown tag change {how!r}")
            verb = {"remove": "remove", "up": "move up", "down": "move down", "front": "move to the front"}[how]
            return self.session.set_tags(i, tags, f"{verb} {tag!r} in {self.session.index.entries[i].image.name}")

        screen = self._edit_selected(view, change)
        if screen.detail is not None and how != "remove":
            moved = {"front": 0, "up": position - 1, "down": position + 1}[how]
            moved = max(0, min(len(screen.detail.tag_choices) - 1, moved))
            screen.detail.selected_choice = screen.detail.tag_choices[moved] if screen.detail.tag_choices else None
        return screen

    # --- batch actions on the shown images ---------------------------------------------------

    def batch(self, view: View, action: str, tags: str = "", find: str = "", replace_with: str = "",
              regex: bool = False, keep: float = 0, by: str = "name") -> Screen:
        """One batch action over every image the filter shows (all pages), as one undo step."""
        with self._lock:
            if self.session is None:
                return self._screen(view, status="Open a dataset first.")
            self._current(view)
            shown = list(view.indices)
            session = self.session
            try:
                if action == "add":
                    report = session.add(tags, "back", shown)
                elif action == "add_front":
                    report = session.add(tags, "front", shown)
                elif action == "remove":
                    report = session.remove(tags, shown)
                elif action == "move_front":
                    report = session.move_to_front(tags, shown)
                elif action == "replace":
                    report = session.replace(find, replace_with, regex=bool(regex), indices=shown)
                elif action == "dedupe":
                    report = session.dedupe(shown)
                elif action == "sort":
                    report = session.sort(int(keep or 0), by == "frequency", shown)
                else:
                    raise ValueError(f"unknown batch action {action!r}")
            except UserError as exc:
                return self._screen(view, status=f"**{html.escape(str(exc))}**")
            self._refilter(view)
        status = _report_text(report) + f"  \n(on the {len(shown):,} shown image(s); Undo takes it back, Save writes it)"
        return self._screen(view, status=status, gallery=True, frequency=True, detail=True)

    def add_trigger(self, view: View, word: str) -> Screen:
        """The trigger word first in every caption (moved there if present; idempotent)."""
        if not T.parse_tags(word or ""):
            return self._screen(view, status="Type the trigger word first.")
        with self._lock:
            if self.session is None:
                return self._screen(view, status="Open a dataset first.")
            report = self.session.add(T.parse_tags(word)[0], "front")
            self._refilter(view)
        return self._screen(view, status=_report_text(report), gallery=True, frequency=True, detail=True)

    # --- undo, redo, save, conflicts ----------------------------------------------------------

    def undo(self, view: View) -> Screen:
        return self._history(view, "undo")

    def redo(self, view: View) -> Screen:
        return self._history(view, "redo")

    def _history(self, view: View, which: str) -> Screen:
        with self._lock:
            if self.session is None:
                return self._screen(view, status="Open a dataset first.")
            try:
                report = self.session.undo() if which == "undo" else self.session.redo()
            except UserError as exc:
                return self._screen(view, status=html.escape(str(exc).capitalize() + "."))
            self._refilter(view)
        return self._screen(view, status=_report_text(report), gallery=True, frequency=True, detail=True)

    def save(self, view: View, backup: bool = False) -> Screen:
        with self._lock:
            if self.session is None:
                return self._screen(view, status="Open a dataset first.")
            if not self.session.unsaved:
                return self._screen(view, status="Nothing to save: every caption is as on disk.")
            try:
                report = self.session.save(backup=bool(backup))
            except UserError as exc:
                return self._screen(view, status=f"**Nothing saved:** {html.escape(str(exc))}")
        where = f" (backups in `{self.session.index.state_dir / 'backups'}`)" if backup and report.changed else ""
        issues = _report_text(report).split("  \n")[1:]  # past the counts: what was not written, and why
        return self._screen(view, status="  \n".join([f"Saved {len(report.changed):,} caption file(s){where}."] + issues),
                            gallery=True, detail=True, conflicts=None)

    def resolve(self, view: View, keep: str, backup: bool = False) -> Screen:
        with self._lock:
            if self.session is None:
                return self._screen(view, status="Open a dataset first.")
            try:
                report = self.session.resolve_conflicts(keep, backup=bool(backup))
            except UserError as exc:
                return self._screen(view, status=f"**{html.escape(str(exc))}**")
            self._refilter(view)
        return self._screen(view, status=_report_text(report), gallery=True, frequency=True, detail=True, conflicts=None)

    def conflicts_markdown(self) -> str:
        session = self.session
        if session is None or not session.conflicts:
            return ""
        names = [session.index.relative(i, caption=True) for i in sorted(session.conflicts)]
        shown = "\n".join(f"- `{html.escape(n)}`" for n in names[:30]) + (f"\n- … and {len(names) - 30} more" if len(names) > 30 else "")
        return (f"**{len(names)} caption file(s) changed on disk since they were loaded** (another program or editor); "
                f"your edits to them were not written:\n{shown}\n\nKeep the disk version (your edits to these are "
                f"dropped; Undo brings them back) or overwrite the files with your version.")

    # --- problems ----------------------------------------------------------------------------

    def problems(self) -> str:
        session = self.session
        if session is None:
            return "Open a dataset to see its problems."
        index = session.index
        return problems_markdown(index.problems, [index.relative(i, caption=True) for i in index.non_utf8_captions()],
                                 [index.captions[i].error or "" for i in index.unreadable_captions()],
                                 {**self.thumbnails.problems(), **self._checked_problems}, self.checked_images)

    def check_images(self, view: View) -> Screen:
        """Decode every image once (cached by size and mtime, so a second check only stats)."""
        from lora_trainer.dataset.check import image_facts

        session = self.session
        if session is None:
            return self._screen(view, status="Open a dataset first.")
        facts = image_facts(session.index)
        self._checked_problems = {str(session.index.entries[i].image): f.problem for i, f in enumerate(facts) if f.problem}
        self.checked_images = True
        return self._screen(view, status=f"Checked {len(facts):,} images: {len(self._checked_problems)} cannot be read.",
                            problems=True)

    # --- auto-tag ----------------------------------------------------------------------------

    def autotag_targets(self, view: View, target: str) -> List[int]:
        session = self.session
        if target == "selected":
            return [view.selected] if self._selected(view) is not None else []
        if target == "shown":
            self._current(view)
            return list(view.indices)
        if target == "untagged":
            return session.untagged()
        raise ValueError(f"unknown auto-tag target {target!r}")

    def autotag(self, view: View, method: str, threshold: float, target: str, mode: str, blacklist: str,
                keep_first: str = "", confirmed: bool = False) -> Iterator[Screen]:
        """Run the host's interrogator over the chosen images and merge its tags (one undo step,
        unsaved until Save). Yields progress. Overwrite asks first; refused while training."""
        if not getattr(self.host, "can_autotag", False):
            yield self._screen(view, status=AUTOTAG_NEEDS_WEBUI)
            return
        if self.session is None:
            yield self._screen(view, status="Open a dataset first.")
            return
        if self.busy():
            yield self._screen(view, status="A LoRA is training and holds the GPU: auto-tag when it is done.")
            return
        try:
            A.check_mode(mode)
            reject = A.parse_blacklist(blacklist or "")
            A.select_tags([], float(threshold))
        except UserError as exc:
            yield self._screen(view, status=f"**{html.escape(str(exc))}**")
            return
        if method not in METHODS:
            yield self._screen(view, status=f"Choose an auto-tag method ({', '.join(METHODS.values())}).")
            return
        with self._lock:
            targets = self.autotag_targets(view, target)
            session, serial = self.session, self.serial
        if not targets:
            what = {"selected": "Select an image first.", "shown": "No images are shown.",
                    "untagged": "Every image has tags already."}[target]
            yield self._screen(view, status=what)
            return
        if mode == "overwrite" and not confirmed:
            yield self._screen(view, status="Overwrite asks first.", confirm="overwrite",
                               confirm_text=f"Replace the tags of {len(targets):,} image(s) with {METHODS[method]}'s? "
                                            f"(The trigger word stays first; Undo takes it back; nothing is written until Save.)")
            return
        if self.autotag_running:
            yield self._screen(view, status="Auto-tagging is already running.")
            return
        yield from self._run_autotag(view, session, serial, targets, method, float(threshold), mode, reject, keep_first)

    def _run_autotag(self, view, session, serial, targets, method, threshold, mode, reject, keep_first) -> Iterator[Screen]:
        paths = [session.index.entries[i].image for i in targets]
        progress = {"done": 0}
        outcome: Dict[str, object] = {}
        self._stop_autotag.clear()
        self.autotag_running = True

        def run():
            try:
                outcome["results"] = self.host.autotag(paths, method, progress=lambda done, total: progress.update(done=done),
                                                       should_stop=self._stop_autotag.is_set)
            except Exception as exc:  # noqa: BLE001 - shown to the user; the session is untouched
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="lora-trainer-autotag", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.5)
                yield self._screen(view, status=f"Auto-tagging with {METHODS[method]}: {progress['done']:,}/{len(targets):,} "
                                                f"image(s)… (Stop keeps what is done)", confirm="")
        finally:
            self.autotag_running = False
        if "error" in outcome:
            error = outcome["error"]
            message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            yield self._screen(view, status=f"**Auto-tag failed:** {html.escape(message)}. No caption was changed.")
            return
        results = list(outcome.get("results") or [])
        unreadable = [paths[n] for n, r in enumerate(results) if r is None]
        new_tags = {targets[n]: A.select_tags(r, threshold, reject) for n, r in enumerate(results) if r is not None}
        with self._lock:
            if self.session is not session or self.serial != serial:
                yield self._screen(view, status="Another dataset was opened meanwhile; the auto-tag results were not applied.")
                return
            label = f"auto-tag {len(new_tags)} image(s) with {METHODS[method]} ({A.MODE_LABELS[mode]})"
            report = session.merge_tags(new_tags, mode, label, T.parse_tags(keep_first or ""))
            self._refilter(view)
        lines = [_report_text(report)]
        if len(results) < len(targets):
            lines.append(f"Stopped after {len(results):,} of {len(targets):,} image(s); those done were applied.")
        if unreadable:
            lines.append(f"{len(unreadable)} image(s) could not be read and were skipped: "
                         + ", ".join(html.escape(p.name) for p in unreadable[:5]))
        lines.append("Undo takes it back; Save writes it.")
        yield self._screen(view, status="  \n".join(lines), gallery=True, frequency=True, detail=True, problems=bool(unreadable))

    def stop_autotag(self) -> str:
        if not self.autotag_running:
            return "Auto-tagging is not running."
        self._stop_autotag.set()
        return "Stopping after the current image…"

    # --- the screen ----------------------------------------------------------------------------

    def _screen(self, view: View, status: Optional[str] = None, gallery: bool = False, frequency: bool = False,
                detail: bool = False, clear_detail: bool = False, conflicts: Optional[str] = None,
                confirm: Optional[str] = None, confirm_text: str = "", problems: bool = False) -> Screen:
        session = self.session
        screen = Screen(view=view, banner=banner_html(session.unsaved if session else 0,
                                                      len(session.conflicts) if session else 0,
                                                      str(self.folder) if self.folder else None),
                        status=status, confirm=confirm, confirm_text=confirm_text, clear_detail=clear_detail)
        if session is not None:
            screen.summary = f"**{len(session):,} images** in `{html.escape(str(self.folder))}`"
            screen.can_undo, screen.can_redo = session.can_undo, session.can_redo
            screen.undo = "↶ Undo" + (f": {session.undo_label()}" if session.can_undo else "")
            screen.redo = "↷ Redo" + (f": {session.redo_label()}" if session.can_redo else "")
        if gallery:
            screen.gallery = self.page_items(view)
            screen.page_label = f"page {view.page + 1} of {view.pages} · {len(view.indices):,} image(s) shown"
        if frequency:
            screen.frequency = self.frequency_rows(view)
        if detail and session is not None and self._selected(view) is not None:
            screen.detail = self.detail(view.selected)
        screen.conflicts = self.conflicts_markdown() if conflicts is None else conflicts
        if problems:
            screen.problems = self.problems()
        return screen


def _choice_position(choice: Optional[str]) -> Optional[int]:
    """0-based position from a tag choice "3 · tag"."""
    if not choice or " · " not in choice:
        return None
    number = choice.split(" · ", 1)[0]
    return int(number) - 1 if number.isdigit() else None


def _inside(path: Path, root: Path) -> bool:
    resolved, root = path.expanduser().resolve(), root.resolve()
    return resolved == root or root in resolved.parents
