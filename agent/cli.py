"""`mlfleet-agent` command line."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Sequence

from mlfleet.agent import __version__


def _version(args: argparse.Namespace) -> int:
    info = {"agent": __version__, "python": platform.python_version()}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"mlfleet-agent {__version__} (python {info['python']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlfleet-agent", description="mlfleet host agent")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")
    version = sub.add_parser("version", help="print the agent version")
    version.add_argument("--json", action="store_true")
    version.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))
