"""The output folder: what an earlier `bridge convert` owns in it, and so may replace or delete."""

from __future__ import annotations

import json

import pytest

from bridge.base.files import sha256
from bridge.publish import owned_artifacts
from tests.conftest import forge_report


def _tree(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


SUFFIXES = frozenset({".onnx", ".tflite", ".mlpackage"})


def _report(folder, artifacts, version, command="convert"):
    """The fields ownership reads, as each version records them: version 1 told convert from
    validate by the options it recorded, version 2 says `command`."""
    if version == 1:
        options = {"targets": ["onnx"]} if command == "convert" else {"report": "report.json"}
        doc = {"schema": "bridge.report/1", "environment": {"options": options}, "artifacts": artifacts}
    else:
        doc = {"schema": "bridge.report/2", "command": command, "artifacts": artifacts}
    return forge_report(folder / "report.json", doc)


@pytest.mark.parametrize("version", [1, 2])
def test_a_rerun_deletes_only_what_the_previous_convert_shipped(tmp_path, version):
    out = _tree(tmp_path / "out", {"a.onnx": b"a", "b.tflite": b"b", "changed.onnx": b"now", "notes.txt": b"n",
                                   ".h.onnx": b"h", "sub/d.onnx": b"d", "p.mlpackage/Manifest.json": b"p"})
    _tree(tmp_path, {"outside.onnx": b"o"})
    (out / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    listed = [{"path": n, "sha256": sha256(out / n)} for n in ("a.onnx", "b.tflite", "p.mlpackage", "notes.txt",
                                                               ".h.onnx", "sub/d.onnx")]
    listed += [{"path": "changed.onnx", "sha256": sha256(out / "a.onnx")},  # edited since
               {"path": "../outside.onnx", "sha256": sha256(tmp_path / "outside.onnx")},
               {"path": "link.onnx", "sha256": sha256(tmp_path / "outside.onnx")},
               {"path": "missing.onnx", "sha256": "0" * 64}, {"path": None, "sha256": None},
               {"path": ["not", "a", "name"]}, {"path": "nul\0.onnx", "sha256": "x"}]
    path = _report(out, listed, version)
    assert owned_artifacts(path, SUFFIXES) == {"a.onnx", "b.tflite", "p.mlpackage"}
    # A `bridge validate` report names the user's own files: none of them is ours.
    assert owned_artifacts(_report(out, listed, version, "validate"), SUFFIXES) == set()
    # Neither is anything in a file that does not say which report version it is.
    forge_report(path, {"environment": {"options": {"targets": ["onnx"]}}, "artifacts": listed})
    assert owned_artifacts(path, SUFFIXES) == set()
    path.write_text("{not json")
    assert owned_artifacts(path, SUFFIXES) == set()
    path.write_text(json.dumps(["a", "list"]))
    assert owned_artifacts(path, SUFFIXES) == set()
    path.unlink()
    assert owned_artifacts(path, SUFFIXES) == set()
