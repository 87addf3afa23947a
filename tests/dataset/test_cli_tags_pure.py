"""`python -m lora_trainer tags ...` as a user runs it: JSON stats, edits with summaries, undo."""

import json
import subprocess
import sys
from pathlib import Path

from .files import png, snapshot

REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "lora_trainer", "tags", *map(str, args)], capture_output=True,
                          text=True, cwd=str(REPO), timeout=120)
    return done.returncode, done.stdout, done.stderr


def dataset(tmp_path):
    root = tmp_path / "data"
    png(root / "10_name" / "a.png", (20, 20), (1, 1, 1))
    png(root / "10_name" / "b.png", (20, 20), (1, 1, 1))
    png(root / "10_name" / "c.png", (30, 20))
    png(root / "1_other" / "d.png", (10, 20))
    (root / "10_name" / "a.txt").write_text("1girl, red hair, smile\n")
    (root / "10_name" / "b.txt").write_text("1girl, blue hair")
    (root / "1_other" / "d.txt").write_bytes(b"\xff\xfeweird")
    return root


def test_stats_json(tmp_path):
    root = dataset(tmp_path)
    code, out, err = cli("stats", root, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["images"] == 4
    assert stats["folders"]["10_name"]["repeats"] == 10 and stats["folders"]["10_name"]["images"] == 3
    assert stats["captions_missing"] == ["10_name/c.png"]
    assert stats["non_utf8"] == ["1_other/d.txt"]
    assert stats["unreadable"] == []
    assert stats["duplicates"] == [["10_name/a.png", "10_name/b.png"]]
    assert stats["tag_frequency"]["1girl"] == 2


def test_add_remove_replace_undo_with_filter(tmp_path):
    root = dataset(tmp_path)
    images_before = {k: v for k, v in snapshot(root).items() if not k.endswith(".txt")}
    code, out, _ = cli("add", root, "trigger", "--front", "--filter", "1girl AND NOT blue hair")
    assert code == 0 and "1 caption(s) changed" in out
    assert (root / "10_name" / "a.txt").read_text() == "trigger, 1girl, red hair, smile\n"
    assert (root / "10_name" / "b.txt").read_text() == "1girl, blue hair"
    code, out, _ = cli("replace", root, "red hair", "crimson hair")
    assert code == 0 and (root / "10_name" / "a.txt").read_text() == "trigger, 1girl, crimson hair, smile\n"
    assert "not valid UTF-8" in out  # d.txt is skipped and said so
    code, out, _ = cli("replace", root, r"(\w+) hair", r"\1_hair", "--regex")
    assert (root / "10_name" / "b.txt").read_text() == "1girl, blue_hair"
    code, out, _ = cli("remove", root, "smile")
    assert (root / "10_name" / "a.txt").read_text() == "trigger, 1girl, crimson_hair\n"
    for _ in range(4):
        code, out, err = cli("undo", root)
        assert code == 0, err
    assert (root / "10_name" / "a.txt").read_text() == "1girl, red hair, smile\n"
    assert (root / "10_name" / "b.txt").read_text() == "1girl, blue hair"
    assert not (root / "10_name" / "c.txt").exists()
    assert (root / "1_other" / "d.txt").read_bytes() == b"\xff\xfeweird"
    code, out, err = cli("undo", root)
    assert code == 2 and "nothing to undo" in err
    code, out, err = cli("redo", root)
    assert code == 0 and "redo" in out and (root / "10_name" / "a.txt").read_text() == "trigger, 1girl, red hair, smile\n"
    assert {k: v for k, v in snapshot(root).items() if not k.endswith(".txt")} == images_before


def test_bad_input_exits_2_with_a_message(tmp_path):
    code, out, err = cli("stats", tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    root = dataset(tmp_path)
    code, out, err = cli("add", root, "x", "--filter", "(a OR b")
    assert code == 2 and "not closed" in err
    code, out, err = cli("replace", root, "(", "x", "--regex")
    assert code == 2 and "regular expression" in err
