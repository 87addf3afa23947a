"""`python -m lora_trainer train` as scripts and notebooks use it: exit codes, plain progress, JSON events."""

import json
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _write_config(tmp_path, base, dataset, steps=8, extra=""):
    path = tmp_path / "run.toml"
    path.write_text(f"""
[model]
checkpoint = "{base}"
[dataset]
dir = "{dataset}"
resolution = 64
min_bucket_reso = 64
max_bucket_reso = 128
[network]
rank = 4
alpha = 2
[train]
max_steps = {steps}
batch_size = 2
unet_lr = 1e-3
[output]
dir = "{tmp_path / 'out'}"
name = "cli"
{extra}
""")
    return path


def _run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lora_trainer", *map(str, args)], capture_output=True, text=True, cwd=REPO, **kwargs)


def test_done_is_exit_0_with_plain_progress_lines(tmp_path, base_models, tiny_dataset):
    config = _write_config(tmp_path, base_models["sd1"], tiny_dataset, steps=10)
    result = _run("train", config)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # not a terminal: no carriage-return progress spam
    assert "step 10/10" in result.stderr and "cli.safetensors" in result.stderr
    assert (tmp_path / "out" / "cli.safetensors").is_file()


def test_bad_config_is_exit_2_with_every_problem_listed(tmp_path, base_models, tiny_dataset):
    config = _write_config(tmp_path, base_models["sd1"], tiny_dataset)
    result = _run("train", config, "--set", "train.unet_l=1", "--set", "network.rank=0")
    assert result.returncode == 2
    assert "did you mean 'unet_lr'" in result.stderr and "network.rank: must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_is_exit_2(tmp_path, base_models):
    config = _write_config(tmp_path, base_models["sd1"], tmp_path / "nowhere")
    result = _run("train", config)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_ctrl_c_saves_a_state_exits_3_and_resume_finishes(tmp_path, base_models, tiny_dataset):
    config = _write_config(tmp_path, base_models["sd1"], tiny_dataset, steps=400)
    process = subprocess.Popen([sys.executable, "-m", "lora_trainer", "train", str(config), "--json-events"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if json.loads(line)["event"] == "step":
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 3, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "interrupted"
    state = Path(events[-1]["state_dir"])
    assert (state / "state.json").is_file()
    assert not (tmp_path / "out" / "cli.safetensors").exists()
    resumed = _run("train", config, "--resume", state, "--set", "train.max_steps=" + str(json.loads((state / "state.json").read_text())["step"] + 2), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "out" / "cli.safetensors").is_file()
    assert "step " not in resumed.stderr and "done: " in resumed.stderr  # --quiet: the result, no progress

