"""Training configuration: one `TrainConfig`, validated into field-level errors; files; presets; imports.

Torch-free and gradio-free (used by the CLI, the UI and the tag tools, also on Python 3.10).

    from lora_trainer.config import TrainConfig, load_config, validate, save_config
    config = load_config("run.toml", overrides=["train.max_steps=500"])   # ConfigError lists every problem
    errors = validate(config)                                             # [FieldError("train.unet_lr", "...")]

Modules: `schema` (fields, help, ranges), `validate` (types, ranges, conflicts), `names` (safe output
names and paths), `io` (TOML/JSON, --set), `presets` (built-in and user presets), `kohya_import`
(kohya_ss GUI JSON and sd-scripts TOML).
"""

from lora_trainer.config.io import (apply_overrides, atomic_write_text, load_config, merge, parse_override, read_file,
                                    save_config, to_toml)
from lora_trainer.config.kohya_import import (IgnoredKey, ImportResult, import_config, import_kohya_json,
                                              import_sd_scripts_toml)
from lora_trainer.config.names import MAX_NAME_BYTES, MAX_NAME_CHARS, resolve_inside, sanitize_output_name
from lora_trainer.config.presets import (PRESETS, apply_preset, diff_from_defaults, list_presets, load_preset, preset,
                                         save_user_preset)
from lora_trainer.config.schema import (SECTION_CLASSES, SECTIONS, DatasetSection, FieldError, ModelSection, NetworkSection,
                                        OutputSection, SampleSection, TrainConfig, TrainSection, field_info, iter_fields,
                                        schema, to_flat)
from lora_trainer.config.validate import (check, coerce, config_warnings, from_dict, parse_dict, raise_for, suggest,
                                          validate)


def to_dict(config: TrainConfig) -> dict:
    """Nested plain dicts of a config (same as `config.to_dict()`)."""
    return config.to_dict()


__all__ = [
    "TrainConfig", "ModelSection", "DatasetSection", "NetworkSection", "TrainSection", "OutputSection", "SampleSection",
    "SECTION_CLASSES", "SECTIONS", "FieldError", "field_info", "iter_fields", "schema", "to_flat", "to_dict",
    "validate", "config_warnings", "check", "raise_for", "parse_dict", "from_dict", "coerce", "suggest",
    "sanitize_output_name", "resolve_inside", "MAX_NAME_CHARS", "MAX_NAME_BYTES",
    "load_config", "save_config", "read_file", "parse_override", "apply_overrides", "merge", "to_toml", "atomic_write_text",
    "PRESETS", "preset", "load_preset", "apply_preset", "list_presets", "save_user_preset", "diff_from_defaults",
    "import_kohya_json", "import_sd_scripts_toml", "import_config", "ImportResult", "IgnoredKey",
]
