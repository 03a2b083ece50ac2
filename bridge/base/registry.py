"""One registry class for everything bridge looks up by name: Core ML op converters (by ONNX op
type and opset), the reference executor's MIL ops, and the named graph passes of the hub and the
lanes. Registering a name twice for the same version is an error, so two modules can never
silently fight over one op."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    name: str
    since: int
    fn: Callable
    attrs: dict = field(default_factory=dict)


class Registry(Mapping):
    """`registry[name]` is the newest function registered under `name`; `lookup(name, version)`
    the newest whose `since` is not above `version` (an ONNX op converter for a model's opset).
    `load`, when given, imports the modules that register (once, on first use)."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, list[Entry]] = {}
        self._load = load

    def register(self, *names: str, since: int = 1, **attrs) -> Callable[[Callable], Callable]:
        def wrap(fn: Callable) -> Callable:
            for name in names:
                entries = self._entries.setdefault(name, [])
                clash = [e for e in entries if e.since == since]
                if clash:
                    raise ValueError(f"{self.kind} {name!r}" + (f" since {since}" if since != 1 else "")
                                     + f" is already registered (in {clash[0].fn.__module__}): registered twice, "
                                     f"again in {fn.__module__}")
                entries.append(Entry(name, since, fn, attrs))
                entries.sort(key=lambda e: e.since)
            return fn

        return wrap

    def lookup(self, name: str, version: int | None = None) -> Entry | None:
        self._ensure_loaded()
        found = None
        for entry in self._entries.get(name, ()):
            if version is None or entry.since <= version:
                found = entry
        return found

    def _ensure_loaded(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            load()

    def __getitem__(self, name: str) -> Callable:
        entry = self.lookup(name)
        if entry is None:
            raise KeyError(name)
        return entry.fn

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(self._entries)

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)
