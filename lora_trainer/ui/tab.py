"""The Train LoRA tab: one gradio Blocks for A1111 (gradio 3.41), Forge (4.x) and standalone.

Sub-tabs: Dataset (folder, check report, buckets), Tags (the tag editor), Settings (presets,
basic fields, Advanced with every config field), Train (Start/Stop/Resume, progress, loss
plot, samples, log, the output file, the test grid). Every page polls the server's one job,
so a reload or a second browser tab shows the running job instead of starting another.
"""

from typing import Dict, Tuple

import gradio as gr

from lora_trainer.ui import fields
from lora_trainer.ui.compat import file_input_type, js, uploaded_path
from lora_trainer.ui.controller import TabController, progress_html
from lora_trainer.ui.jobs import JobState
from lora_trainer.ui.plots import loss_plot

POLL_SECONDS = 1.0
SECTION_TITLES = {"model": "Model", "dataset": "Dataset", "network": "Network", "train": "Training", "output": "Output", "sample": "Samples"}


def _field_updates(controller: TabController, errors) -> list:
    """Per field: its help text, or the error message in its place."""
    from lora_trainer.config import field_info

    by_path = {}
    for error in errors:
        by_path.setdefault(error.path, error.message)
    updates = []
    for section, key in controller.paths:
        message = by_path.get(f"{section}.{key}")
        help_text = field_info(section, key).get("help", "")
        updates.append(gr.update(info=f"⚠ {message}" if message else help_text))
    return updates


