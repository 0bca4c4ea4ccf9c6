"""Shared entry point of the apps: absl.app.run, with --help/--helpshort/--helpfull exiting 0 (absl uses 1)."""

import sys

from absl import app

_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "--helpxml")


def _parse(argv):
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as e:
        if e.code == 1 and any(arg.split("=")[0] in _HELP for arg in argv[1:]):
            sys.exit(0)
        raise


def run(main):
    app.run(main, flags_parser=_parse)
