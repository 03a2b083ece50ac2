"""Every message inside a protobuf message, found by reflection over the fields that are set.

Security checks walk models with this, never with a hand-kept list of places: a tensor hidden in
a function's default attribute or a training graph is found like one in the main graph.
"""

from __future__ import annotations

from collections.abc import Iterator


def walk(message, *, nest: str = "", leaves: frozenset[str] = frozenset()) -> Iterator[tuple[object, int]]:
    """Yield `(message, depth)` for every message nested in `message`, where depth counts the
    enclosing messages of type `nest` (e.g. "onnx.GraphProto": subgraph levels). Messages whose
    type is in `leaves` are yielded but not entered (their content holds no message of interest)."""
    stack = [(message, 0)]
    while stack:
        msg, d = stack.pop()
        if msg.DESCRIPTOR.full_name in leaves:
            continue
        for field, value in msg.ListFields():
            for item in _messages(field, value):
                nested = d + (item.DESCRIPTOR.full_name == nest)
                yield item, nested
                stack.append((item, nested))


def _messages(field, value):
    """The messages a set field holds: itself, its elements, or a map's values."""
    if field.type != field.TYPE_MESSAGE:
        return ()
    if field.message_type.GetOptions().map_entry:
        entry = field.message_type.fields_by_name["value"]
        return value.values() if entry.type == entry.TYPE_MESSAGE else ()
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; `label` before
    if repeated is None:
        repeated = field.label == field.LABEL_REPEATED
    return value if repeated else (value,)
