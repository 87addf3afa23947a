"""The WebUI's allowed roots: when it counts as shared, and which folders the setting allows.

`A1111Host.allowed_roots` is `parse_roots(setting, defaults)` when `is_shared_server(cmd_opts)`;
A1111's own argparse namespace is stood in for by one with the same attribute names.
"""

from argparse import Namespace
from pathlib import Path

import pytest

from lora_trainer.host.roots import is_shared_server, parse_roots


def _opts(**flags) -> Namespace:
    base = {"listen": False, "share": False, "ngrok": None, "server_name": None}
    return Namespace(**{**base, **flags})


@pytest.mark.parametrize("flags, shared", [
    ({}, False),
    ({"server_name": "127.0.0.1"}, False),
    ({"server_name": "localhost"}, False),
    ({"listen": True}, True),
    ({"share": True}, True),
    ({"ngrok": "token"}, True),
    ({"server_name": "0.0.0.0"}, True),
    ({"server_name": "192.168.1.5"}, True),
])
def test_a_webui_counts_as_shared_when_others_can_reach_it(flags, shared):
    assert is_shared_server(_opts(**flags)) is shared


def test_the_setting_lists_the_roots_one_per_line_and_is_resolved(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    setting = f"\n  {tmp_path / 'link'}  \n# a comment\n{tmp_path / 'a' / '..' / 'b'}\n{tmp_path / 'real'}\n"
    assert parse_roots(setting, [Path("/default")]) == [tmp_path / "real", tmp_path / "b"]


def test_an_empty_setting_means_the_defaults(tmp_path):
    assert parse_roots("", [tmp_path, Path("~")]) == [tmp_path.resolve(), Path.home().resolve()]
    assert parse_roots(None, [tmp_path]) == [tmp_path.resolve()]
