"""The .mlpackage folder itself, as coremltools leaves it after `save`.

Two saves of the same model differ in two ways, both undone here so the same model gives
byte-identical packages:
- coremltools names the package's items (the model spec, the weights folder) with fresh random
  UUIDs in Manifest.json. `stable_identifiers` replaces them with name-based UUIDs derived from the
  package's content (a different model gets different identifiers).
- protobuf 7's upb backend writes map fields (op attributes, metadata) in an order that varies
  from process to process, and coremltools serializes the spec without asking for a fixed one.
  `deterministic_spec` writes it again with protobuf's deterministic order (same message, same
  length: only the order of map entries changes).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from bridge.base.files import sha256
from bridge.base.lazy import require

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "bridge-convert:mlpackage")
SPEC = "com.apple.CoreML/model.mlmodel"


def deterministic_spec(package: Path) -> None:
    """Rewrite the package's model spec with map entries in protobuf's deterministic order."""
    model_pb2 = require("coremltools.proto.Model_pb2")
    path = Path(package) / "Data" / SPEC
    spec = model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    path.write_bytes(spec.SerializeToString(deterministic=True))


def stable_identifiers(package: Path) -> None:
    """Rewrite Manifest.json with each item's id a UUID5 of the Data folder's hash and the item's path."""
    manifest_path = Path(package) / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    digest = sha256(Path(package) / "Data")
    entries = manifest["itemInfoEntries"]
    ids = {old: str(uuid.uuid5(NAMESPACE, f"{digest}/{item['path']}")) for old, item in entries.items()}
    manifest["itemInfoEntries"] = {ids[old]: item for old, item in entries.items()}
    manifest["rootModelIdentifier"] = ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
