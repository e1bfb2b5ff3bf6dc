"""The storyboard file's YAML loader: safe YAML whose mappings remember their lines, so errors can name them.

Every mapping `load_with_lines` returns holds, besides its fields, `LINE` (the mapping's own line) and `LINES`
(field name -> the line of its value), both 1-based.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer as _Composer
from yaml.constructor import SafeConstructor as _SafeConstructor
from yaml.cyaml import CParser as _CParser
from yaml.resolver import Resolver as _Resolver

from studio.storyboard_file.doc import StoryboardError, StoryboardLimits

LINES = "__lines__"
LINE = "__line__"


class LineLoader(_Composer, _CParser, _SafeConstructor, _Resolver):
    """Safe YAML loader that records, for every mapping, its own line and the line of each value (1-based).

    libyaml reads the text into events; the nodes are composed here, in Python, so the nesting depth is counted as
    it grows (a file nested deeper than `max_depth` is refused with its line, never a RecursionError), and a list or
    mapping used as a key is refused with its line (it could not be a field name)."""

    max_depth = StoryboardLimits.max_depth

    def __init__(self, stream) -> None:
        _CParser.__init__(self, stream)
        _Composer.__init__(self)
        _SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self.max_depth and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"lists and mappings nested deeper than {self.max_depth} levels (setting storyboard_max_depth); "
                    "a storyboard needs 6",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {kind} cannot be a key; a key is a field name such as caption", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        mapping = super().construct_mapping(node, deep=True)
        mapping[LINES] = {self.construct_object(k, deep=True): v.start_mark.line + 1 for k, v in node.value}
        mapping[LINE] = node.start_mark.line + 1
        return mapping


LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, lambda loader, node: loader.construct_mapping(node)
)


def load_with_lines(text: str, source: str, max_depth: int) -> Any:
    """The YAML document in `text`, its mappings carrying their lines; a file that is not YAML, or nests lists and
    mappings deeper than `max_depth`, raises StoryboardError with the line."""
    try:
        loader = LineLoader(text)
        loader.max_depth = max_depth
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or str(error)
        raise StoryboardError(f"not valid YAML: {problem}", source, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise StoryboardError(f"not valid YAML: {error}", source) from None
