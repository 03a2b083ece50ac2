"""ONNX files carry no example inputs: their integer inputs are bounded by what the graph does with them."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from bridge.converters.onnx.onnx_source import int_ranges


def _text_model(vocab: int = 30522):
    """The input side of a BERT-like export: ids through a Cast into the word embedding, segment
    ids into a 2-row table, an attention mask used in arithmetic, and a plain integer input."""
    nodes = [
        h.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        h.make_node("Unsqueeze", ["ids32", "axes"], ["ids3"]),
        h.make_node("Gather", ["words", "ids3"], ["w"]),
        h.make_node("Gather", ["segments", "token_type_ids"], ["t"]),
        h.make_node("Gather", ["positions", "input_ids"], ["p"]),  # a second, smaller table bounds it more
        h.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        h.make_node("Cast", ["steps"], ["s"], to=TensorProto.FLOAT),
    ]
    inputs = [h.make_tensor_value_info(n, TensorProto.INT64, [1, 16])
              for n in ("input_ids", "token_type_ids", "attention_mask", "steps")]
    outputs = [h.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("w", "t", "p", "m", "s")]
    inits = [nh.from_array(np.zeros((vocab, 4), np.float32), "words"),
             nh.from_array(np.zeros((2, 4), np.float32), "segments"),
             nh.from_array(np.zeros((512, 4), np.float32), "positions"),
             nh.from_array(np.array([2], np.int64), "axes")]
    return h.make_model(h.make_graph(nodes, "text", inputs, outputs, inits))


def test_ids_stay_in_their_table_and_masks_attend_everywhere():
    assert int_ranges(_text_model()) == {"input_ids": (0, 512), "token_type_ids": (0, 2), "attention_mask": (1, 2)}


def test_a_gather_along_another_axis_bounds_nothing():
    model = _text_model()
    gather = next(n for n in model.graph.node if n.output[0] == "t")
    gather.attribute.append(h.make_attribute("axis", 1))
    assert "token_type_ids" not in int_ranges(model)
