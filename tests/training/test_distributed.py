"""Data-parallel training in real processes: 2 CPU processes over gloo, as `accelerate launch` starts them.

A two-process step with batch 1 per process must be the single-process step with batch 2 on the
same items; only rank 0 writes; Ctrl-C stops both processes after the same step with one state
that resumes; an error on one rank ends the run instead of leaving the other waiting.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lora_trainer.cli.launch import free_port
from lora_trainer.config import save_config
from lora_trainer.errors import UserError
from lora_trainer.training.trainer import train

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).with_name("accelerate")  # the console script of this environment
RUN_LIMIT_S = 600


def _env() -> dict:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", PYTHONPATH=str(REPO))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # never inherit a launcher's identity
        env.pop(name, None)
    return env


def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_trainer", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=RUN_LIMIT_S, **kwargs)


def _accelerate_launch(*args) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 ...` (--multi_gpu picks torch's launcher, on CPUs too)."""
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=RUN_LIMIT_S)


def _config(make_config, folder: Path, **train_options):
    return make_config("sd1", train={"device": "cpu", "batch_size": 1, **train_options},
                       output={"dir": str(folder), "save_precision": "fp32"})


def _events(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _losses(config) -> list:
    return [json.loads(line)["loss"] for line in (config.logs_dir / "metrics.jsonl").read_text().splitlines()]


def _relative_error(a: dict, b: dict, keys=None) -> float:
    """|a - b| / |a| over the named tensors taken together (all of them by default)."""
    assert a.keys() == b.keys()
    keys = list(keys if keys is not None else a)
    first = torch.cat([a[key].double().flatten() for key in keys])
    second = torch.cat([b[key].double().flatten() for key in keys])
    return float((first - second).norm() / first.norm())


def _adam_first_moments(state_dir: Path) -> dict:
    """The optimizer's averaged gradients (exp_avg) per parameter, from a saved state."""
    from lora_trainer.training.state import load_state

    saved = load_state(state_dir)[1]["optimizer"]["state"]
    return {str(index): entry["exp_avg"] for index, entry in saved.items()}


@pytest.mark.both_profiles  # accelerate 0.21 (A1111) and 0.31 (Forge)
def test_one_two_process_step_equals_one_single_process_step_on_the_same_global_batch(make_config, tmp_path):
    options = {"max_steps": 1, "max_grad_norm": 0.0}  # no clipping: the averaged gradient itself is compared
    single = _config(make_config, tmp_path / "single", **options, batch_size=2)
    reference = train(single)

    double = _config(make_config, tmp_path / "ddp", **options, batch_size=1)
    double.sample.every_steps, double.sample.prompts, double.sample.steps = 1, ["tinychar, red circle"], 1
    run = _cli("train", save_config(tmp_path / "ddp.toml", double), "--num-processes", "2", "--json-events")
    assert run.returncode == 0, run.stderr[-3000:]

    events = _events(run.stdout)
    kinds = [event["event"] for event in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1, kinds  # one reporter, not one per process
    assert events[0]["processes"] == 2 and events[-1]["status"] == "done"
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.safetensors")) == ["tiny.safetensors"]
    assert kinds.count("sample") == 1 and sorted(p.name for p in (double.logs_dir / "samples").iterdir()) == ["step000001_0.png"]
    assert _losses(double) == pytest.approx(_losses(single), rel=1e-5)  # global-batch mean, one line per step

    single_weights, ddp_weights = load_file(str(reference.output)), load_file(str(tmp_path / "ddp" / "tiny.safetensors"))
    assert _relative_error(single_weights, ddp_weights) <= 1e-4
    # lora_up starts at zero, so it is the step itself. AdamW divides each gradient by its own size
    # (+ eps 1e-8): gradients near 1e-8 turn rounding differences of the sums into visible update
    # differences, so this is looser; the gradient itself (exp_avg = 0.1 x the averaged gradient) is tight.
    assert _relative_error(single_weights, ddp_weights, [k for k in single_weights if "lora_up" in k]) <= 1e-3
    assert _relative_error(_adam_first_moments(reference.state_dir), _adam_first_moments(double.logs_dir / "state")) <= 1e-4
    with safe_open(str(tmp_path / "ddp" / "tiny.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_total_batch_size"] == "2"  # 1 per process x 2 processes


def test_ctrl_c_stops_both_processes_with_one_state_that_resumes_like_a_straight_run(make_config, tmp_path):
    stopped = _config(make_config, tmp_path / "stopped", max_steps=400)
    config_file = save_config(tmp_path / "stopped.toml", stopped)
    process = subprocess.Popen([sys.executable, "-m", "lora_trainer", "train", str(config_file), "--num-processes", "2",
                                "--json-events"], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("{") and json.loads(line)["event"] == "step":
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=RUN_LIMIT_S)
    assert process.returncode == 3, stderr[-3000:]
    assert _events(stdout)[-1]["status"] == "interrupted" and "resume with" in stderr
    state_dir = stopped.logs_dir / "state"
    saved = json.loads((state_dir / "state.json").read_text())
    assert saved["world_size"] == 2 and len(saved["rank_rngs"]) == 2
    assert not (tmp_path / "stopped" / "tiny.safetensors").exists()
    step = saved["step"]

    resumed = _accelerate_launch("-m", "lora_trainer", "train", config_file, "--resume", state_dir,
                                 "--set", f"train.max_steps={step + 2}", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    straight = _config(make_config, tmp_path / "straight", max_steps=step + 2)
    run = _cli("train", save_config(tmp_path / "straight.toml", straight), "--num-processes", "2", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _losses(stopped) == pytest.approx(_losses(straight), rel=1e-5)
    assert _relative_error(load_file(str(tmp_path / "straight" / "tiny.safetensors")),
                           load_file(str(tmp_path / "stopped" / "tiny.safetensors"))) <= 1e-5

    stopped.output.overwrite = True  # a single process cannot continue it: its batches are 2-process batches
    with pytest.raises(UserError, match="saved by a run of 2 processes"):
        train(stopped, resume=state_dir)


def test_a_resume_with_another_number_of_processes_is_refused_before_any_process_starts(make_config, tmp_path):
    config = _config(make_config, tmp_path / "one", max_steps=1)
    result = train(config)
    run = _cli("train", save_config(tmp_path / "one.toml", config), "--resume", result.state_dir,
               "--set", "output.overwrite=true", "--num-processes", "2")
    assert run.returncode == 2, run.stderr[-3000:]
    assert "saved by a run of 1 process;" in run.stderr and "Traceback" not in run.stderr


def test_an_error_on_one_rank_ends_every_process(make_config, tmp_path):
    config = _config(make_config, tmp_path / "failing", max_steps=50)
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from lora_trainer.config import load_config\n"
        "from lora_trainer.training.trainer import train\n"
        "checks = []\n"
        "def should_stop():\n"
        "    checks.append(1)\n"
        "    if os.environ['RANK'] == '1' and len(checks) > 2:\n"
        "        raise RuntimeError('rank 1 failed on purpose')\n"
        "    return False\n"
        "train(load_config(sys.argv[1]), should_stop=should_stop)\n"
    )
    run = _accelerate_launch(script, save_config(tmp_path / "failing.toml", config))  # would time out if rank 0 hung
    assert run.returncode != 0
    assert "rank 1 failed on purpose" in run.stderr
    assert not (tmp_path / "failing" / "tiny.safetensors").exists()


@pytest.mark.both_profiles
def test_the_shortcut_is_accelerate_launch_with_the_same_train_arguments():
    from accelerate.commands.launch import launch_command_parser

    from lora_trainer.__main__ import build_parser
    from lora_trainer.cli.train_command import worker_argv

    argv = ["train", "run.toml", "--set", "train.max_steps=5", "--set", "train.seed=1", "--preset", "SD1.5 character",
            "--resume", "state", "--quiet", "--json-events"]
    args = build_parser().parse_args(argv + ["--num-processes", "4"])
    assert worker_argv(args) == argv  # each process runs the same command, without --num-processes

    from lora_trainer.cli.launch import accelerate_argv

    launch = launch_command_parser().parse_args(accelerate_argv(4, 29511, worker_argv(args)))
    assert (launch.multi_gpu, launch.num_processes, launch.main_process_port, launch.module) == (True, 4, 29511, True)
    assert [launch.training_script, *launch.training_script_args] == ["lora_trainer", *argv]


def test_the_run_exit_code_is_rank_0s_else_the_first_failed_rank():
    from types import SimpleNamespace

    from lora_trainer.cli.launch import exit_code_of

    assert exit_code_of({0: SimpleNamespace(exitcode=3)}) == 3
    assert exit_code_of({1: SimpleNamespace(exitcode=2), 0: SimpleNamespace(exitcode=1)}) == 1
    assert exit_code_of({1: SimpleNamespace(exitcode=2)}) == 2
    assert exit_code_of({1: SimpleNamespace(exitcode=-9)}) == 1  # killed by a signal
