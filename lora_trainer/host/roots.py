"""Which folders the tab may use when its server is reachable by others.

A WebUI shared on the network (`--listen`, `--share`, `--ngrok`, a non-loopback `--server-name`)
lets anyone who reaches it type a folder into the tab; those inputs are then confined to the
roots of the `lora_trainer_allowed_roots` setting (one folder per line), by default the WebUI's
folders and the user's home. Pure functions: the A1111 host passes its `cmd_opts` and setting in.
"""

from pathlib import Path
from typing import Iterable, List, Optional

LOOPBACK = {"", "127.0.0.1", "localhost", "::1", "0:0:0:0:0:0:0:1"}


def is_shared_server(cmd_opts) -> bool:
    """Whether A1111's command line makes the UI reachable from other machines."""
    if any(getattr(cmd_opts, flag, None) for flag in ("listen", "share", "ngrok")):
        return True
    server_name = getattr(cmd_opts, "server_name", None)
    return server_name is not None and str(server_name).strip().lower() not in LOOPBACK


def parse_roots(setting: Optional[str], defaults: Iterable[Path]) -> List[Path]:
    """The folders of the setting (one per line, `~` allowed), resolved; `defaults` when it is empty."""
    lines = [line.strip() for line in str(setting or "").splitlines() if line.strip() and not line.strip().startswith("#")]
    chosen = [Path(line).expanduser() for line in lines] or list(defaults)
    roots: List[Path] = []
    for root in chosen:
        resolved = Path(root).expanduser().resolve()
        if resolved not in roots:
            roots.append(resolved)
    return roots
