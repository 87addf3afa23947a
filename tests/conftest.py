"""Test session set-up shared by every profile.

Files named `test_*_pure.py` need neither torch nor gradio: they also run under Python 3.10
without torch (`make test-py310`). Where torch is missing, every other test file is skipped
at collection.
"""

import importlib.util
from pathlib import Path

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path: Path, config):  # noqa: ARG001
    name = collection_path.name
    if not HAVE_TORCH and name.startswith("test_") and name.endswith(".py"):
        return not name.endswith("_pure.py")
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "forge_only: needs Forge's pins (run in .venv-forge only)")
    config.addinivalue_line("markers", "both_profiles: runs in the A1111 and the Forge profile")
