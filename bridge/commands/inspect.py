"""`bridge inspect SOURCE|ARTIFACT`"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from bridge.commands.common import say, stdout


def command(
    target: Annotated[str, typer.Argument(help="A source (file.py:callable, .onnx, .keras, ...) or an artifact.")],
    input: Annotated[list[str], typer.Option("--input", help=escape("NAME:D0,D1,...[:DTYPE]."))] = None,
    trust_code: Annotated[bool, typer.Option(help="Load files that can run embedded code.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Inputs, outputs, op counts, and for ONNX which ops each lane supports."""
    from bridge.inspection import inspect

    info = inspect(target, trust_code=trust_code, inputs=tuple(input or ()))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    say((target, "bold"), f" ({info.get('format')})", out=stdout)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            px = t.get("pixels")
            units = f" of 0-255 pixels, normalized by mean {px['mean']} std {px['std']}" if px else ""
            say(f"  {kind[:-1]:6} {t['name']}: {t['shape']} {t['dtype']}{units}", out=stdout)
    ops = info.get("ops", {})
    say(f"  ops    {sum(ops.values())} in {len(ops)} types: " + ", ".join(f"{k} x{v}" for k, v in ops.items()),
        out=stdout)
    for lane, s in info.get("lanes", {}).items():
        why = s.get("reasons", {})
        refused = [f"{op} ({why[op]})" if op in why else op for op in s["unsupported_ops"]]
        verdict = ("all ops supported", "green") if s["supported"] else \
            (s.get("reason") or f"unsupported: {', '.join(refused)}", "red")
        say(f"  lane   {lane}: ", verdict, out=stdout)
