"""Every YAML file cartsync reads (manifest, catalog), parsed in time linear in its size.

One parse, with libyaml's C loader where PyYAML has it (a 50 MB catalog took minutes through the
pure-Python one), into the composed node graph, which keeps every node's line for messages. Before
anything is built from it, one walk over the graph (each node visited once, sizes memoised) measures
what aliases would expand to and how deep it nests, and refuses:

- an alias bomb: a few lines of nested aliases expand to billions of values, and every later walk
  (duplicate keys, catalog references, schema validation) would go through each of them;
- nesting deeper than MAX_DEPTH: the later walks are recursive (RecursionError at ~1000 levels);
- an alias that contains itself (`&a [*a]`): a cycle no walk would leave.

A syntax error is reported with the pure-Python parser's wording and line (its messages name what
was expected and what was found), re-read only up to the error, without building anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

MAX_DEPTH = 100              # catalogs and manifests nest a handful of levels
MAX_ALIASED_NODES = 100_000  # values aliases may add beyond those written out
LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlProblem(Exception):
    """The text is not YAML cartsync will read; `line` is 1-based (None when unknown)."""

    def __init__(self, line: int | None, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.line, self.problem, self.hint = line, problem, hint


@dataclass(frozen=True)
class Parsed:
    root: yaml.Node | None      # the composed graph (line numbers); None for an empty document
    data: Any                   # what yaml.safe_load would return


def parse(text: str) -> Parsed:
    """Parse one YAML document; raise YamlProblem if it is malformed, a bomb, too deep or cyclic."""
    loader = LOADER(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:     # the pure-Python composer recurses; libyaml stops at 1000 levels itself
            raise _too_deep(None) from None
        except yaml.YAMLError as exc:
            raise _syntax(text, exc) from None
        if root is None:
            return Parsed(None, None)
        _measure(root)
        try:
            return Parsed(root, loader.construct_document(root))
        except yaml.YAMLError as exc:    # e.g. an unhashable key, a bad timestamp
            raise _syntax(text, exc) from None
    finally:
        loader.dispose()


def _line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else None


def _syntax(text: str, exc: yaml.YAMLError) -> YamlProblem:
    if "maximum nesting depth" in str(getattr(exc, "problem", "")):
        return _too_deep(_line(exc))
    if LOADER is not yaml.SafeLoader:
        try:     # events only: stops at the first error, builds nothing, does not recurse
            for _ in yaml.parse(text, Loader=yaml.SafeLoader):
                pass
        except yaml.YAMLError as plain:
            exc = plain
    return YamlProblem(_line(exc), str(getattr(exc, "problem", None) or exc), "check indentation and quoting")


def _too_deep(line: int | None) -> YamlProblem:
    return YamlProblem(line, f"nested more than {MAX_DEPTH} levels deep", "flatten the structure")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node) -> None:
    """Refuse a graph that expands past MAX_ALIASED_NODES, nests past MAX_DEPTH, or has a cycle.

    Post-order over the graph with an explicit stack: each distinct node is measured once, so an
    alias costs one lookup however often it repeats.
    """
    size: dict[int, int] = {}        # id(node) → nodes in its expansion
    depth: dict[int, int] = {}       # id(node) → levels of collections in its expansion
    open_: set[int] = set()          # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = (1 + max((depth[id(k)] for k in kids), default=0)) if kids or not isinstance(
                node, yaml.ScalarNode) else 0
            open_.discard(key)
            if depth[key] > MAX_DEPTH:
                raise _too_deep(node.start_mark.line + 1)
            continue
        if key in size:
            continue
        if key in open_:
            raise YamlProblem(node.start_mark.line + 1, "an alias refers to a node that contains it (a cycle)",
                              "write the repeated value out instead of the alias")
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    distinct = len(size)
    if size[id(root)] - distinct > MAX_ALIASED_NODES:
        raise YamlProblem(root.start_mark.line + 1,
                          f"its aliases expand to {size[id(root)]:,} values; cartsync reads at most "
                          f"{MAX_ALIASED_NODES:,} beyond the {distinct:,} written out",
                          "write the repeated values out, or use fewer nested aliases")
