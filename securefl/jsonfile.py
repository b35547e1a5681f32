"""JSON files for the public records a deployment hands out (directories, round configurations): one format
check, one way to read and write them, no pickle."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from securefl.errors import ConfigError


def _no_constant(name: str) -> object:
    raise ConfigError(f"{name} is not a number a record may hold")


def integer(value: object, what: str) -> int:
    """`value` if it is an int (not a bool); ConfigError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    return value


class JsonRecord:
    """Mixin: from_json / save / load around a class's to_dict() and from_dict(); `record` names it in errors."""

    record = "record"

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping) -> Self:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except ValueError as e:
            raise ConfigError(f"{cls.record}: not JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the record as indented JSON, creating the folder if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        return cls.from_json(Path(path).read_text())
