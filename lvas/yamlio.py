"""Reading YAML that a user (or an attacker) wrote: plain data only, and bounded.

Every YAML file and override lvas reads goes through :func:`load`:

* ``yaml.SafeLoader`` (no Python objects, no code);
* a key written twice in one mapping is refused, naming the key and both lines (YAML keeps the
  second silently);
* at most :data:`MAX_BYTES` bytes, :data:`MAX_NODES` nodes *after* aliases are expanded (a few
  hundred bytes of nested aliases otherwise grow to gigabytes when copied or printed) and
  :data:`MAX_DEPTH` levels of nesting; each limit can be raised through the environment variable
  named in its message.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64


class YAMLLimit(ValueError):
    """A YAML text is not plain, small, shallow data; the message says which and where."""


def _limit(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise YAMLLimit(f"key {str(key)[:60]!r} is written twice (lines {seen[key]} and {line}); "
                                    f"YAML would silently keep the second")
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader refuses it itself
                continue
        return super().construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _measure(node, max_nodes: int, max_depth: int) -> None:
    """Count ``node``'s nodes with aliases expanded (memoised per node) and its depth; raise past a limit."""
    sizes: dict[int, int] = {}
    stack = [(node, 1, False)]
    while stack:
        n, depth, done = stack.pop()
        if depth > max_depth:
            raise YAMLLimit(f"nested deeper than {max_depth} levels (line {n.start_mark.line + 1}; "
                            f"LVAS_YAML_MAX_DEPTH raises the limit)")
        if isinstance(n, yaml.ScalarNode):
            sizes[id(n)] = 1
            continue
        children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else list(n.value)
        if done:
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > max_nodes:
                raise YAMLLimit(f"expands to more than {max_nodes} values (aliases included; line "
                                f"{n.start_mark.line + 1}; LVAS_YAML_MAX_NODES raises the limit)")
            sizes[id(n)] = total
            continue
        if id(n) in sizes:
            continue
        stack.append((n, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def load(text: str | bytes, key_lines: dict | None = None) -> Any:
    """Plain data from YAML ``text`` within the limits (raises :class:`YAMLLimit` or ``yaml.YAMLError``).
    ``key_lines``: filled with the line (1-based) of each top-level key of a mapping."""
    max_bytes = _limit("LVAS_YAML_MAX_BYTES", MAX_BYTES)
    if len(text) > max_bytes:
        raise YAMLLimit(f"{len(text)} bytes; a config is at most {max_bytes} (LVAS_YAML_MAX_BYTES raises the limit)")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLLimit(f"nested too deeply to read (at most {MAX_DEPTH} levels)") from None
        if node is None:
            return None
        _measure(node, _limit("LVAS_YAML_MAX_NODES", MAX_NODES), _limit("LVAS_YAML_MAX_DEPTH", MAX_DEPTH))
        if key_lines is not None and isinstance(node, yaml.MappingNode):
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode):
                    key_lines.setdefault(k.value, k.start_mark.line + 1)
        return loader.construct_document(node)
    finally:
        loader.dispose()
