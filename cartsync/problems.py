"""Manifest problems as the user reads them: `file:line: key.path: problem (fix)`, all at once, sorted.

`Problems` collects every problem of one manifest, each placed on the line of the YAML node it is about
(found by key path in the composed node tree); `duplicate_keys` finds the keys YAML would silently drop, and
`schema_problem` renders a jsonschema error as such a problem. The rendering is a table — validator
keyword → the function that words it — so a new keyword in the schema gets its wording in one row; a
keyword without a row falls back to jsonschema's own message.
Values are described, never echoed when they look like a token (redact.py).
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import redact

if TYPE_CHECKING:
    import jsonschema


def fmt_path(path: list[Any]) -> str:
    """`targets[0].zenodo.metadata`, or `(top level)`; a key that looks like a token is described."""
    out = ""
    for part in path:
        if isinstance(part, str) and redact.looks_like_token(part):     # a token pasted as a key
            part = f"<a key of {len(part)} characters that looks like a token>"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_at(root: yaml.Node | None, path: list[Any], key_node: bool = False) -> yaml.Node | None:
    node = root
    for i, part in enumerate(path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    node = k if key_node and i == len(path) - 1 else v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


class Problems:
    """Every problem of one manifest `file`, placed by key path on the lines of `root` (None: data built in
    memory, so no lines)."""

    def __init__(self, file: Path, root: yaml.Node | None) -> None:
        self.file, self.root = file, root
        self.items: list[str] = []
        self.lines: list[int] = []

    def add(self, path: list[Any], message: str, hint: str = "", key_node: bool = False) -> None:
        node = _node_at(self.root, path, key_node)
        where = f"{self.file}:{node.start_mark.line + 1}" if node is not None else str(self.file)
        text = f"{where}: {fmt_path(path)}: {message}"
        self.items.append(text + (f" ({hint})" if hint else ""))
        self.lines.append(node.start_mark.line if node is not None else -1)

    def add_line(self, line: int, path: list[Any], message: str) -> None:
        self.items.append(f"{self.file}:{line + 1}: {fmt_path(path)}: {message}")
        self.lines.append(line)

    def sorted(self) -> list[str]:
        return [text for _, text in sorted(zip(self.lines, self.items, strict=False), key=lambda p: p[0])]


def duplicate_keys(node: yaml.Node | None, path: list[Any]) -> list[tuple[int, list[Any], str]]:
    """YAML keeps the last of two equal keys without a word; a manifest must not."""
    out: list[tuple[int, list[Any], str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for k, v in node.value:
            if k.value in first:
                out.append((k.start_mark.line, path + [k.value],
                            f"duplicate key (also on line {first[k.value] + 1}; YAML would keep only the last)"))
            first.setdefault(k.value, k.start_mark.line)
            out += duplicate_keys(v, path + [k.value])
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += duplicate_keys(v, path + [i])
    return out


def describe(value: Any) -> str:
    """What a value is (`a string "x"`, `a number 3`), never the value itself when it looks like a token."""
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)
    if isinstance(value, str) and redact.looks_like_token(value):
        return f"{kind} of {len(value)} characters that looks like a token"     # never echoed
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool)) else ""
    return f"{kind} {shown}".strip()


# ---- jsonschema errors → problems ---------------------------------------------------------------------

_TYPE_NAMES = {"string": "a string", "boolean": "true or false", "integer": "a whole number",
               "array": "a list", "object": "a mapping", "number": "a number"}

_PATTERN_HINTS = {
    "creators": 'write "Lastname, Firstname" or {name: "Lastname, Firstname", affiliation: …, orcid: …}',
    "name": 'use letters, digits, ".", "_" and "-"',
    "orcid": "an ORCID looks like 0000-0002-1825-0097",
    "deposition": "use `new` or the numeric id of an existing deposition",
    "part_size": 'a number of bytes (at least 5 MiB) or a size like "64MiB"',
    "url": "start it with https://",
    "publication_date": "use YYYY-MM-DD",
    "catalog_as": "a file name without folders, e.g. catalog.yaml",
    "public_url": "an http(s) URL without credentials, e.g. https://data.example.org/mouse-brain",
    "origin": "scheme://host[:port] without a path, e.g. https://v3o-main.carto-scope.org",
}


def _hint(path: list[Any]) -> str:
    if "creators" in path and path[-1] != "orcid":
        return _PATTERN_HINTS["creators"]
    named = [p for p in path if isinstance(p, str)]
    return _PATTERN_HINTS.get(named[-1] if named else "", "")


Render = Callable[["jsonschema.ValidationError", Problems, list[Any]], None]


def _unknown_keys(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    allowed = sorted(err.schema.get("properties", {}))
    for key in sorted(set(err.instance) - set(allowed)):
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(allowed)
        problems.add(path + [key], "unknown key", hint, key_node=True)


def _required(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    missing = re.match(r"'(.*?)' is a required property", err.message)
    name = missing.group(1) if missing else err.message
    problems.add(path, f"missing required key {name!r}")


def _enum(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    choices = ", ".join(str(c) for c in err.validator_value)
    problems.add(path, f"{describe(err.instance)} is not allowed", f"use one of: {choices}")


def _const(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    problems.add(path, f"{describe(err.instance)} is not allowed", f"use {err.validator_value!r}")


def _type(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    want = _TYPE_NAMES.get(err.validator_value, str(err.validator_value))
    problems.add(path, f"expected {want}, got {describe(err.instance)}")


def _min_items(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    if err.validator_value == 1:
        problems.add(path, "must not be empty", "list at least one item")
    else:
        problems.add(path, err.message)


def _min_length(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    problems.add(path, f"{describe(err.instance)} is too short (at least {err.validator_value} characters)")


def _one_of(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    # Report the branch that fits the value's type (e.g. the object form of a creator), if exactly one does.
    fitting = [e for e in err.context if e.validator != "type" and len(e.relative_schema_path) > 1
               and not any(c.validator == "type" and c.relative_schema_path[0] == e.relative_schema_path[0]
                           for c in err.context)]
    if fitting:
        for sub in fitting:
            schema_problem(sub, problems)
    else:
        problems.add(path, f"{describe(err.instance)} has the wrong form", _hint(path))


def _pattern(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    if path[-1:] == ["token_env"]:
        # not a variable name, so maybe the token itself: described, never echoed (manifest's secret checks
        # report what redact.token_env_problem finds)
        if not redact.token_env_problem(str(err.instance)):
            problems.add(path, f"the value given ({len(str(err.instance))} characters) is not the name of an "
                         "environment variable", redact.TOKEN_ENV_HINT)
    else:
        problems.add(path, f"{describe(err.instance)} has the wrong form", _hint(path))


def _minimum(err: jsonschema.ValidationError, problems: Problems, path: list[Any]) -> None:
    problems.add(path, f"{err.instance} is too small (at least {err.validator_value})")


RENDER: dict[str, Render] = {
    "additionalProperties": _unknown_keys,
    "required": _required,
    "enum": _enum,
    "const": _const,
    "type": _type,
    "minItems": _min_items,
    "minLength": _min_length,
    "oneOf": _one_of,
    "pattern": _pattern,
    "minimum": _minimum,
}


def schema_problem(err: jsonschema.ValidationError, problems: Problems) -> None:
    """Add one schema error to `problems`, worded by its validator's row in RENDER."""
    path = list(err.absolute_path)
    render = RENDER.get(str(err.validator))
    if render is None:
        problems.add(path, err.message)
    else:
        render(err, problems, path)
