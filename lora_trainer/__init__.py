"""sd-webui-lora-trainer: train kohya-format LoRAs from AUTOMATIC1111's WebUI or headless.

The core packages (`dataset`, `models`, `networks`, `training`) are a library without UI:
they import neither gradio nor A1111's `modules`.
"""

__version__ = "0.1.0"
