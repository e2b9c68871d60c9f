"""Flags shared by every sub-command (cartsync's own and the cartloader ones in compat)."""
from __future__ import annotations

import argparse


def global_flags(p: argparse.ArgumentParser, here: bool) -> None:
    """-v/-q/--debug work before or after the command (`here`: on the top-level parser, with defaults)."""
    dflt = (lambda v: v) if here else (lambda v: argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="count", default=dflt(0), help="more detail (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", default=dflt(False), help="only errors and the summary")
    p.add_argument("--debug", action="store_true", default=dflt(False), help="tracebacks on errors")