def build_tab(host, controller: TabController = None) -> gr.Blocks:
    controller = controller or TabController(host)
    initial = dict(zip(controller.paths, controller.initial_values()))
    components: Dict[Tuple[str, str], gr.components.Component] = {}

    def field(section: str, key: str):
        components[(section, key)] = fields.make_component(section, key, initial[(section, key)])
        return components[(section, key)]

    # The Column carries the root id: A1111 mounts the Blocks inside its own tab and drops the Blocks' id.
    with gr.Blocks(analytics_enabled=False) as tab, gr.Column(elem_id="train_lora_root"):
        progress = gr.HTML(progress_html(JobState()), elem_id="train_lora_progress")
        with gr.Tabs(elem_id="train_lora_tabs"):
            with gr.Tab("Dataset", elem_id="train_lora_tab_dataset"):
                field("dataset", "dir")
                check_button = gr.Button("Check dataset", elem_id="train_lora_check_dataset")
                dataset_report = gr.Markdown(elem_id="train_lora_dataset_report")
            with gr.Tab("Tags", elem_id="train_lora_tab_tags") as tags_tab:
                tag_editor = _tag_editor_place(host, busy=lambda: controller.jobs.snapshot().active)
            with gr.Tab("Settings", elem_id="train_lora_tab_settings"):
                with gr.Row():
                    preset = gr.Dropdown(choices=controller.preset_names(), label="Preset", elem_id="train_lora_preset")
                    apply_preset = gr.Button("Apply preset", elem_id="train_lora_apply_preset")
                    preset_name = gr.Textbox(label="Save current settings as", elem_id="train_lora_preset_name")
                    save_preset = gr.Button("Save preset", elem_id="train_lora_save_preset")
                with gr.Row():
                    import_file = gr.File(label="Import a kohya_ss GUI .json or sd-scripts .toml", file_types=[".json", ".toml"],
                                          type=file_input_type(), elem_id="train_lora_import_file")
                    import_button = gr.Button("Import settings", elem_id="train_lora_import")
                for start in range(0, len(fields.BASIC), 4):
                    with gr.Row():
                        for section, key in fields.BASIC[start:start + 4]:
                            field(section, key)
                with gr.Accordion("Advanced", open=False, elem_id="train_lora_advanced"):
                    for section, title in SECTION_TITLES.items():
                        names = [f for f in fields.advanced_fields() if f[0] == section]
                        if not names:
                            continue
                        gr.Markdown(f"**{title}**")
                        for start in range(0, len(names), 3):
                            with gr.Row():
                                for name in names[start:start + 3]:
                                    field(*name)
            with gr.Tab("Train", elem_id="train_lora_tab_train"):
                with gr.Row():
                    start_button = gr.Button("Start training", variant="primary", elem_id="train_lora_start")
                    stop_button = gr.Button("Stop", elem_id="train_lora_stop")
                    resume_button = gr.Button("Resume", elem_id="train_lora_resume")
                message = gr.Markdown(elem_id="train_lora_message")
                with gr.Row():
                    loss_image = gr.Image(label="Loss", type="pil", interactive=False, elem_id="train_lora_loss_plot")
                    samples = gr.Gallery(label="Samples by step", columns=4, elem_id="train_lora_samples")
                log = gr.Textbox(label="Log", lines=8, max_lines=8, interactive=False, elem_id="train_lora_log")
                output_path = gr.Textbox(label="LoRA file", interactive=False, elem_id="train_lora_output")
                with gr.Accordion("Test grid", open=True, elem_id="train_lora_grid_box"):
                    with gr.Row():
                        grid_prompts = gr.Textbox(label="Prompts (one per line)", lines=2, elem_id="train_lora_grid_prompts",
                                                  value=initial.get(("dataset", "trigger_word")) or "")
                        grid_strengths = gr.Textbox(label="Strengths", value="0 0.4 0.7 1.0", elem_id="train_lora_grid_strengths")
                        grid_seed = gr.Number(label="Seed", value=1234, precision=0, elem_id="train_lora_grid_seed")
                        grid_steps = gr.Number(label="Steps", value=20, precision=0, elem_id="train_lora_grid_steps")
                    with gr.Row():
                        grid_button = gr.Button("Render test grid", elem_id="train_lora_grid_button")
                        send_button = gr.Button("Send to txt2img", elem_id="train_lora_send_to_txt2img", visible=getattr(host, "can_send_to_txt2img", False))
                    grid_message = gr.Markdown(elem_id="train_lora_grid_message")
                    grid = gr.Gallery(label="Test grid", columns=4, elem_id="train_lora_grid")

        inputs = [components[path] for path in controller.paths]
        seen_version = gr.State(-1)

        def on_start(*values):
            text, errors = controller.start(list(values))
            return [text] + _field_updates(controller, errors)

        def on_resume(*values):
            text, errors = controller.start(list(values), resume=True)
            return [text] + _field_updates(controller, errors)

        start_button.click(on_start, inputs=inputs, outputs=[message] + inputs)
        resume_button.click(on_resume, inputs=inputs, outputs=[message] + inputs)
        stop_button.click(controller.stop, outputs=[message])
        check_button.click(
            lambda folder, ext, res: controller.check_dataset(folder, ext, res),
            inputs=[components[("dataset", "dir")], components[("dataset", "caption_extension")], components[("dataset", "resolution")]],
            outputs=[dataset_report],
        )

        def on_apply_preset(name, *values):
            if not name:
                return [gr.update() for _ in values] + ["Choose a preset first."]
            new_values, text = controller.apply_preset(name, list(values))
            return list(new_values) + [text]

        def on_save_preset(name, *values):
            text = controller.save_preset(name, list(values))
            return gr.update(choices=controller.preset_names()), text

        def on_import(path, *values):
            new_values, text = controller.import_settings(uploaded_path(path), list(values))
            return list(new_values) + [text]

        import_button.click(on_import, inputs=[import_file] + inputs, outputs=inputs + [message])
        apply_preset.click(on_apply_preset, inputs=[preset] + inputs, outputs=inputs + [message])
        save_preset.click(on_save_preset, inputs=[preset_name] + inputs, outputs=[preset, message])

        def on_grid(lora, prompts, strengths, seed, steps):
            return controller.test_grid(lora, prompts, strengths, seed, steps=steps or 20)

        grid_button.click(on_grid, inputs=[output_path, grid_prompts, grid_strengths, grid_seed, grid_steps], outputs=[grid, grid_message])
        send_button.click(None, inputs=[output_path, grid_prompts], outputs=None,
                          **js("(path, prompts) => { trainLoraSendToTxt2img(path, prompts); return []; }"))

        def on_poll(last_version, prompts):
            state = controller.poll()
            running = state.active
            buttons = [gr.update(interactive=not running), gr.update(interactive=running), gr.update(interactive=not running)]
            if state.version == last_version:
                return [gr.update()] * 5 + buttons + [last_version, gr.update()]
            gallery = [(s["path"], f"step {s['step']}: {s['prompt']}") for s in state.samples][-24:]
            grid_prompt = gr.update(value=state.activation) if state.activation and not (prompts or "").strip() else gr.update()
            return [progress_html(state), loss_plot(state.losses), gallery, "\n".join(state.log[-200:]),
                    state.output or "", *buttons, state.version, grid_prompt]

        def on_page_load():
            """A reloaded page shows the job's settings; a fresh server leaves the form alone."""
            if controller.jobs.config is None:
                return [gr.update() for _ in inputs]
            return controller.form_values()

        tag_editor.connect(components[("dataset", "dir")], components[("dataset", "caption_extension")], tags_tab, tab)
        tab.load(on_page_load, outputs=inputs)
        tab.load(on_poll, inputs=[seen_version, grid_prompts],
                 outputs=[progress, loss_image, samples, log, output_path, start_button, stop_button, resume_button, seen_version,
                          grid_prompts],
                 every=POLL_SECONDS, show_progress="hidden")
    return tab


def _tag_editor_place(host, busy):
    """The tag editor (Tags sub-tab); `busy` tells it a training job holds the GPU."""
    from lora_trainer.ui.tag_editor import build_tag_editor

    return build_tag_editor(host, busy=busy)
