"""Run by AUTOMATIC1111 at start-up: install only what is missing, never upgrade the WebUI's own stack.

torch, transformers and accelerate belong to the WebUI (A1111 reinstalls its pins on every
start, so changing them would churn and can break it); we only add peft and diffusers at the
versions known to work on A1111 1.10's pins, and only when they are absent or too old.
"""

import importlib.metadata

import launch

NEEDED = {"peft": "0.13.2", "diffusers": "0.31.0"}
NEVER_TOUCH = ("torch", "transformers", "accelerate")


def _version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tuple(version: str):
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


for package, version in NEEDED.items():
    installed = _version(package)
    if installed is None or _tuple(installed) < _tuple(version):
        launch.run_pip(f"install {package}=={version} --no-deps", f"{package}=={version} for the Train LoRA tab")
