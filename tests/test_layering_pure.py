"""The core packages stay a library: no gradio, no A1111 `modules`, outside their own layers."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lora_trainer"
CORE = ("dataset", "models", "networks", "training")
IMPORT = re.compile(r"^\s*(?:from|import)\s+([\w.]+)", re.MULTILINE)


def _imports(path: Path):
    return {m.group(1).split(".")[0] for m in IMPORT.finditer(path.read_text(encoding="utf-8"))}


def test_core_imports_neither_gradio_nor_webui_modules():
    offenders = []
    for package in CORE:
        for path in (PACKAGE / package).rglob("*.py"):
            bad = _imports(path) & {"gradio", "modules"}
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert not offenders, offenders


def test_only_the_a1111_host_imports_webui_modules():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "modules" in _imports(path) and path != PACKAGE / "host" / "a1111.py"
    ]
    assert not offenders, offenders
