"""`DeviceSettings`: a profile as the device reads it, from the resolved JSON a job carries.

The host validates a profile (`bench.hardware_profile`, pydantic) and sends every setting
resolved, defaults filled in. The device only reads them: a read-only view by attribute
(`settings.runtime.intra_op_threads`), so the harnesses read a profile the same way on both
sides while a device needs neither pydantic nor bfnas. Defaults exist only in the schema: a
setting the job lacks is an error here, never a second default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DeviceSettings:
    """Read-only attribute view of a resolved profile table; nested tables are views too,
    lists (providers, their option tables) stay as sent."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any], path: str = "profile") -> None:
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not slots: the settings themselves.
        if name.startswith("__") or name not in self._data:
            raise AttributeError(f"the job's {self._path} has no setting {name!r}")
        value = self._data[name]
        if isinstance(value, Mapping):
            return DeviceSettings(value, f"{self._path}.{name}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a profile's settings are read-only on the device")

    def to_dict(self) -> dict:
        """The settings as sent (a copy)."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"DeviceSettings({self._data!r})"
