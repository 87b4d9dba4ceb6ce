"""`mlfleet-agent` command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, List, Optional, Sequence

from mlfleet.agent import __version__

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_VARIANT = 3


class AgentError(Exception):
    """Bad input or a state the agent cannot work in: one line for the operator."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _root(args: argparse.Namespace) -> str:
    # The lab's sshd (or a container's environment) may say where the host is mounted.
    return args.root or os.environ.get("MLFLEET_ROOT") or "/"


def _version(args: argparse.Namespace) -> int:
    info = {"agent": __version__, "python": platform.python_version()}
    print(
        json.dumps(info) if args.json else f"mlfleet-agent {__version__} (python {info['python']})"
    )
    return 0


def _detect(args: argparse.Namespace) -> int:
    from mlfleet.agent.detect.host_facts import detect_host_facts

    facts = detect_host_facts(_root(args), args.docker_host)
    if args.json:
        print(json.dumps(facts.to_dict(), indent=2))
    else:
        from mlfleet.agent.report import facts_text

        print(facts_text(facts))
    return 0


def _load_document(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise AgentError(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE) from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # bundled in the agent's zipapp; JSON works without it
    except ImportError:
        raise AgentError(
            f"{path}: not JSON, and PyYAML is not available to read YAML", EXIT_USAGE
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise AgentError(f"{where}: not valid YAML or JSON", EXIT_USAGE) from None


def _select(args: argparse.Namespace) -> int:
    from mlfleet.agent.facts import HostFacts
    from mlfleet.agent.selection import select_variant
    from mlfleet.agent.variants import VariantError, parse_variants

    doc = _load_document(args.variants)
    items = doc.get("variants") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise AgentError(f"{args.variants}: expected a `variants:` list", EXIT_USAGE)
    try:
        variants = parse_variants(items)
    except VariantError as exc:
        raise AgentError(f"{args.variants}: {exc}", EXIT_USAGE) from None
    if args.facts:
        try:
            facts = HostFacts.from_dict(_load_document(args.facts))
        except ValueError as exc:
            raise AgentError(f"{args.facts}: {exc}", EXIT_USAGE) from None
    else:
        from mlfleet.agent.detect.host_facts import detect_host_facts

        facts = detect_host_facts(_root(args), args.docker_host)
    selection = select_variant(variants, facts)
    if args.json:
        print(json.dumps(selection.to_dict(), indent=2))
    else:
        from mlfleet.agent.report import selection_text

        print(selection_text(selection))
    return 0 if selection.variant else EXIT_NO_VARIANT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlfleet-agent", description="mlfleet host agent")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")

    version = sub.add_parser("version", help="print the agent version")
    version.add_argument("--json", action="store_true")
    version.set_defaults(func=_version)

    def host_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="host root prefix (default: $MLFLEET_ROOT or /)")
        p.add_argument(
            "--docker-host", help="Docker engine (default: $DOCKER_HOST or the standard socket)"
        )

    detect = sub.add_parser("detect", help="detect GPUs, drivers and the Docker engine")
    detect.add_argument("--json", action="store_true")
    host_options(detect)
    detect.set_defaults(func=_detect)

    select = sub.add_parser("select", help="choose the image variant that runs on this host")
    select.add_argument("--variants", required=True, help="YAML or JSON with a `variants:` list")
    select.add_argument("--facts", help="facts from `detect --json` (default: detect now)")
    select.add_argument("--json", action="store_true")
    host_options(select)
    select.set_defaults(func=_select)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except AgentError as exc:
        if args.debug:
            raise
        print(f"mlfleet-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code


__all__: List[str] = ["build_parser", "main"]
