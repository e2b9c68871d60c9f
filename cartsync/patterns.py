"""Exclude (and header) patterns with .gitignore's meaning, matched by `pathspec`.

A pattern is read as a line of a .gitignore file at `source.dir`: a trailing
`/` means a folder at any depth (and everything in it), a leading `/` anchors it
at `source.dir`, a pattern with a `/` elsewhere is anchored too, one without
matches the name at any depth, `**` crosses folders and `!` re-includes what an
earlier pattern excluded (the last matching pattern wins; unlike git, a file
can be re-included inside an excluded folder: the user asked for it by name).
A leading `./` is read as `/` (anchored), which is what a shell user means.

The matching is pathspec's (the well-kept gitignore implementation); this
module only refuses the forms that can never match a key (`problem`), so a
pattern that does nothing is a validate-time error rather than a silent leak.
pathspec is imported on first use: most runs have no excludes.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec


def normalized(pattern: str) -> str:
    """The pattern as pathspec should read it: a leading `./` (after any `!`) means anchored (`/`)."""
    neg = "!" if pattern.startswith("!") else ""
    body = pattern[len(neg):]
    if not body.startswith("./"):
        return pattern
    while body.startswith("./"):
        body = body[2:].lstrip("/")
    return neg + "/" + body


def problem(pattern: str, source_dir: str | None = None) -> tuple[str, str] | None:
    """(problem, fix) when the pattern's form can match no key, else None. No I/O."""
    if pattern.startswith("#"):
        return ("starts with '#', which .gitignore reads as a comment: it matches nothing",
                "write \\# to match a name that starts with #")
    text = normalized(pattern)
    body = text.removeprefix("!")
    if not body.strip(" /*"):
        if "*" in body:
            return None                    # "*", "**": everything
        return "matches nothing", "write a name, a folder/ or a glob such as *.log"
    if source_dir and body.startswith(source_dir.rstrip("/") + "/"):
        rel = body[len(source_dir.rstrip("/")):]
        return ("is an absolute path; patterns are relative to source.dir",
                f"write {'!' if text.startswith('!') else ''}{rel} (a leading / anchors it at source.dir)")
    if any(part in (".", "..") for part in body.strip("/").split("/")):
        return ("has a '.' or '..' segment, and the paths it is matched against never do",
                "write the path from source.dir, e.g. /logs/** or logs/")
    if body.endswith("\\") and not body.endswith("\\\\"):
        return "ends in a lone backslash, which .gitignore refuses", "remove it, or write \\\\ for a backslash"
    try:
        _spec((text,))
    except Exception as exc:
        return f"is not a valid pattern: {exc}", "see the .gitignore pattern format"
    return None


@functools.lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    import pathspec
    return pathspec.GitIgnoreSpec.from_lines([normalized(p) for p in patterns])


def excluded(key: str, patterns: tuple[str, ...]) -> bool:
    """True if the patterns, read as one .gitignore file, exclude `key` (a relative POSIX path)."""
    return bool(patterns) and _spec(patterns).match_file(key)


def pruned_folder(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """For a walk: whether a folder (relative POSIX path) is excluded with everything in it. Only without
    `!` patterns, which could re-include something inside."""
    if not patterns or any(p.startswith("!") for p in patterns):
        return lambda rel: False
    spec = _spec(patterns)
    return lambda rel: bool(spec.match_file(rel + "/"))


def matches(key: str, pattern: str) -> bool:
    """One pattern on one key, with the same meaning as an exclude (used for S3 header globs too)."""
    return excluded(key, (pattern,))
