"""`dh-tune`: one command for every tool of the package, e.g. `dh-tune search --budget-ms 20`.

Each subcommand hands the rest of its command line to the main of its `python -m dh_tune.<module>` form, imported
only when that subcommand runs, so `dh-tune --help` starts without torch or Ray.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .commands import ALIASES, COMMANDS, command_module

__all__ = ["COMMANDS", "build_parser", "main"]


def _command_list() -> str:
    """The subcommands with their summaries, one line each."""
    width = max(map(len, COMMANDS)) + 2
    return "\n".join(f"  {name.ljust(width)}{summary}" for name, (_, summary) in COMMANDS.items())


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the subcommands; their own options belong to their modules."""
    parser = argparse.ArgumentParser(
        prog="dh-tune", description=__doc__.split("\n\n")[0].split(":", 1)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{_command_list()}\n\n`dh-tune COMMAND --help` shows the options of a command; each is\n"
               "also `python -m MODULE`, e.g. `python -m dh_tune.search` for `dh-tune search`.")
    parser.add_argument("--version", action="version", version=f"dh-tune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="one of the commands below")
    for name in COMMANDS:
        sub.add_parser(name, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dh-tune COMMAND [ARGS...]`: the command's exit status; 2 for a missing or unknown command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and (args[0] in COMMANDS or args[0] in ALIASES):
        module = importlib.import_module(command_module(args[0]))
        return int(module.main(args[1:]) or 0)
    parser = build_parser()
    parser.parse_args(args)  # --help and --version exit 0; a missing or unknown command exits 2
    parser.error("the command comes first: dh-tune COMMAND [ARGS...]")
    return 2


if __name__ == "__main__":
    sys.exit(main())
