#!/usr/bin/env python3
"""Deployment step: render the pyscheduler Lua library and load it into Redis.

    python tools/load_scripts.py [URL]          load (FUNCTION LOAD REPLACE), print the version
    python tools/load_scripts.py --check [URL]  exit 1 when the deployed version differs
    python tools/load_scripts.py --print        write the rendered library to stdout

URL defaults to $REDIS_URL, else redis://127.0.0.1:6379/0. Same as `pyscheduler load-scripts`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyscheduler.ops.cli import load_scripts_command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("REDIS_URL") or None)
    parser.add_argument("--check", action="store_true", help="compare the deployed version")
    parser.add_argument("--print", dest="print_code", action="store_true", help="print the library")
    args = parser.parse_args()
    return load_scripts_command(args.url, args.check, args.print_code)


if __name__ == "__main__":
    sys.exit(main())
