"""Ctrl-C and SIGTERM: say what happens, abort this run's open uploads, exit 130 within seconds.

Transfers run in worker threads blocked in socket calls, which Python cannot interrupt; unwinding
them (KeyboardInterrupt) would wait for every running file to finish sending. So the first signal
runs the abort hooks the executor registered (S3: abort the multipart uploads this run started),
bounded by ABORT_SECONDS, and ends the process at once: in-flight requests die with their
connections, no further file is read. A second signal while the hooks run exits immediately.
What a killed run leaves is what a re-run handles already (tests/test_killloop.py): the hash
cache is SQLite (committed batches survive; a lost batch costs a re-hash), and the next apply
aborts the uploads left open.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

ABORT_SECONDS = 3.0          # the hooks' share of the 5 s promised to the user
_hooks: list[Callable[[], None]] = []
_lock = threading.Lock()
_signalled = threading.Event()


@contextmanager
def aborting(hook: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a Ctrl-C calls `hook` (from another thread) before the process exits."""
    with _lock:
        _hooks.append(hook)
    try:
        yield
    finally:
        with _lock:
            _hooks.remove(hook)


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _quit() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)


def _run_hooks() -> None:
    with _lock:
        hooks = list(_hooks)
    for hook in hooks:
        with suppress(Exception):      # best effort: the next apply aborts what is left
            hook()


def _handle(signum: int, frame: object) -> None:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    if _signalled.is_set():
        _say(f"{name} again: quitting at once (the next apply cleans up)")
        _quit()
    _signalled.set()
    with _lock:
        busy = bool(_hooks)
    _say(f"interrupted ({name}): stopping; " + ("aborting the transfers in flight and this run's unfinished "
         "uploads (press Ctrl-C again to quit at once)" if busy else "nothing was being written"))
    worker = threading.Thread(target=_run_hooks, name="abort", daemon=True)
    worker.start()
    worker.join(ABORT_SECONDS)     # interruptible: a second signal runs this handler again and quits
    _say("interrupted; re-run the same command to finish (it resumes where it stopped)")
    _quit()


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM handled this way while the block runs (main thread only; the previous
    handlers come back afterwards, so an in-process caller such as a test keeps its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
