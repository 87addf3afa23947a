"""Run every benchmark module (`bench/bench_*.py`), print a table and one JSON document.

`python -m bench [NAME ...]` runs only the named modules (e.g. `models`, `dataset`).
Each module runs in its own process so that peak-RSS figures do not leak between them.
"""

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path


def _modules(selected):
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    return [n for n in names if not selected or n[len("bench_"):] in selected]


def _run_one(name: str) -> list:
    module = importlib.import_module(f"bench.{name}")
    return [r.as_dict() for r in module.run()]


def main(argv) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(_run_one(argv[1])))
        return 0
    results = {}
    for name in _modules(argv):
        proc = subprocess.run([sys.executable, "-m", "bench", "--one", name], capture_output=True, text=True)
        if proc.returncode != 0:
            results[name] = [{"name": name, "error": proc.stderr.strip().splitlines()[-1:]}]
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    width = max([len(r.get("name", "")) for rs in results.values() for r in rs] + [10])
    for group, rows in results.items():
        print(f"## {group}")
        for r in rows:
            if "error" in r:
                print(f"  {r['name']:<{width}}  ERROR {r['error']}")
                continue
            mark = {True: "ok", False: "MISS", None: ""}[r.get("ok")]
            print(f"  {r['name']:<{width}}  {r['value']:>12} {r['unit']:<8} goal {r.get('goal') or '-':<10} {mark}")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
