"""One ``[section]`` of the device's TOML file as a dataclass, loaded strictly.

Each module keeps its own settings next to the code that uses them (a
dataclass with defaults and a ``__post_init__`` that refuses impossible
values); this base adds the one thing they all share: building from a parsed
table while refusing keys the section does not have, so a typo can never fall
back silently to a default.
"""
from __future__ import annotations

import tomllib
from dataclasses import field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping


def read_toml(path: Path | str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Parse a TOML file; ``error`` with the path named when it is missing, unreadable or bad."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise error(f"{path}: cannot read config: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:   # TOML is UTF-8; tomllib lets this through as is
        line = exc.object[:exc.start].count(b"\n") + 1
        raise error(f"{path}: not valid TOML: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                    f"on line {line})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read config: {exc.strerror}") from None


def setting(default: Any, doc: str = "", check: Callable[[Any], str | None] | None = None) -> Any:
    """A field with its one-line meaning (printed by ``bodycam config defaults``) and a check
    returning a problem or None (applied by sections that use it, e.g. firmware.config)."""
    return field(default=default, metadata={"doc": doc, "check": check})


class Section:
    """Mixin for a settings dataclass; set ``SECTION`` (and ``ERROR`` to raise another type)."""

    SECTION: ClassVar[str]
    ERROR: ClassVar[type[Exception]] = ValueError
    __dataclass_fields__: ClassVar[dict[str, Any]]   # every Section is a dataclass

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, device_id: str | None = None) -> Any:
        """Build from a parsed table. ``device_id`` (the ``[device] id``) is given to every
        section; one whose defaults derive from it (``[gadget] serial``) overrides this."""
        unknown = sorted(set(mapping) - {f.name for f in fields(cls)})
        if unknown:
            raise cls.ERROR(f"[{cls.SECTION}] unknown setting(s): {', '.join(unknown)}")
        return cls(**dict(mapping))
