"""The Tags sub-tab: gradio components wired to `TagEditorController` (all logic lives there).

Every handler returns a `Screen`, which `_render` maps onto one fixed list of outputs (None
parts become "no change", so an action re-sends only what it changed). Runs on gradio 3.41
(A1111) and 4.x (Forge, standalone); version differences stay in `compat`.
"""

import inspect
from typing import Callable, List, Optional

import gradio as gr

from lora_trainer.dataset.autotag import MODE_LABELS
from lora_trainer.ui.compat import gallery_kwargs
from lora_trainer.ui.tag_editor_controller import DEFAULT_PAGE_SIZE, METHODS, Screen, TagEditorController, View
from lora_trainer.ui.tag_editor_format import AUTOTAG_NEEDS_WEBUI, banner_html

PAGE_SIZES = ["24", "48", "96", "200"]
TARGET_LABELS = {"selected image": "selected", "shown (filtered) images": "shown", "untagged images": "untagged"}
MODE_CHOICES = {label: mode for mode, label in MODE_LABELS.items()}
METHOD_CHOICES = {label: method for method, label in METHODS.items()}


class TagEditor:
    """The components of the Tags sub-tab; `connect` wires what needs components built elsewhere."""

    def __init__(self, host, controller: Optional[TagEditorController] = None, busy: Callable[[], bool] = lambda: False):
        self.controller = controller or TagEditorController(host, busy=busy)
        self.host = host
        self._build()

    # --- layout ----------------------------------------------------------------------------------

    def _build(self) -> None:
        c = self.controller
        can_autotag = bool(getattr(self.host, "can_autotag", False))
        with gr.Column(elem_id="train_lora_tags"):
            self.view = gr.State(View())
            self.confirm_kind = gr.State("")
            self.banner = gr.HTML(banner_html(0), elem_id="train_lora_tags_banner")
            self.summary = gr.Markdown("", elem_id="train_lora_tags_summary")  # own line: a long path must not squeeze the buttons
            with gr.Row(elem_id="train_lora_tags_toolbar"):
                self.open_button = gr.Button("Open / reload", size="sm", elem_id="train_lora_tags_open", min_width=70)
                self.undo_button = gr.Button("↶ Undo", size="sm", interactive=False, elem_id="train_lora_tags_undo", min_width=70)
                self.redo_button = gr.Button("↷ Redo", size="sm", interactive=False, elem_id="train_lora_tags_redo", min_width=70)
                self.backup = gr.Checkbox(False, label="Keep backups", elem_id="train_lora_tags_backup")
                self.save_button = gr.Button("Save", variant="primary", size="sm", elem_id="train_lora_tags_save", min_width=70)
            self.status = gr.Markdown("", elem_id="train_lora_tags_status")
            with gr.Row(visible=False, elem_id="train_lora_tags_confirm") as self.confirm_row:
                self.confirm_text = gr.Markdown("", elem_id="train_lora_tags_confirm_text")
                self.confirm_yes = gr.Button("Yes, go ahead", variant="stop", size="sm", elem_id="train_lora_tags_confirm_yes", min_width=70)
                self.confirm_no = gr.Button("Cancel", size="sm", elem_id="train_lora_tags_confirm_no", min_width=70)
            with gr.Row(visible=False, elem_id="train_lora_tags_conflicts") as self.conflicts_row:
                self.conflicts = gr.Markdown("", elem_id="train_lora_tags_conflicts_text")
                self.keep_disk = gr.Button("Keep the disk version", size="sm", elem_id="train_lora_tags_keep_disk", min_width=70)
                self.keep_mine = gr.Button("Overwrite with mine", variant="stop", size="sm", elem_id="train_lora_tags_keep_mine", min_width=70)
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=240, elem_id="train_lora_tags_filter_column"):
                    self.filter = gr.Textbox(label="Filter (AND, OR, NOT, parentheses)", placeholder="1girl AND NOT (solo OR 1boy)",
                                             elem_id="train_lora_tags_filter")
                    with gr.Row():
                        self.filter_apply = gr.Button("Apply filter", size="sm", elem_id="train_lora_tags_filter_apply", min_width=70)
                        self.filter_clear = gr.Button("Show all", size="sm", elem_id="train_lora_tags_filter_clear", min_width=70)
                    self.picked = gr.Textbox(label="Picked tag (click a row below)", elem_id="train_lora_tags_picked")
                    with gr.Row():
                        self.join_and = gr.Button("AND", size="sm", elem_id="train_lora_tags_and", min_width=70)
                        self.join_or = gr.Button("OR", size="sm", elem_id="train_lora_tags_or", min_width=70)
                        self.join_not = gr.Button("NOT", size="sm", elem_id="train_lora_tags_not", min_width=70)
                    with gr.Row():
                        self.search = gr.Textbox(label="Search tags", elem_id="train_lora_tags_search", scale=2)
                        self.sort = gr.Radio(["count", "name"], value="count", label="Sort by", elem_id="train_lora_tags_sort", scale=1)
                    self.frequency = gr.Dataframe(headers=["tag", "shown", "all"], datatype=["str", "number", "number"],
                                                  value=[["", 0, 0]], interactive=False, wrap=True, height=520,
                                                  elem_id="train_lora_tags_frequency")
                with gr.Column(scale=3, min_width=420, elem_id="train_lora_tags_gallery_column"):
                    with gr.Row(elem_id="train_lora_tags_pager"):
                        self.prev_page = gr.Button("◀", size="sm", elem_id="train_lora_tags_prev", min_width=40)
                        self.page = gr.Number(1, precision=0, label="Page", elem_id="train_lora_tags_page", min_width=80)
                        self.next_page = gr.Button("▶", size="sm", elem_id="train_lora_tags_next", min_width=40)
                        self.page_size = gr.Dropdown(PAGE_SIZES, value=str(DEFAULT_PAGE_SIZE), label="Per page",
                                                     elem_id="train_lora_tags_page_size", min_width=90)
                        self.page_label = gr.Markdown("", elem_id="train_lora_tags_page_label")
                    self.gallery = gr.Gallery(label="Images (click one to edit it)", columns=5, height=600,
                                              allow_preview=False, object_fit="contain", elem_id="train_lora_tags_gallery",
                                              **gallery_kwargs())
                    with gr.Accordion("Batch edit the shown images", open=True, elem_id="train_lora_tags_batch"):
                        with gr.Row():
                            self.batch_tags = gr.Textbox(label="Tags (comma-separated)", elem_id="train_lora_tags_batch_tags", scale=3)
                            self.batch_add = gr.Button("Add at end", size="sm", elem_id="train_lora_tags_batch_add", min_width=70)
                            self.batch_add_front = gr.Button("Add at front", size="sm", elem_id="train_lora_tags_batch_add_front", min_width=70)
                            self.batch_remove = gr.Button("Remove", size="sm", elem_id="train_lora_tags_batch_remove", min_width=70)
                            self.batch_move = gr.Button("Move to front", size="sm", elem_id="train_lora_tags_batch_move_front", min_width=70)
                        with gr.Row():
                            self.find = gr.Textbox(label="Find tag", elem_id="train_lora_tags_find", scale=2)
                            self.replace_with = gr.Textbox(label="Replace with (empty removes)", elem_id="train_lora_tags_replace_with", scale=2)
                            self.regex = gr.Checkbox(False, label="Regex", elem_id="train_lora_tags_regex")
                            self.batch_replace = gr.Button("Replace", size="sm", elem_id="train_lora_tags_batch_replace", min_width=70)
                        with gr.Row():
                            self.batch_dedupe = gr.Button("Remove duplicate tags", size="sm", elem_id="train_lora_tags_batch_dedupe", min_width=70)
                            self.sort_by = gr.Radio(["name", "frequency"], value="name", label="Sort tags by",
                                                    elem_id="train_lora_tags_sort_by")
                            self.keep = gr.Number(1, precision=0, label="Keep first N in place", elem_id="train_lora_tags_keep")
                            self.batch_sort = gr.Button("Sort tags", size="sm", elem_id="train_lora_tags_batch_sort", min_width=70)
                        with gr.Row():
                            self.trigger = gr.Textbox(label="Trigger word", elem_id="train_lora_tags_trigger", scale=3)
                            self.trigger_add = gr.Button("Add to all (first tag)", size="sm", elem_id="train_lora_tags_trigger_add", min_width=70)
                    with gr.Accordion("Auto-tag", open=False, elem_id="train_lora_tags_autotag"):
                        if can_autotag:
                            gr.Markdown("Uses the WebUI's interrogators (downloaded on first use). Results are merged as one "
                                        "step: Undo takes them back, nothing is written until Save. Runs under the WebUI's "
                                        "GPU lock, never while a LoRA trains.", elem_id="train_lora_tags_autotag_note")
                        else:
                            gr.Markdown(f"**{AUTOTAG_NEEDS_WEBUI}**", elem_id="train_lora_tags_autotag_note")
                        with gr.Row():
                            self.method = gr.Radio(list(METHOD_CHOICES), value="DeepDanbooru", label="Interrogator",
                                                   interactive=can_autotag, elem_id="train_lora_tags_autotag_method")
                            self.threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold (DeepDanbooru)",
                                                       interactive=can_autotag, elem_id="train_lora_tags_autotag_threshold")
                        with gr.Row():
                            self.target = gr.Radio(list(TARGET_LABELS), value="untagged images", label="Images",
                                                   interactive=can_autotag, elem_id="train_lora_tags_autotag_target")
                            self.mode = gr.Radio(list(MODE_CHOICES), value="append", label="Existing captions",
                                                 interactive=can_autotag, elem_id="train_lora_tags_autotag_mode")
                        self.blacklist = gr.Textbox(label="Blacklist (tags, wildcards like *hair*, or /regex/)",
                                                    interactive=can_autotag, elem_id="train_lora_tags_autotag_blacklist")
                        with gr.Row():
                            self.autotag_run = gr.Button("Auto-tag", variant="primary", size="sm", interactive=can_autotag,
                                                         elem_id="train_lora_tags_autotag_run", min_width=70)
                            self.autotag_stop = gr.Button("Stop", size="sm", interactive=can_autotag,
                                                          elem_id="train_lora_tags_autotag_stop", min_width=70)
                    with gr.Accordion("Problems", open=False, elem_id="train_lora_tags_problems_box"):
                        self.problems = gr.Markdown("Open a dataset to see its problems.", elem_id="train_lora_tags_problems")
                        self.check_images = gr.Button("Check all images", size="sm", elem_id="train_lora_tags_check_images", min_width=70)
                with gr.Column(scale=2, min_width=320, elem_id="train_lora_tags_image_column"):
                    self.image = gr.Image(label="Selected image", type="pil", interactive=False, height=420,
                                          elem_id="train_lora_tags_image")
                    self.image_title = gr.Markdown("Click an image in the gallery.", elem_id="train_lora_tags_image_title")
                    with gr.Row():
                        self.image_prev = gr.Button("◀ Previous", size="sm", elem_id="train_lora_tags_image_prev", min_width=70)
                        self.image_next = gr.Button("Next ▶", size="sm", elem_id="train_lora_tags_image_next", min_width=70)
                    self.tokens = gr.HTML("", elem_id="train_lora_tags_tokens")
                    self.image_tags = gr.Radio([], label="Tags (click one, then move or remove it)", elem_id="train_lora_tags_image_tags")
                    with gr.Row():
                        self.tag_up = gr.Button("↑", size="sm", elem_id="train_lora_tags_tag_up", min_width=40)
                        self.tag_down = gr.Button("↓", size="sm", elem_id="train_lora_tags_tag_down", min_width=40)
                        self.tag_front = gr.Button("To front", size="sm", elem_id="train_lora_tags_tag_front", min_width=70)
                        self.tag_remove = gr.Button("Remove", size="sm", elem_id="train_lora_tags_tag_remove", min_width=70)
                    with gr.Row():
                        self.new_tag = gr.Textbox(label="Add tag(s)", elem_id="train_lora_tags_new_tag", scale=3)
                        self.new_tag_add = gr.Button("Add", size="sm", elem_id="train_lora_tags_new_tag_add", min_width=70)
                        self.new_tag_front = gr.Button("Add at front", size="sm", elem_id="train_lora_tags_new_tag_front", min_width=70)
                    self.caption = gr.Textbox(label="Caption text", lines=4, elem_id="train_lora_tags_caption")
                    self.caption_apply = gr.Button("Apply text", size="sm", elem_id="train_lora_tags_caption_apply", min_width=70)
        self.outputs = [self.view, self.banner, self.status, self.gallery, self.page, self.page_label, self.frequency,
                        self.image, self.image_title, self.image_tags, self.caption, self.tokens,
                        self.conflicts, self.conflicts_row, self.confirm_row, self.confirm_text, self.confirm_kind,
                        self.problems, self.undo_button, self.redo_button, self.summary, self.filter]
        self._wire()

    # --- Screen -> outputs ---------------------------------------------------------------------

    @staticmethod
    def _render(screen: Screen) -> list:
        keep = gr.update()
        view = screen.view
        gallery = screen.gallery is not None
        out = [view, screen.banner, keep if screen.status is None else screen.status,
               screen.gallery if gallery else keep, (view.page + 1) if gallery else keep,
               screen.page_label if screen.page_label is not None else keep,
               (screen.frequency or [["", 0, 0]]) if screen.frequency is not None else keep]
        detail = screen.detail
        if detail is not None:
            out += [detail.image, detail.title, gr.update(choices=detail.tag_choices, value=detail.selected_choice),
                    detail.text, detail.tokens]
        elif screen.clear_detail:
            out += [None, "Click an image in the gallery.", gr.update(choices=[], value=None), "", ""]
        else:
            out += [keep] * 5
        if screen.conflicts is None:
            out += [keep, keep]
        else:
            out += [screen.conflicts, gr.update(visible=bool(screen.conflicts))]
        if screen.confirm is None:
            out += [keep, keep, keep]
        else:
            out += [gr.update(visible=bool(screen.confirm)), screen.confirm_text, screen.confirm]
        out += [keep if screen.problems is None else screen.problems,
                gr.update(value=screen.undo, interactive=screen.can_undo),
                gr.update(value=screen.redo, interactive=screen.can_redo),
                keep if screen.summary is None else screen.summary,
                keep if screen.expression is None else screen.expression]
        return out

    def _on(self, event, fn, inputs: List, **kwargs) -> None:
        """Wire `event` to `fn(*inputs) -> Screen` (or a generator of them) with the standard outputs."""
        render = self._render
        if inspect.isgeneratorfunction(fn):
            def handler(*values):
                for screen in fn(*values):
                    yield render(screen)
        else:
            def handler(*values):
                return render(fn(*values))
        kwargs.setdefault("show_progress", "minimal")  # every action updates many parts: no overlay on each
        event(handler, inputs=inputs, outputs=self.outputs, **kwargs)

    # --- events ----------------------------------------------------------------------------------

    def _wire(self) -> None:
        c = self.controller
        v = self.view
        self._on(self.filter_apply.click, c.apply_filter, [v, self.filter])
        self._on(self.filter.submit, c.apply_filter, [v, self.filter])
        self._on(self.filter_clear.click, lambda view: c.apply_filter(view, ""), [v])
        for button, operator in ((self.join_and, "AND"), (self.join_or, "OR"), (self.join_not, "NOT")):
            self._join(button, operator)
        self._on(self.search.input, c.tag_list, [v, self.search, self.sort])
        self._on(self.sort.input, c.tag_list, [v, self.search, self.sort])

        def pick(view: View, evt: gr.SelectData):
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            return c.picked_tag(view, row)

        self.frequency.select(pick, inputs=[v], outputs=[self.picked])

        self._on(self.prev_page.click, lambda view: c.next_page(view, -1), [v])
        self._on(self.next_page.click, lambda view: c.next_page(view, 1), [v])
        self._on(self.page.submit, lambda view, page: c.go_to_page(view, page), [v, self.page])
        self._on(self.page_size.input, lambda view, size: c.go_to_page(view, view.page + 1, int(size)), [v, self.page_size])

        def select(view: View, evt: gr.SelectData):
            index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            return self._render(c.select(view, index))

        self.gallery.select(select, inputs=[v], outputs=self.outputs, show_progress="minimal")
        self._on(self.image_prev.click, lambda view: c.step_selection(view, -1), [v])
        self._on(self.image_next.click, lambda view: c.step_selection(view, 1), [v])

        batch_inputs = [v, self.batch_tags, self.find, self.replace_with, self.regex, self.keep, self.sort_by]
        for button, action in ((self.batch_add, "add"), (self.batch_add_front, "add_front"), (self.batch_remove, "remove"),
                               (self.batch_move, "move_front"), (self.batch_replace, "replace"),
                               (self.batch_dedupe, "dedupe"), (self.batch_sort, "sort")):
            self._batch(button, action, batch_inputs)
        self._on(self.trigger_add.click, c.add_trigger, [v, self.trigger])

        self._on(self.undo_button.click, c.undo, [v])
        self._on(self.redo_button.click, c.redo, [v])
        self._on(self.save_button.click, c.save, [v, self.backup])
        self._on(self.keep_disk.click, lambda view, backup: c.resolve(view, "disk", backup), [v, self.backup])
        self._on(self.keep_mine.click, lambda view, backup: c.resolve(view, "mine", backup), [v, self.backup])

        self._on(self.caption_apply.click, c.set_caption_text, [v, self.caption])
        self._on(self.new_tag_add.click, lambda view, tag: c.add_image_tag(view, tag), [v, self.new_tag])
        self._on(self.new_tag.submit, lambda view, tag: c.add_image_tag(view, tag), [v, self.new_tag])
        self._on(self.new_tag_front.click, lambda view, tag: c.add_image_tag(view, tag, front=True), [v, self.new_tag])
        for button, how in ((self.tag_up, "up"), (self.tag_down, "down"), (self.tag_front, "front"), (self.tag_remove, "remove")):
            self._tag_change(button, how)

        self._on(self.check_images.click, c.check_images, [v])
        autotag_inputs = [v, self.method, self.threshold, self.target, self.mode, self.blacklist, self.trigger]
        self._on(self.autotag_run.click, self._autotag, autotag_inputs)
        self.autotag_stop.click(c.stop_autotag, outputs=[self.status], queue=False)
        self._on(self.confirm_no.click, c.cancel, [v])

    def _join(self, button, operator: str) -> None:
        self._on(button.click, lambda view, expression, tag: self.controller.add_to_filter(view, expression, tag, operator),
                 [self.view, self.filter, self.picked])

    def _batch(self, button, action: str, inputs: List) -> None:
        def run(view, tags, find, replace_with, regex, keep, by):
            return self.controller.batch(view, action, tags, find, replace_with, regex, keep, by)

        self._on(button.click, run, inputs)

    def _tag_change(self, button, how: str) -> None:
        self._on(button.click, lambda view, choice: self.controller.change_image_tag(view, choice, how), [self.view, self.image_tags])

    def _autotag(self, view, method_label, threshold, target_label, mode_label, blacklist, trigger, confirmed=False):
        yield from self.controller.autotag(view, METHOD_CHOICES.get(method_label, method_label), threshold,
                                           TARGET_LABELS.get(target_label, target_label), MODE_CHOICES.get(mode_label, mode_label),
                                           blacklist, trigger, confirmed)

    def connect(self, folder, caption_extension, tab=None, app=None) -> None:
        """Wire the components built elsewhere in the tab: the Dataset tab's folder and caption
        extension (Open reads them), the Tags tab (opening it shows the folder), the page load
        (a reloaded page shows the edits still unsaved on the server)."""
        c = self.controller
        inputs = [self.view, folder, caption_extension]
        self._on(self.open_button.click, c.open, inputs)
        if tab is not None:
            self._on(tab.select, c.show, inputs)
        if app is not None:
            self._on(app.load, c.resume, [self.view])

        def confirmed(kind, view, folder_value, extension, method, threshold, target, mode, blacklist, trigger):
            if kind == "open":
                yield c.open(view, folder_value, extension, discard=True)
            elif kind == "overwrite":
                yield from self._autotag(view, method, threshold, target, mode, blacklist, trigger, confirmed=True)
            else:
                yield c.cancel(view)

        self._on(self.confirm_yes.click, confirmed, [self.confirm_kind, self.view, folder, caption_extension, self.method,
                                                     self.threshold, self.target, self.mode, self.blacklist, self.trigger])


def build_tag_editor(host, busy: Callable[[], bool] = lambda: False, controller: Optional[TagEditorController] = None) -> TagEditor:
    """The Tags sub-tab, built inside the caller's Blocks context."""
    return TagEditor(host, controller, busy)
