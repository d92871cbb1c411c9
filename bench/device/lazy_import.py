"""`load_entry`: what a registry entry written as "module:function" names, imported only when
it is used. The registries of backends (`device.backends`) and runner kinds
(`runners.registry`) name their code this way, so a device imports only what its profile
uses: ONNX Runtime without TensorRT or pycuda, a local job without the SSH or Ray code.

It lives in `device/` because the device package is shipped to devices on its own (as a
zip, without bfnas): the backends' entries are relative ("`.ort:make_infer`") so they
resolve inside whatever name the package is imported under."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def load_entry(entry: str, package: str | None = None) -> Callable[..., Any]:
    """The callable `entry` ("package.module:function", or ".module:function" relative to
    `package`) names, its module imported now.

    An ImportError is the caller's to explain (a backend whose library is missing here, say);
    an entry that is not of that form, or names nothing callable, is a registration mistake."""
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"registry entry {entry!r} is not module:function")
    found = getattr(importlib.import_module(module_name, package), attr, None)
    if not callable(found):
        raise ValueError(f"registry entry {entry!r}: {module_name} has no function {attr}")
    return found


def registered(table: Mapping[str, T], name: str, what: str) -> T:
    """The entry of a registry `table` registered as `name`; ValueError naming the registered
    ones (`what`: "backend", "runner kind"), for the line that refuses an unknown name."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r} (registered: {', '.join(table)})") from None
