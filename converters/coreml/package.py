"""The .mlpackage folder itself, as coremltools leaves it after `save`.

coremltools names the package's items (the model spec, the weights folder) with fresh random
UUIDs in Manifest.json, so two saves of the same model differ. `stable_identifiers` replaces them
with name-based UUIDs derived from the package's content: the same model gives byte-identical
packages, and a different one different identifiers.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from bridge.base.files import sha256

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "bridge-convert:mlpackage")


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
