"""Starting the standalone tab (`python -m lora_trainer ui`) as a real server for the browser tests."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(args: List[str], folder: Path) -> Tuple[subprocess.Popen, str]:
    """The server process and its URL, once it answers; its log is `folder/server.log`."""
    port = free_port()
    env = dict(os.environ, XDG_DATA_HOME=str(folder / "xdg"))
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "lora_trainer", "ui", *map(str, args), "--port", str(port)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            if process.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text())
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("the tab did not answer in 2 minutes:\n" + (folder / "server.log").read_text())
