"""The one YAML reader of grid and job files: strict about repeated keys.

PyYAML (like the YAML 1.1 spec's loaders in practice) keeps the last of two equal keys in a
mapping, so ``ratios: [0.25]`` written twice, or a second ``tokens:`` lower down, silently
replaces the first: a grid loses a ratio, a job trains another budget than the one read. A
repeated key is refused here instead, naming the key and both lines. torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from data.cli import BadInput

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice (the message says which and where)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a key they already hold.

    Keys merged in with ``<<: *anchor`` may be overridden (that is what merging is for); only
    keys written twice in the same mapping are refused.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it itself
                continue
            if first is not None:
                raise DuplicateKey(f"key {key!r} appears twice (lines {first} and {line}); "
                                   "the second would silently replace the first: keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path, what: str) -> Any:
    """Parse the YAML file at ``path`` (a ``what``: "grid file", "job file").

    Raises:
        BadInput: the file is missing, is a directory, is not valid YAML, or repeats a key.
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise BadInput(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {str(path)!r} is a directory; expected a YAML file") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} {str(path)!r} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except DuplicateKey as exc:
        raise BadInput(f"{what} {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{what} {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
