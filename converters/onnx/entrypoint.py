"""Python entrypoints: `file.py:callable` or `package.module:callable`, code the user names."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from bridge.base.errors import UsageError
from bridge.base.sources import SourceRef


def load_entrypoint(ref: SourceRef) -> tuple[object, object | None]:
    """Call the entrypoint; returns `(model, example_inputs or None)`."""
    if ref.path is not None:
        # The file's folder goes on sys.path so it can import its siblings, like `python file.py`.
        sys.path.insert(0, str(ref.path.parent))
        spec = importlib.util.spec_from_file_location(f"bridge_entry_{ref.path.stem}", ref.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(ref.module)
        except ModuleNotFoundError as e:
            raise UsageError(f"{ref.text}: cannot import {ref.module} ({e})") from None
    obj = module
    for part in ref.attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{ref.text}: {ref.module or ref.path.name} has no attribute {ref.attr}")
        obj = getattr(obj, part)
    result = obj() if callable(obj) and not _is_model(obj) else obj
    if isinstance(result, tuple) and len(result) == 2 and _is_model(result[0]):
        return result[0], result[1]
    if not _is_model(result):
        raise UsageError(f"{ref.text} returned {type(result).__name__}; expected a torch.nn.Module, "
                         "a keras.Model, or a tuple (model, example_inputs)")
    return result, None


def _is_model(obj: object) -> bool:
    names = {f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(obj).__mro__}
    return bool(names & {"torch.Module", "keras.Model", "keras.Layer", "tf_keras.Model"}) or any(
        n.startswith("keras.") and n.endswith(".Model") for n in names)
