"""Run every benchmark module (`bench/bench_*.py`): a readable table on stderr, one JSON document on stdout.

`python -m bench [NAME ...]` runs only the named modules (e.g. `models`, `dataset`).
Each module runs in its own process so that peak-RSS figures do not leak between them; each
module's wall time is reported too, and the whole run has its own goal (under 15 minutes).
`python -m bench > bench.json` keeps the document while the table shows on the terminal.
"""

import importlib
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import below

REPO = Path(__file__).resolve().parents[1]
TOTAL_GOAL_S = 900.0


def _modules(selected):
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    return [n for n in names if not selected or n[len("bench_"):] in selected]


def _run_one(name: str) -> list:
    module = importlib.import_module(f"bench.{name}")
    return [r.as_dict() for r in module.run()]


def _run_module(name: str) -> list:
    """The module's figures (or one error row), measured in a fresh process, plus its wall time."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "--one", name], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        rows = [{"name": name, "error": proc.stderr.strip().splitlines()[-1:]}]
    else:
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows + [{"name": f"{name}: wall time", "value": round(seconds, 1), "unit": "s", "goal": None, "ok": None}]


def _table(results: dict) -> str:
    width = max([len(r.get("name", "")) for rs in results.values() for r in rs] + [10])
    lines = []
    for group, rows in results.items():
        lines.append(f"## {group}")
        for r in rows:
            if "error" in r:
                lines.append(f"  {r['name']:<{width}}  ERROR {r['error']}")
                continue
            mark = {True: "ok", False: "MISS", None: ""}[r.get("ok")]
            lines.append(f"  {r['name']:<{width}}  {r['value']:>12} {r['unit']:<8} goal {r.get('goal') or '-':<10} {mark}")
    return "\n".join(lines)


def main(argv) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(_run_one(argv[1])))
        return 0
    started, results = time.perf_counter(), {}
    for name in _modules(argv):
        results[name] = _run_module(name)
        print(_table({name: results[name]}), file=sys.stderr, flush=True)  # progress: each module as it ends
    total = below("all benchmarks: wall time", time.perf_counter() - started, "s", TOTAL_GOAL_S).as_dict()
    results["total"] = [total]
    print(_table({"total": [total]}), file=sys.stderr)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
