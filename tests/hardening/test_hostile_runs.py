"""Hostile names and configs on real runs: a name that is accepted is cleaned, and every file of
the run lands inside output.dir under the cleaned name; a hostile file trains nothing."""

import pytest
from safetensors import safe_open

from .helpers import all_files, cli, tiny_config
from .test_hostile_input_pure import EXPECTED, HOSTILE_TOML


@pytest.fixture(scope="module")
def bundle(base_models):
    from lora_trainer.models import load_bundle

    return load_bundle(base_models["sd1"])


@pytest.mark.parametrize("name, stem", [
    ("my lora.safetensors", "my lora"),
    ("\u00fcn\u00efc\u00f8d\u00e9 \u540d\u524d", "\u00fcn\u00efc\u00f8d\u00e9 \u540d\u524d"),
    ("nul\x00byte", "nulbyte"),
    ("line\nbreak\r", "linebreak"),
    ("a<b>:c|d", "a_b__c_d"),
    ("\u202eevil", "evil"),
])
def test_an_accepted_name_is_cleaned_and_the_run_writes_only_inside_output_dir(name, stem, tmp_path, tiny_dataset, base_models,
                                                                               bundle, one_thread):
    from lora_trainer.training.trainer import train

    out = tmp_path / "root" / "out"
    config = tiny_config(base_models["sd1"], tiny_dataset, out, train={"max_steps": 2}, output={"name": name, "save_every_steps": 1},
                         sample={"every_steps": 2, "prompts": ["tinychar"], "steps": 1})
    siblings = sorted(tmp_path.parent.iterdir())
    result = train(config, bundle=bundle)

    assert result.status == "done" and result.output == out / f"{stem}.safetensors"
    with safe_open(str(result.output), "pt") as handle:
        assert handle.metadata()["ss_output_name"] == stem  # what <lora:NAME:0.8> is typed with
    written = all_files(tmp_path)
    assert written and all(out in path.parents for path in written), [str(p) for p in written if out not in p.parents]
    assert all(p.name.startswith(stem) or p.parent.name in ("samples", "state") or p.name == "metrics.jsonl" for p in written)
    assert {p.parent for p in written} <= {out, out / f"{stem}_logs", out / f"{stem}_logs" / "samples", out / f"{stem}_logs" / "state"}
    assert sorted(tmp_path.parent.iterdir()) == siblings


def test_a_hostile_config_file_is_exit_2_with_each_field_listed_and_writes_nothing(tmp_path):
    path = tmp_path / "hostile.toml"
    path.write_text(HOSTILE_TOML, encoding="utf-8")
    result = cli("train", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for field in EXPECTED:
        assert f"  {field}: " in result.stderr, field
    assert all_files(tmp_path) == [path]
