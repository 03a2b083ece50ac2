"""Samples on disk: parity feeds, the source's outputs, calibration data, each runtime's outputs.

Each set is written once, by the stage that makes it, as one `.npy` file per sample and tensor, and
read (memory-mapped) by the stages that need it. A stage receives a `Feeds` handle (a folder and
the tensor names), never the arrays: nothing large is pickled across a process boundary, no
process holds more than the sample it works on, and a stage could run on another machine that
sees the folder. Polygraphy's results-on-disk are the model.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where arrays are touched: a warm run reads none (~50 ms)
    import numpy as np

Feed = dict[str, "np.ndarray"]
_INDEX = "feeds.json"
_MAP_FROM = 1 << 20


@dataclass(frozen=True)
class Feeds(Sequence):
    """A sequence of samples ({tensor name: array}) kept in `folder`; `feeds[i]` reads sample i."""

    folder: str
    names: tuple[str, ...]
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        index %= self.length
        return {name: _load(Path(self.folder) / f"{index:06d}_{j:04d}.npy") for j, name in enumerate(self.names)}

    def tensor(self, index: int, name: str) -> np.ndarray:
        """One tensor of one sample (memory-mapped), without opening the sample's others."""
        if name not in self.names:
            raise KeyError(name)
        return _load(Path(self.folder) / f"{index:06d}_{self.names.index(name):04d}.npy")

    def column(self, name: str) -> Iterator[np.ndarray]:
        """One tensor over every sample, one sample at a time."""
        if name not in self.names:
            raise KeyError(name)
        j = self.names.index(name)
        for i in range(self.length):
            yield _load(Path(self.folder) / f"{i:06d}_{j:04d}.npy")

    @staticmethod
    def open(folder: str | Path) -> Feeds:
        index = json.loads((Path(folder) / _INDEX).read_text())
        return Feeds(str(folder), tuple(index["names"]), index["count"])


def _load(path: Path) -> np.ndarray:
    """Read-only; memory-mapped from 1 MiB (pages are read as they are used and given back after),
    read whole below (a warm `bridge batch` maps hundreds of small samples: mapping cost more), and
    those small ones kept (`_Recent`): a comparison passes over each column several times."""
    import numpy as np
    try:
        st = path.stat()
        if st.st_size < _MAP_FROM:
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            array = _RECENT.get(key)
            if array is None:
                array = np.load(path, allow_pickle=False)
                array.flags.writeable = False
                if st.st_size < _KEEP_BELOW:
                    _RECENT.put(key, array)
            return array
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # an empty array cannot be mapped
        return np.load(path, allow_pickle=False)


class _Recent:
    """The small arrays read last, up to `limit` bytes in all, for every thread of the process.
    Keyed by the file's identity and stamp, so a file written again is read again; the arrays are
    read-only, so sharing one is safe. A warm `bridge batch` read each sample file 3 times."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self.lock:
            array = self.arrays.get(key)
            if array is not None:
                self.arrays.move_to_end(key)
            return array

    def put(self, key: tuple, array: np.ndarray) -> None:
        with self.lock:
            if key in self.arrays:
                return
            self.arrays[key] = array
            self.size += array.nbytes
            while self.size > self.limit:
                _, old = self.arrays.popitem(last=False)
                self.size -= old.nbytes


# Small enough never to show in a run's peak memory (a stage child reads its samples through here too).
_KEEP_BELOW = 64 << 10
_RECENT = _Recent(8 << 20)


class FeedWriter:
    """Writes samples one at a time; `close()` returns the `Feeds` handle."""

    def __init__(self, folder: str | Path, names: Sequence[str] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names = tuple(names) if names is not None else None
        self.count = 0

    def append(self, feed: Mapping[str, np.ndarray]) -> None:
        import numpy as np
        if self.names is None:
            self.names = tuple(feed)
        missing = [n for n in self.names if n not in feed]
        if missing:
            raise KeyError(f"sample {self.count} lacks {', '.join(missing)}")
        for j, name in enumerate(self.names):
            np.save(self.folder / f"{self.count:06d}_{j:04d}.npy", np.asarray(feed[name]), allow_pickle=False)
        self.count += 1

    def close(self) -> Feeds:
        names = self.names or ()
        (self.folder / _INDEX).write_text(json.dumps({"names": list(names), "count": self.count}))
        return Feeds(str(self.folder), names, self.count)


def write_feeds(folder: str | Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> Feeds:
    if isinstance(feeds, Feeds):
        return feeds
    writer = FeedWriter(folder)
    for feed in feeds:
        writer.append(feed)
    return writer.close()


@dataclass(frozen=True)
class Column:
    """One tensor across samples, re-iterable: each pass reads the samples again, one at a time."""

    feeds: Sequence[Mapping[str, np.ndarray]]
    name: str

    def __iter__(self) -> Iterator[np.ndarray]:
        if isinstance(self.feeds, Feeds):
            return self.feeds.column(self.name)
        return (f[self.name] for f in self.feeds)


def columns(feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, Column]:
    return {n: Column(feeds, n) for n in names}
