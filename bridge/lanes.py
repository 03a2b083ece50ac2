"""The installed lanes, found through the `bridge.lanes` entry-point group.

bridge's own lanes register the same way a separately installed package does (pyproject.toml's
`[project.entry-points."bridge.lanes"]`), so adding a target changes no file of bridge. Loading a
lane loads its declaration only (`bridge.base.lane.Lane`: data and "module:function" paths); its
converter, runner and preflight are imported in the stage children that run them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib import metadata

from bridge.base.errors import BridgeError, ConversionError, UsageError
from bridge.base.lane import Lane, LaneArtifact, LaneRequest
from bridge.base.modes import ModeSpec

GROUP = "bridge.lanes"
FIRST = ("onnx", "tflite", "coreml")  # the built-in lanes keep their order in tables and help


class LaneError(BridgeError):
    """A lane's declaration is broken (not a `Lane`, or a name two packages claim)."""


_REGISTERED: dict[str, Lane] = {}  # lanes an embedding program registers in-process (`registered`)


@contextlib.contextmanager
def registered(*extra: Lane) -> Iterator[None]:
    """Install `extra` lanes in this process for the duration, as an application embedding bridge
    (or a test) would; their stages still run from the "module:function" paths they declare."""
    for lane in extra:
        if lane.name in lanes():
            raise LaneError(f"a lane named {lane.name!r} is already installed")
        _REGISTERED[lane.name] = lane
    try:
        yield
    finally:
        for lane in extra:
            _REGISTERED.pop(lane.name, None)


def lanes() -> dict[str, Lane]:
    """Every installed lane: the entry-point group's, then any registered in-process."""
    return {**_discovered(), **_REGISTERED}


@functools.cache
def _discovered() -> dict[str, Lane]:
    found: dict[str, Lane] = {}
    seen: dict[str, str] = {}
    for ep in metadata.entry_points(group=GROUP):
        if seen.get(ep.name) == ep.value:  # the same registration seen twice on sys.path
            continue
        try:
            lane = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in is named, whatever it raised
            raise LaneError(f"lane {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
        if not isinstance(lane, Lane):
            raise LaneError(f"lane {ep.name!r} ({ep.value}) is a {type(lane).__name__}, not a bridge Lane")
        if lane.name in found:
            raise LaneError(f"two packages register the lane {lane.name!r} ({seen[lane.name]} and {ep.value})")
        found[lane.name] = lane
        seen[lane.name] = ep.value
    return dict(sorted(found.items(), key=lambda kv: (kv[0] not in FIRST, FIRST.index(kv[0])
                                                       if kv[0] in FIRST else 0, kv[0])))


def lane(name: str) -> Lane:
    found = lanes()
    if name not in found:
        raise UsageError(f"unknown target {name!r}; valid targets: {', '.join(found)}")
    return found[name]


def mode_spec(target: str, mode: str) -> ModeSpec:
    return lane(target).mode(mode)


def all_modes() -> tuple[str, ...]:
    """Every mode any lane offers, in declaration order."""
    return tuple(dict.fromkeys(m.name for lane_ in lanes().values() for m in lane_.modes))


def preflight_then_convert(lane_name: str, preflight: str | None, convert: str, req: LaneRequest
                           ) -> list[LaneArtifact]:
    """A lane's conversion stage: its preflight names every op it refuses, all at once, before
    anything converts; then its converter. Runs in the lane's child."""
    if preflight:
        missing = call(preflight, req.hub_path, req.node_names, req.options)
        if missing:
            raise ConversionError(f"{len(missing)} op type(s) the {lane_name} lane refuses: "
                                  + "; ".join(str(u) for u in missing), stage=f"{lane_name}-preflight",
                                  node=missing[0].nodes[0] if missing[0].nodes else None,
                                  op_type=missing[0].op_type)
    return call(convert, req)


def call(path: str, *args, **kwargs):
    """Call a "module:function" path (in the process that runs it)."""
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)
