"""The README's test command also lints: luacheck on the rendered library, ruff, mypy strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from pyscheduler.store import library

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_rendered_lua_library_passes_luacheck(tmp_path: Path) -> None:
    luacheck = shutil.which("luacheck")
    assert luacheck, "luacheck is not installed (Debian package lua-check)"
    rendered = tmp_path / "pyscheduler.lua"
    rendered.write_text(library.library_code()[1])
    result = run([luacheck, "--no-color", "--config", str(ROOT / ".luacheckrc"), str(rendered)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_passes_ruff_lint() -> None:
    result = run([sys.executable, "-m", "ruff", "check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_passes_ruff_format_check() -> None:
    result = run([sys.executable, "-m", "ruff", "format", "--check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_passes_mypy_strict() -> None:
    result = run([sys.executable, "-m", "mypy"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_carries_the_lua_sources(tmp_path: Path) -> None:
    result = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("pyscheduler_redis-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for source in (ROOT / "lua").iterdir():
        assert f"pyscheduler/lua/{source.name}" in names


def test_lua_block_comments_hold_no_nested_long_brackets() -> None:
    # Lua 5.1 (Valkey 8.0) refuses to compile "[[" inside a --[[ ]] comment: "nesting of
    # [[...]] is deprecated"; Redis and newer Valkey builds accept it, so only this catches it.
    for source in sorted((ROOT / "lua").glob("*.lua")):
        text = source.read_text()
        for comment in text.split("--[[")[1:]:
            body = comment.split("]]", 1)[0]
            assert "[[" not in body, f"{source.name}: '[[' inside a block comment"
