"""Read what a .tflite file contains without running it: its operators and any Flex ops."""

from __future__ import annotations

from collections import Counter


def op_counts(buf: bytes) -> Counter:
    """Operator name -> count over every subgraph. Flex (Select TF) ops appear as `Flex<Op>`."""
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.Model.GetRootAsModel(buf, 0)
    builtin_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        custom = oc.CustomCode()
        if custom:
            codes.append(custom.decode())
        else:
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            codes.append(builtin_names.get(code, str(code)))
    counts: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            counts[codes[sub.Operators(o).OpcodeIndex()]] += 1
    return counts


def flex_ops(counts: Counter) -> list[str]:
    return sorted(name[4:] for name in counts if name.startswith("Flex"))
