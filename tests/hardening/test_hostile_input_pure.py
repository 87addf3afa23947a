"""Hostile config files and output names, read the way the CLI reads them (a real TOML file).

Every problem comes back on its own field (so the tab can show it beside that field), unknown
keys with a did-you-mean, and nothing is cut short by a crash. No torch needed.
"""

import pytest

from lora_trainer.config import TrainConfig, load_config, validate
from lora_trainer.errors import ConfigError

HOSTILE_TOML = '''
[model]
clip_skip = 99
[dataset]
dir = "/data"
resolution = 100000000000000000000000000000
caption_extension = ".t\\u0000xt"
[network]
rank = -4
alpha = nan
tpye = "lora"
[train]
max_steps = { steps = 5 }
batch_size = 1.5
seed = true
unet_lr = "fast"
warmup_steps = 1e400
[output]
name = "../../etc/evil"
dir = "/tmp/\\u0000out"
save_evry_steps = 5
[smaple]
steps = 2
'''

EXPECTED = {
    "model.clip_skip": "at most 12",
    "dataset.resolution": "at most 4096",
    "dataset.caption_extension": "NUL",
    "network.rank": "at least 1",
    "network.alpha": "finite",
    "network.tpye": "did you mean 'type'?",
    "train.max_steps": "whole number",
    "train.batch_size": "whole number, not 1.5",
    "train.seed": "whole number, not True",
    "train.unet_lr": "must be a number, not 'fast'",
    "train.warmup_steps": "finite",
    "output.name": "is a path",
    "output.dir": "NUL",
    "output.save_evry_steps": "did you mean 'save_every_steps'?",
    "smaple": "did you mean 'sample'?",
}


def test_every_problem_of_a_hostile_file_is_reported_on_its_own_field(tmp_path):
    path = tmp_path / "hostile.toml"
    path.write_text(HOSTILE_TOML, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    messages = {e.path: e.message for e in info.value.errors}
    for field, fragment in EXPECTED.items():
        assert field in messages, f"{field} not reported: {messages}"
        assert fragment in messages[field], (field, messages[field])
    assert set(messages) == set(EXPECTED), "one message per problem, none invented"


@pytest.mark.parametrize("name, reason", [
    ("../x", "is a path"), ("/abs/x", "is a path"), ("..\\x", "is a path"), ("~root", "is a path"),
    ("CON", "reserved"), ("nul.txt", "reserved"), ("com1.safetensors", "reserved"),
    ("x" * 300, "too long"), ("\u540d" * 100, "too long"),  # 100 characters, 300 UTF-8 bytes
    ("\x00", "not a usable"), ("\n\t", "not a usable"), ("", "not a usable"),
])
def test_a_hostile_output_name_is_refused_on_the_name_field(name, reason):
    config = TrainConfig()
    config.dataset.dir, config.output.name = "/data", name
    errors = {e.path: e.message for e in validate(config)}
    assert list(errors) == ["output.name"], errors
    assert reason in errors["output.name"]
    with pytest.raises(ConfigError):
        config.logs_dir  # nothing is ever named after a refused name  # noqa: B018
