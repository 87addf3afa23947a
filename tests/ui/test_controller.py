"""The tab's handlers called directly: validation, presets, kohya import, one job per server."""

import json
import time

import pytest

from lora_trainer.host.standalone import StandaloneHost
from lora_trainer.ui.controller import TabController, progress_html


@pytest.fixture
def controller(tmp_path, base_models, tiny_dataset):
    host = StandaloneHost(base_models["sd1"], tmp_path / "out", tiny_dataset, user_data=tmp_path / "user")
    return TabController(host)


def _values(controller, **changes):
    values = dict(zip(controller.paths, controller.initial_values()))
    base = {("train", "max_steps"): 12, ("dataset", "resolution"): 64, ("dataset", "min_bucket_reso"): 64,
            ("dataset", "max_bucket_reso"): 128, ("output", "name"): "ctl", ("network", "rank"): 4, ("network", "alpha"): 2.0}
    base.update({tuple(k.split("__")): v for k, v in changes.items()})
    values.update(base)
    return [values[p] for p in controller.paths]


def test_invalid_values_are_reported_per_field_and_nothing_starts(controller):
    message, errors = controller.start(_values(controller, network__rank=0, output__name="../x"))
    assert {e.path for e in errors} >= {"network.rank", "output.name"}
    assert "network.rank" in message and controller.poll().status == "idle"


def test_one_job_at_a_time_stop_and_resume(controller, tmp_path):
    values = _values(controller, train__max_steps=400)
    assert controller.start(values)[0].startswith("Started")
    deadline = time.time() + 120
    while controller.poll().step < 2 and time.time() < deadline:
        time.sleep(0.05)
    second, _ = controller.start(values)
    assert "already running" in second
    assert "Stopping" in controller.stop()
    controller.jobs.wait(120)
    state = controller.poll()
    assert state.status == "interrupted" and 2 <= state.step < 400
    assert "Stopped" in progress_html(state)
    assert controller.form_values() == values  # what a reloaded page shows
    resumed = _values(controller, train__max_steps=state.step + 3)
    assert controller.start(resumed, resume=True)[0].startswith("Resuming")
    controller.jobs.wait(120)
    final = controller.poll()
    assert final.status == "done" and final.step == state.step + 3
    assert final.activation == "tinychar"  # the test grid and Send to txt2img start from it
    assert (tmp_path / "out" / "ctl.safetensors").is_file() and final.output.endswith("ctl.safetensors")
    images, text = controller.test_grid(final.output, "tinychar", "0 1", 1, steps=2, size=64)
    assert len(images) == 2 and "2 images" in text


def test_presets_built_in_and_saved_by_name(controller, tmp_path):
    values = _values(controller)
    applied, text = controller.apply_preset("SDXL character", values)
    by_path = dict(zip(controller.paths, applied))
    assert by_path[("network", "rank")] == 32 and by_path[("dataset", "resolution")] == 1024 and "Applied" in text
    assert by_path[("output", "name")] == "ctl"  # a preset keeps the run's own name
    assert "Saved" in controller.save_preset("my recipe", _values(controller, network__rank=24))
    assert "my recipe" in controller.preset_names()
    again, _ = controller.apply_preset("my recipe", values)
    assert dict(zip(controller.paths, again))[("network", "rank")] == 24
    assert "Preset not saved" in controller.save_preset("../bad", values)


def test_kohya_gui_json_import_fills_the_form_and_lists_what_was_ignored(controller, tmp_path):
    source = tmp_path / "kohya.json"
    source.write_text(json.dumps({"network_dim": 32, "network_alpha": 16, "learning_rate": 0.0002, "unet_lr": 0.0002,
                                  "max_train_steps": 777, "xformers": "xformers", "output_name": "from_kohya",
                                  "pretrained_model_name_or_path": "/elsewhere/model.safetensors"}))
    values, text = controller.import_settings(str(source), _values(controller))
    by_path = dict(zip(controller.paths, values))
    assert by_path[("network", "rank")] == 32 and by_path[("train", "max_steps")] == 777
    assert by_path[("output", "name")] == "from_kohya"
    assert by_path[("model", "checkpoint")] != "/elsewhere/model.safetensors"  # the host's model stays
    assert "Ignored" in text and "xformers" in text


def test_dataset_check_report(controller, tiny_dataset):
    report = controller.check_dataset(str(tiny_dataset), ".txt", 64)
    assert "6 images" in report and "5_tinychar" in report and "tinychar" in report
    assert "does not exist" in controller.check_dataset(str(tiny_dataset / "nope"))


class _HostWithRunsFolder(StandaloneHost):
    """Like the WebUI's host: run logs and state go to a folder of their own, not beside the LoRA."""

    def __init__(self, runs, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._runs = runs

    def runs_dir(self):
        return self._runs


def test_run_state_stays_out_of_the_lora_folder_and_each_name_gets_its_own(tmp_path, base_models, tiny_dataset):
    host = _HostWithRunsFolder(tmp_path / "runs", base_models["sd1"], tmp_path / "Lora", tiny_dataset, user_data=tmp_path / "user")
    controller = TabController(host)
    controller.start(_values(controller, train__max_steps=3, output__name="first"))
    controller.jobs.wait(120)
    assert controller.poll().status == "done"
    shown = dict(zip(controller.paths, controller.form_values()))
    assert shown[("output", "logs_dir")] == ""  # a reloaded page does not pin the next run to this folder
    controller.start(_values(controller, train__max_steps=3, output__name="second"))
    controller.jobs.wait(120)

    assert sorted(p.name for p in (tmp_path / "Lora").rglob("*.safetensors")) == ["first.safetensors", "second.safetensors"]
    assert (tmp_path / "runs" / "first" / "state" / "state.json").is_file()
    assert (tmp_path / "runs" / "second" / "state" / "state.json").is_file()
