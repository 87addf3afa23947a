"""The WebUI entry script and the A1111 host fit together (checked without a WebUI: by reading them).

A1111 loads `scripts/train_lora_tab.py`, which registers callbacks from `host/a1111.py`; a name
missing there would only show up as "Error loading script" inside a real WebUI.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _top_level_names(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))} | {
        target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets if isinstance(target, ast.Name)}


def test_every_host_name_the_entry_script_uses_exists():
    script = ast.parse((REPO / "scripts" / "train_lora_tab.py").read_text(encoding="utf-8"))
    used = {node.attr for node in ast.walk(script) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "a1111"}
    assert {"on_ui_tabs", "on_ui_settings"} <= used
    missing = used - _top_level_names(REPO / "lora_trainer" / "host" / "a1111.py")
    assert not missing, f"scripts/train_lora_tab.py uses names host/a1111.py does not define: {missing}"


def test_the_host_implements_the_protocol():
    base = ast.parse((REPO / "lora_trainer" / "host" / "base.py").read_text(encoding="utf-8"))
    protocol = next(n for n in base.body if isinstance(n, ast.ClassDef) and n.name == "Host")
    wanted = {n.name for n in protocol.body if isinstance(n, ast.FunctionDef)}
    host = ast.parse((REPO / "lora_trainer" / "host" / "a1111.py").read_text(encoding="utf-8"))
    a1111 = next(n for n in host.body if isinstance(n, ast.ClassDef) and n.name == "A1111Host")
    have = {n.name for n in a1111.body if isinstance(n, ast.FunctionDef)}
    have |= {target.attr for node in host.body if isinstance(node, ast.Assign) for target in node.targets
             if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "A1111Host"}
    assert not wanted - have, f"A1111Host lacks {wanted - have}"
