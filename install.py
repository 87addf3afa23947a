"""Run by AUTOMATIC1111 at start-up: install only what is missing, never upgrade the WebUI's own stack.

torch, transformers and accelerate belong to the WebUI (A1111 reinstalls its pins on every
start, so changing them would churn and can break it); we only add peft and diffusers at the
versions known to work on A1111 1.10's pins, and only when they are absent or too old. pip may
still add a dependency that is truly missing, but a constraints file holds the WebUI's own
packages at the versions installed, so it can never move them. A start with everything in
place runs no pip at all and prints nothing.
"""

import importlib.metadata
import os
import tempfile

import launch

NEEDED = {"peft": "0.13.2", "diffusers": "0.31.0"}
NEVER_TOUCH = ("torch", "torchvision", "transformers", "accelerate")


def _version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tuple(version: str):
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def _missing() -> dict:
    return {name: version for name, version in NEEDED.items()
            if _version(name) is None or _tuple(_version(name)) < _tuple(version)}


def _constraints_file() -> str:
    """Pins for the WebUI's own packages, at whatever versions it has (local builds included)."""
    lines = [f"{name}=={_version(name)}" for name in NEVER_TOUCH if _version(name)]
    handle = tempfile.NamedTemporaryFile("w", suffix="-lora-trainer-constraints.txt", delete=False)
    with handle:
        handle.write("\n".join(lines) + "\n")
    return handle.name


def main() -> None:
    missing = _missing()
    if not missing:
        return
    constraints = _constraints_file()
    try:
        packages = " ".join(f"{name}=={version}" for name, version in missing.items())
        launch.run_pip(f'install {packages} -c "{constraints}"', f"{packages} for the Train LoRA tab")
    finally:
        os.unlink(constraints)


main()
