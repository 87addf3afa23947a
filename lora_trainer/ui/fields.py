"""The form: one gradio component per `TrainConfig` field, built from the field's own metadata.

Basic fields are shown in Settings; every other field goes to the Advanced accordion. Each
component gets `info=` help from the config and a stable `elem_id` (`train_lora_<section>_<key>`)
so A1111's ui-config.json remembers its value.
"""

from typing import Any, Dict, List, Tuple

BASIC = [
    ("output", "name"), ("dataset", "trigger_word"), ("network", "type"), ("network", "rank"), ("network", "alpha"),
    ("train", "unet_lr"), ("train", "text_encoder_lr"), ("train", "max_steps"), ("train", "epochs"),
    ("dataset", "resolution"), ("train", "batch_size"),
]
# Shown elsewhere in the tab (Dataset sub-tab), not in the settings form.
ELSEWHERE = [("dataset", "dir")]
LABELS = {
    ("output", "name"): "LoRA name", ("dataset", "trigger_word"): "Trigger word", ("network", "type"): "Network type",
    ("network", "rank"): "Rank (dim)", ("network", "alpha"): "Alpha", ("train", "unet_lr"): "UNet learning rate",
    ("train", "text_encoder_lr"): "Text encoder learning rate", ("train", "max_steps"): "Steps (0 = use epochs)",
    ("train", "epochs"): "Epochs", ("dataset", "resolution"): "Resolution", ("train", "batch_size"): "Batch size",
    ("dataset", "dir"): "Dataset folder", ("dataset", "reg_dir"): "Regularization images folder",
    ("output", "dir"): "Output folder", ("output", "logs_dir"): "Logs folder", ("model", "checkpoint"): "Base checkpoint",
}


def all_fields() -> List[Tuple[str, str]]:
    from lora_trainer.config import TrainConfig

    return [(section, key) for section, values in TrainConfig().to_dict().items() for key in values]


def advanced_fields() -> List[Tuple[str, str]]:
    return [f for f in all_fields() if f not in BASIC and f not in ELSEWHERE]


def elem_id(section: str, key: str) -> str:
    return f"train_lora_{section}_{key}"


def label(section: str, key: str) -> str:
    return LABELS.get((section, key), f"{key.replace('_', ' ').capitalize()}")


def make_component(section: str, key: str, value: Any):
    """The gradio input for one field (created inside the caller's Blocks context)."""
    import gradio as gr

    from lora_trainer.config import field_info

    info = field_info(section, key)
    common = {"label": label(section, key), "elem_id": elem_id(section, key), "info": info.get("help", "")}
    if info.get("choices"):
        return gr.Dropdown(choices=list(info["choices"]), value=value, **common)
    if isinstance(value, bool):
        return gr.Checkbox(value=value, **common)
    if isinstance(value, int):
        return gr.Number(value=value, precision=0, **common)
    if isinstance(value, float):
        return gr.Number(value=value, **common)
    if isinstance(value, list):
        return gr.Textbox(value="\n".join(value), lines=3, **common)
    return gr.Textbox(value=value, **common)


def values_to_dict(paths: List[Tuple[str, str]], values: List[Any]) -> Dict[str, Dict[str, Any]]:
    """Form values back into the nested dict `from_dict` reads (numbers arrive as floats)."""
    from lora_trainer.config import TrainConfig

    defaults = TrainConfig().to_dict()
    data: Dict[str, Dict[str, Any]] = {}
    for (section, key), value in zip(paths, values):
        default = defaults[section][key]
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(default, list) and isinstance(value, str):
            value = [line.strip() for line in value.splitlines() if line.strip()]
        if value is None:
            value = default
        data.setdefault(section, {})[key] = value
    return data


def config_to_values(paths: List[Tuple[str, str]], data: Dict[str, Dict[str, Any]]) -> List[Any]:
    out = []
    for section, key in paths:
        value = data.get(section, {}).get(key)
        out.append("\n".join(value) if isinstance(value, list) else value)
    return out
