"""Hostile output names and paths: nothing is ever written outside the output folder."""

import os

import pytest

from lora_trainer.config import resolve_inside, sanitize_output_name
from lora_trainer.errors import ConfigError


@pytest.mark.parametrize("name, expected", [
    ("name.safetensors", "name"),
    ("Name.SAFETENSORS", "Name"),
    ("キャラ", "キャラ"),
    ("персонаж v2", "персонаж v2"),
    ("cafe\u0301", "caf\u00e9"),  # NFC: one code point, the same name on every OS
    ("trailing dots...", "trailing dots"),
    ("trailing space ", "trailing space"),
    (".hidden", "hidden"),
    ("a:b", "a_b"),  # would break <lora:a:b:0.8>
    ('q"u*e?r<y>|', "q_u_e_r_y__"),
    ("bell\x07null\x00", "bellnull"),
    ("evil\u202egnp.exe", "evilgnp.exe"),  # right-to-left override removed
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"),  # ZWNJ kept
    ("v1.5_style", "v1.5_style"),
])
def test_names_are_cleaned_but_stay_recognisable(name, expected):
    assert sanitize_output_name(name) == expected


@pytest.mark.parametrize("name, fragment", [
    ("../x", "path"), ("/etc/passwd", "path"), ("a/b", "path"), ("a\\b", "path"), ("C:\\Windows\\x", "path"),
    ("..", "path"), ("~", "path"),
    ("CON", "reserved"), ("con", "reserved"), ("NUL.txt", "reserved"), ("COM1", "reserved"), ("lpt9", "reserved"),
    ("CON ", "reserved"), ("CON.", "reserved"), ("COM\u00b9", "reserved"),
    ("", "not a usable"), ("   ", "not a usable"), ("...", "not a usable"), ("\x00\x01", "not a usable"),
    (".safetensors", "not a usable"),
    ("x" * 300, "too long"), ("キ" * 100, "too long"),  # 100 characters but 300 bytes
])
def test_unsafe_names_are_refused_with_a_reason(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        sanitize_output_name(name)


def test_not_text_is_refused():
    with pytest.raises(ConfigError, match="text"):
        sanitize_output_name(None)


def test_long_names_can_be_truncated_safely_on_request():
    assert sanitize_output_name("x" * 300, truncate=True) == "x" * 120
    kana = sanitize_output_name("キ" * 100, truncate=True)
    assert len(kana.encode("utf-8")) <= 200 and set(kana) == {"キ"}
    accented = sanitize_output_name("e\u0301" * 150, truncate=True)  # NFC makes them é
    assert set(accented) == {"\u00e9"} and len(accented.encode("utf-8")) <= 200
    assert sanitize_output_name("a" * 119 + " .b" * 3, truncate=True) == "a" * 119  # no trailing space/dot after the cut


def test_resolve_inside_accepts_plain_and_nested_names(tmp_path):
    assert resolve_inside(tmp_path, "a.safetensors") == tmp_path.resolve() / "a.safetensors"
    assert resolve_inside(tmp_path / "not_yet", "run_logs/metrics.jsonl") == tmp_path.resolve() / "not_yet" / "run_logs" / "metrics.jsonl"


@pytest.mark.parametrize("filename", ["../evil", "a/../../evil", "/etc/passwd", "", ".", "a/.."])
def test_resolve_inside_refuses_escapes_and_the_folder_itself(tmp_path, filename):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="outside"):
        resolve_inside(out, filename)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_resolve_inside_follows_symlinks(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "escape").symlink_to(elsewhere)
    (out / "file_link.safetensors").symlink_to(elsewhere / "target.safetensors")
    (out / "inner").mkdir()
    (out / "ok_link").symlink_to(out / "inner")
    with pytest.raises(ConfigError):
        resolve_inside(out, "escape/x.safetensors")
    with pytest.raises(ConfigError):
        resolve_inside(out, "file_link.safetensors")  # a dangling link to outside counts too
    assert resolve_inside(out, "ok_link/x.safetensors") == out.resolve() / "inner" / "x.safetensors"
    # an output folder that is itself a link is fine: its target is the folder
    linked_out = tmp_path / "linked_out"
    linked_out.symlink_to(elsewhere)
    assert resolve_inside(linked_out, "x.safetensors") == elsewhere.resolve() / "x.safetensors"
