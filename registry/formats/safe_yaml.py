"""The one YAML reader for manifests: bounded in memory and strict about ambiguity.

PyYAML's safe loader still expands aliases: nine nested levels of ``*a`` ("billion laughs")
are a few hundred bytes of YAML and 10^9 values once anything walks them (pydantic, JSON),
and a duplicate key silently wins. So this reader

- refuses anchors and aliases (``&name``, ``*name``) and merge keys (``<<``) outright,
- refuses duplicate keys, naming the line of both,
- caps the input size, the nesting depth and the number of values,

and every refusal is a ``Refused`` (a ``YAMLError``) with a line and column. It keeps libyaml's C scanner
and parser (the slow part in pure Python) and composes nodes from its events itself, which
is where the alias, depth and count checks happen: before any value is built.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.error import MarkedYAMLError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # a manifest is a few KB; 1 MiB leaves room for large probe bodies
MAX_DEPTH = 64
MAX_NODES = 100_000

_MERGE = "tag:yaml.org,2002:merge"
_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster for 1,000 pushes


class Refused(MarkedYAMLError):
    """YAML that parses but that a manifest may not use; ``problem_mark`` says where."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(_Base):
    """A safe loader without aliases, merge keys or duplicate keys, with bounded size."""

    def get_single_node(self):
        self.get_event()  # StreamStart
        node = None if self.check_event(StreamEndEvent) else self._document()
        if not self.check_event(StreamEndEvent):
            raise Refused("expected a single document, but found another one", self.get_event().start_mark)
        self.get_event()
        return node

    def _document(self):
        self.get_event()  # DocumentStart
        self._nodes = 0
        node = self._node(self.get_event(), 1)
        self.get_event()  # DocumentEnd
        return node

    def _node(self, event, depth: int):
        self._refuse(event, depth)
        if isinstance(event, ScalarEvent):
            tag = event.tag if event.tag not in (None, "!") else self.resolve(ScalarNode, event.value, event.implicit)
            # types-PyYAML: an event's marks may be libyaml's Mark, which a node's are not declared to be
            return ScalarNode(tag, event.value, event.start_mark, event.end_mark,  # type: ignore[arg-type]
                              style=event.style)
        kind, end = ((SequenceNode, SequenceEndEvent) if isinstance(event, SequenceStartEvent)
                     else (MappingNode, MappingEndEvent))
        tag = event.tag if event.tag not in (None, "!") else self.resolve(kind, None, event.implicit)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        while not isinstance(item := self.get_event(), end):
            item = self._node(item, depth + 1)
            node.value.append(item if kind is SequenceNode else (item, self._node(self.get_event(), depth + 1)))
        node.end_mark = item.end_mark
        return node

    def _refuse(self, event, depth: int) -> None:
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise Refused("anchors and aliases (&name, *name) are not allowed in a manifest; "
                          "write the value out", event.start_mark)
        if depth > MAX_DEPTH:
            raise Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Refused(f"more than {MAX_NODES} values", event.start_mark)
        if not isinstance(event, (ScalarEvent, SequenceStartEvent, MappingStartEvent)):
            raise Refused(f"unexpected {type(event).__name__}", event.start_mark)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            _refuse_duplicates(self, node)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # int("9"*5000), 2026-13-45, bad base64
            raise Refused(f"cannot read this value ({exc})", node.start_mark) from None


def _refuse_duplicates(loader: StrictLoader, node: MappingNode) -> None:
    seen: dict[Any, ScalarNode] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            raise Refused("merge keys (<<) are not allowed in a manifest; write the keys out",
                          key_node.start_mark)
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable key: the constructor refuses it with its own message
            continue
        if first is not key_node:
            raise Refused(f"duplicate key {key!r} (first on line {first.start_mark.line + 1}); keep one",
                          key_node.start_mark)


def loads(text: str | bytes) -> Any:
    """Parse one YAML document with ``StrictLoader``; a ``yaml.YAMLError`` if it is refused."""
    if len(text) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES >> 20} MiB")
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
