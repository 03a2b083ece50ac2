"""Package item ids follow the package's content, so the same model saves to the same bytes."""

from __future__ import annotations

import json
import uuid

from bridge.converters.coreml.package import stable_identifiers

# As coremltools 9 writes it, with random (version 4) ids.
MANIFEST = {
    "fileFormatVersion": "1.0.0",
    "itemInfoEntries": {
        "71e673c3-5269-4a68-81bf-44d39c8ee0fa": {"author": "com.apple.CoreML", "description": "CoreML Model "
                                                 "Specification", "name": "model.mlmodel",
                                                 "path": "com.apple.CoreML/model.mlmodel"},
        "b6c36f9b-7e87-488c-8232-f6b159aabe71": {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
                                                 "name": "weights", "path": "com.apple.CoreML/weights"},
    },
    "rootModelIdentifier": "71e673c3-5269-4a68-81bf-44d39c8ee0fa",
}


def _package(path, weights: bytes, manifest=MANIFEST):
    data = path / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    (data / "model.mlmodel").write_bytes(b"spec")
    (data / "weights" / "weight.bin").write_bytes(weights)
    (path / "Manifest.json").write_text(json.dumps(manifest, indent=4))
    return path


def test_ids_follow_the_content(tmp_path):
    a = _package(tmp_path / "a.mlpackage", b"w1")
    other = {**MANIFEST, "itemInfoEntries": {str(uuid.uuid4()): v for v in MANIFEST["itemInfoEntries"].values()}}
    other["rootModelIdentifier"] = next(iter(other["itemInfoEntries"]))
    b = _package(tmp_path / "b.mlpackage", b"w1", other)
    c = _package(tmp_path / "c.mlpackage", b"w2")
    for p in (a, b, c):
        stable_identifiers(p)
    ma, mb, mc = (json.loads((p / "Manifest.json").read_text()) for p in (a, b, c))
    assert (a / "Manifest.json").read_bytes() == (b / "Manifest.json").read_bytes()
    assert set(ma["itemInfoEntries"]).isdisjoint(mc["itemInfoEntries"])  # other weights, other ids
    for m in (ma, mc):
        assert all(uuid.UUID(k).version == 5 for k in m["itemInfoEntries"])
        assert m["itemInfoEntries"][m["rootModelIdentifier"]]["path"] == "com.apple.CoreML/model.mlmodel"
        assert m["fileFormatVersion"] == "1.0.0" and len(m["itemInfoEntries"]) == 2


def test_stable_twice(tmp_path):
    a = _package(tmp_path / "a.mlpackage", b"w")
    stable_identifiers(a)
    first = (a / "Manifest.json").read_bytes()
    stable_identifiers(a)
    assert (a / "Manifest.json").read_bytes() == first


def test_spec_map_entries_in_one_order_whatever_order_they_were_set_in(tmp_path):
    """protobuf 7 (upb) writes a map in an order that can vary from process to process; the spec is
    written again in protobuf's deterministic order, so packages of the same model match byte for byte."""
    from coremltools.proto import Model_pb2

    from bridge.converters.coreml.package import deterministic_spec

    keys = [f"key{i}" for i in range(40)]
    texts = []
    for name, order in (("a", keys), ("b", keys[::-1])):
        spec = Model_pb2.Model(specificationVersion=7)
        for k in order:
            spec.description.metadata.userDefined[k] = k.upper()
        package = _package(tmp_path / f"{name}.mlpackage", b"w")
        (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec.SerializeToString())
        deterministic_spec(package)
        texts.append((package / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    assert texts[0] == texts[1]
    again = Model_pb2.Model()
    again.ParseFromString(texts[0])
    assert dict(again.description.metadata.userDefined) == {k: k.upper() for k in keys}
    assert again.specificationVersion == 7
