"""AUTOMATIC1111 entry point: registers the Train LoRA tab and its settings; nothing else.

All logic lives in `lora_trainer.host.a1111` (the only module that touches the WebUI) and the
UI package. A1111 puts this extension's folder on sys.path while loading this file.
"""

from modules import script_callbacks

from lora_trainer.host import a1111

script_callbacks.on_ui_tabs(a1111.on_ui_tabs)
script_callbacks.on_ui_settings(a1111.on_ui_settings)
