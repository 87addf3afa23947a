"""Thumbnails: made on first view, bounded in memory, fresh after a file changes, bad files reported."""

import os
from pathlib import Path

from PIL import Image

from lora_trainer.dataset.thumbnails import ThumbnailCache

from .files import exif_rotated_jpeg, hostile_set, png


def test_made_lazily_once_kept_as_small_files_and_bounded_by_bytes(tmp_path):
    paths = [png(tmp_path / f"i{n}.png", (400, 200), (n * 20, 0, 0)) for n in range(10)]
    one = ThumbnailCache(size=100, folder=tmp_path / "probe").get(paths[0]).nbytes
    cache = ThumbnailCache(size=100, max_bytes=int(one * 4.5), folder=tmp_path / "thumbs")  # room for about 4
    assert cache.made == 0
    thumbs = cache.get_many(paths[:3])
    assert [t.size for t in thumbs] == [(100, 50)] * 3 and cache.made == 3
    assert [Image.open(t.path).size for t in thumbs] == [(100, 50)] * 3  # JPEG files, ready to send as they are
    cache.get_many(paths[:3])
    assert cache.made == 3  # cached
    cache.get_many(paths[3:])
    assert 3 <= len(cache) <= 5 and cache.bytes <= cache.max_bytes
    assert len(list((tmp_path / "thumbs").iterdir())) == len(cache)  # evicted thumbnails leave no file behind
    cache.get(paths[0])
    assert cache.made == 11  # evicted earlier, made again
    cache.clear()
    assert list((tmp_path / "thumbs").iterdir()) == []


def test_changed_file_gets_a_new_thumbnail(tmp_path):
    path = png(tmp_path / "a.png", (64, 64), (255, 0, 0))
    cache = ThumbnailCache(size=32)
    red = cache.get(path).image.getpixel((5, 5))
    assert red[0] > 240 and red[2] < 15
    Image.new("RGB", (64, 64), (0, 0, 255)).save(path)
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock
    blue = cache.get(path).image.getpixel((5, 5))
    assert blue[2] > 240 and blue[0] < 15


def test_exif_orientation_and_bad_files_become_problems_not_exceptions(tmp_path):
    rotated = exif_rotated_jpeg(tmp_path / "rot.jpg")
    assert ThumbnailCache(size=30).get(rotated).size == (10, 30)  # shown as trained: portrait
    files = hostile_set(tmp_path / "bad")
    cache = ThumbnailCache(size=32)
    results = dict(zip(files, cache.get_many(list(files.values()))))
    for name in ("truncated", "zero", "text", "symlink_loop_file"):
        assert results[name].image is None and results[name].problem, name
    for name in ("cmyk", "sixteen_bit", "palette", "tiny", "unicode", "la", "rgba", "gif", "bmp", "webp"):
        assert results[name].image is not None and results[name].image.mode == "RGB", name
    problems = cache.problems()
    assert str(files["truncated"]) in problems and "truncated" in problems[str(files["truncated"])]


def test_background_prefetch_fills_the_cache(tmp_path):
    paths = [png(tmp_path / f"p{n}.png", (50, 50)) for n in range(6)]
    cache = ThumbnailCache(size=20)
    cache.prefetch(paths)
    assert cache.wait_idle(10)
    made = cache.made
    assert made == 6
    cache.get_many(paths)
    assert cache.made == made
    assert not Path(tmp_path / "missing.png").exists() and cache.get(tmp_path / "missing.png").problem


_SERVER = """
import sys, time
from lora_trainer.dataset.thumbnails import ThumbnailCache
cache = ThumbnailCache(size=32)
print(cache.folder, flush=True)
time.sleep(600)
"""


def test_a_killed_servers_thumbnail_folder_is_removed_by_the_next_one_and_a_running_ones_kept(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    servers = [subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True, env=env,
                                cwd=Path(__file__).resolve().parents[2]) for _ in range(2)]
    killed, running = (Path(s.stdout.readline().strip()) for s in servers)
    try:
        assert killed.is_dir() and killed.parent == tmp_path and str(servers[0].pid) in killed.name
        servers[0].send_signal(signal.SIGKILL)  # no exit handler runs: the folder stays behind
        servers[0].wait(timeout=30)
        assert killed.is_dir()

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        fresh = ThumbnailCache(size=32)

        assert not killed.exists() and running.is_dir() and fresh.folder.is_dir()
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=30)
