#!/usr/bin/env bash
# The README's two commands:
#   tools/dev.sh demo   set up .venv and run the demo (starts a private engine unless REDIS_URL is set)
#   tools/dev.sh test   set up .venv and run the whole suite: luacheck, ruff, mypy and pytest
# Extra arguments after `test` go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$1]"
}

need_luacheck() {
  command -v luacheck >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing luacheck (Debian package lua-check) ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua-check >/dev/null
  else
    echo "luacheck is missing: install it (Debian/Ubuntu: sudo apt-get install lua-check)" >&2
    exit 1
  fi
}

case "${1:-}" in
  demo)
    shift
    setup engine
    exec "$VENV/bin/pyscheduler" demo "$@"
    ;;
  test)
    shift
    setup test
    need_luacheck
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: tools/dev.sh demo | test [pytest args]" >&2
    exit 2
    ;;
esac
