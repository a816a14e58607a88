"""The one dict round trip every settings dataclass shares (checkpoints, CLI, notebooks).

>>> @dataclass
... class MyConfig(Settings):
...     steps: int = 10
>>> MyConfig.from_dict(MyConfig(steps=3).to_dict())
MyConfig(steps=3)

An unknown key is an error of the class's own kind (``settings_error``): it signals a typo or
a checkpoint written by another version. A key a later version renamed is read under its new
name (``renamed_keys``), so checkpoints written before the rename still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

__all__ = ["Settings"]

T = TypeVar("T", bound="Settings")


class Settings:
    """Mixin for settings dataclasses: :meth:`to_dict` and its inverse :meth:`from_dict`."""

    settings_error: ClassVar[type[Exception]] = ValueError
    #: old key -> current field name, for dicts written before a field was renamed
    renamed_keys: ClassVar[Mapping[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (JSON-friendly when the fields are)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """Names of the settings' fields."""
        return frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        """Inverse of :meth:`to_dict`; unknown keys raise ``settings_error``; keys listed in
        ``renamed_keys`` are read under their current name."""
        d = dict(d)
        for old, new in cls.renamed_keys.items():
            if old in d:
                if new in d:
                    raise cls.settings_error(
                        f"{cls.__name__} has both {old!r} and its new name {new!r}; keep {new!r}."
                    )
                d[new] = d.pop(old)
        known = cls.field_names()
        unknown = set(d) - known
        if unknown:
            raise cls.settings_error(
                f"unknown {cls.__name__} keys {sorted(unknown)}; known: {sorted(known)}."
            )
        return cls(**dict(d))
