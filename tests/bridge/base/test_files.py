"""Atomic placement, debris of killed runs, and which old artifacts a re-run may delete."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bridge.base.files import place, sha256, sweep, write_atomic


def _tree(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_place_replaces_a_folder_whole(tmp_path):
    """A package replaced over an older one keeps none of the old one's files."""
    old = _tree(tmp_path / "m.mlpackage", {"Manifest.json": b"old", "Data/w.bin": b"old", "Data/stale.bin": b"x"})
    new = _tree(tmp_path / "work" / "m.mlpackage", {"Manifest.json": b"new", "Data/w.bin": b"new"})
    expected = sha256(new)
    place(new, old)
    assert sha256(old) == expected
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*")) == ["Data", "Data/w.bin", "Manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage", "work"]  # nothing set aside is left


def test_place_replaces_a_file(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"old")
    (tmp_path / "new").write_bytes(b"new")
    place(tmp_path / "new", tmp_path / "a.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["a.onnx"]


def test_folder_hash_covers_names_and_bytes(tmp_path):
    a = _tree(tmp_path / "a", {"x": b"1", "y/z": b"2"})
    b = _tree(tmp_path / "b", {"x": b"1", "y/z": b"2"})
    assert sha256(a) == sha256(b)
    (b / "y" / "z").rename(b / "y" / "w")
    assert sha256(a) != sha256(b)


def test_write_atomic_leaves_no_temporary_behind(tmp_path):
    write_atomic(tmp_path / "report.json", b"{}\n")
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "report.json", "not bytes")  # fails mid-write
    assert os.listdir(tmp_path) == ["report.json"] and (tmp_path / "report.json").read_bytes() == b"{}\n"


def test_sweep_removes_only_the_debris_of_dead_runs(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    _tree(tmp_path, {f".bridge.work-{dead}-abc/m.onnx": b"1", f".m.mlpackage.old-{dead}-def/Manifest.json": b"2",
                     f".report.json.tmp-{dead}-ghi": b"3", f".bridge.work-{alive}-jkl/m.onnx": b"4",
                     ".bridge.work-notapid-x/f": b"5", ".hidden": b"6", "m.onnx": b"7"})
    assert sweep(tmp_path) == sorted([f".bridge.work-{dead}-abc", f".m.mlpackage.old-{dead}-def",
                                      f".report.json.tmp-{dead}-ghi"])
    assert sorted(os.listdir(tmp_path)) == sorted([f".bridge.work-{alive}-jkl", ".bridge.work-notapid-x",
                                                   ".hidden", "m.onnx"])


