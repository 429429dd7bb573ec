"""The ``hub`` command. ``hub serve`` runs the hub (``hub.cli.serve``); the client commands
(``channel``, ``watch``, ``submit``, ``tasks``) are in ``hub.cli.commands``, ``forward`` in
``hub.cli.forward``, ``keys`` in ``hub.cli.keys``.

Building the parser imports nothing heavy: each command imports what it runs on when it
runs, so ``hub keys list --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hub import __version__
from hub.cli import commands, forward, keys, money, serve
from hub.config.env import SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub", description="The hub: callbacks in, SSE out.")
    parser.add_argument("--version", action="version", version=f"hub {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    serve.add_commands(subcommands)
    commands.add_commands(subcommands)
    forward.add_commands(subcommands)
    keys.add_commands(subcommands)
    money.add_commands(subcommands)
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except SettingsError as exc:
        # A bad variable is the operator's to fix: one line naming it, not a traceback.
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
