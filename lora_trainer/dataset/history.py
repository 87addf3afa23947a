"""Dataset-wide undo history, persisted beside the dataset in `.lora_trainer/history/`.

Each bulk edit is one step file holding, for every caption it changed, the exact bytes before
and after. The step is written *before* the captions are, so that even an edit interrupted
half-way can be undone. Undo writes the "before" bytes back only where the file still holds
the "after" bytes; anything changed since is reported, never overwritten. An undone step is
kept in `history/redo/` so that redo can write its "after" bytes again (where the files still
hold the "before" ones); the next edit ends that chain. The oldest steps are dropped beyond
`limit` (default 100).
"""

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from lora_trainer.dataset.captions import atomic_write

DEFAULT_LIMIT = 100


@dataclass
class Change:
    path: Union[Path, str]  # the caption file (loaded steps give plain strings: cheap for 10,000)
    before: Optional[bytes]  # None: the file did not exist
    after: Optional[bytes]  # None: the file was deleted


@dataclass
class Step:
    number: int
    description: str
    time: float
    changes: List[Change] = field(default_factory=list)


def _pack(data: Optional[bytes]):
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _unpack(value) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(value["base64"])
    return value.encode("utf-8")


class History:
    """The steps of one dataset folder, oldest first; `root` anchors the relative paths."""

    def __init__(self, state_dir: Path, root: Path, limit: int = DEFAULT_LIMIT):
        self.folder = Path(state_dir) / "history"
        self.redo_folder = self.folder / "redo"  # undone steps, newest undo first to redo
        self.root = Path(root)
        self._prefix = os.path.join(os.fspath(self.root), "")
        self.limit = max(1, int(limit))

    def _files(self, folder: Optional[Path] = None) -> List[Path]:
        folder = self.folder if folder is None else folder
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.stem.isdigit() and p.is_file())

    def _relative(self, path: Path) -> str:
        text = os.fspath(path)
        if text.startswith(self._prefix):
            return text[len(self._prefix):].replace(os.sep, "/")
        return str(Path(path).resolve())  # a regularization folder elsewhere

    def _absolute(self, stored: str) -> str:
        return stored if os.path.isabs(stored) else os.path.join(self._prefix, stored.replace("/", os.sep))

    def __len__(self) -> int:
        return len(self._files())

    def push(self, description: str, changes: List[Change]) -> Step:
        files = self._files()
        number = int(files[-1].stem) + 1 if files else 1
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:  # reserve the number: another editor of this dataset may be pushing too
            try:
                os.close(os.open(self.folder / f"{number:08d}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                number += 1
        step = Step(number, description, time.time(), list(changes))
        self.save(step)
        for old in self._files()[:-self.limit]:
            old.unlink()
        for undone in self._files(self.redo_folder):  # a new edit: what was undone can no longer be redone
            undone.unlink()
        return step

    def save(self, step: Step) -> None:
        """(Re)write a step file atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        document = {
            "description": step.description,
            "time": step.time,
            "changes": [{"path": self._relative(c.path), "before": _pack(c.before), "after": _pack(c.after)}
                        for c in step.changes],
        }
        atomic_write(self.folder / f"{step.number:08d}.json", json.dumps(document, ensure_ascii=False).encode("utf-8"))

    def _load(self, path: Path) -> Step:
        try:
            text = path.read_text(encoding="utf-8")
            document = json.loads(text) if text.strip() else {"description": "(interrupted before it was saved)", "changes": []}
        except ValueError:
            document = {"description": f"(damaged step file {path.name}: nothing to restore from it)", "changes": []}
        changes = [Change(self._absolute(c["path"]), _unpack(c["before"]), _unpack(c["after"])) for c in document["changes"]]
        return Step(int(path.stem), document.get("description", ""), float(document.get("time", 0)), changes)

    def last(self) -> Optional[Step]:
        files = self._files()
        return self._load(files[-1]) if files else None

    def summaries(self) -> List[str]:
        """One line per step, newest first, without loading the changes' bytes into objects."""
        lines = []
        for path in reversed(self._files()):
            step = self._load(path)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step.time))
            lines.append(f"{step.number}: {when} {step.description} ({len(step.changes)} caption(s))")
        return lines

    def shelve(self, step: Step) -> None:
        """Move an undone step aside, where `last_undone` finds it for a redo."""
        self.redo_folder.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.folder / f"{step.number:08d}.json", self.redo_folder / f"{step.number:08d}.json")
        except FileNotFoundError:
            pass

    def last_undone(self) -> Optional[Step]:
        """The step undone most recently (undo takes the newest step, so: the lowest number here)."""
        files = self._files(self.redo_folder)
        return self._load(files[0]) if files else None

    def unshelve(self, step: Step) -> None:
        """A redone step goes back into the history (it can be undone again)."""
        try:
            os.replace(self.redo_folder / f"{step.number:08d}.json", self.folder / f"{step.number:08d}.json")
        except FileNotFoundError:
            pass

    def drop(self, step: Step) -> None:
        try:
            os.unlink(self.folder / f"{step.number:08d}.json")
        except FileNotFoundError:
            pass
