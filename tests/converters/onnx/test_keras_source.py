"""Keras and TensorFlow sources -> hub ONNX: real conversions, checked with onnxruntime."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from bridge.base.errors import ConversionError, UsageError
from bridge.base.lane import ExportRequest
from bridge.base.sources import Format, SourceRef, sniff
from bridge.base.tensors import InputOverride
from bridge.converters.onnx.export import export_source

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TOLERANCE = 1e-5  # relative L2 error, float32 graph vs float32 graph


def _export(tmp_path, source: str, **kwargs):
    return export_source(ExportRequest(source=sniff(source), hub_path=str(tmp_path / "hub.onnx"), **kwargs))


def _hub_errors(result) -> list[dict[str, float]]:
    """Run the hub ONNX on every parity feed; relative L2 error per output name."""
    session = ort.InferenceSession(result.hub_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    errors = []
    for feed, expected in zip(result.feeds, result.source_outputs, strict=True):
        got = dict(zip(names, session.run(names, feed), strict=True))
        errors.append({k: float(np.linalg.norm(got[k] - v) / max(np.linalg.norm(v), 1e-12))
                       for k, v in expected.items()})
    return errors


def _assert_matches(result) -> None:
    errors = _hub_errors(result)
    worst = {k: max(e[k] for e in errors) for k in errors[0]}
    assert all(v <= TOLERANCE for v in worst.values()), worst


def _hub_inputs(result) -> dict[str, list]:
    model = onnx.load(result.hub_path)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}


def _randomize_batchnorm(model) -> None:
    """Fresh BatchNorm layers are the identity; give them statistics worth converting."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


def _cnn():
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32"))
    image = keras.Input((32, 32, 3), name="image")
    x = norm(image)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, keras.layers.Dense(5, name="logits")(x))
    _randomize_batchnorm(model)
    return model


def test_keras_cnn_matches_and_keeps_nhwc(tmp_path):
    path = tmp_path / "cnn.keras"
    _cnn().save(path)
    result = _export(tmp_path, str(path))
    assert result.framework == "keras"
    assert result.route[:2] == ("keras", "tf2onnx")
    assert result.opset == 17
    assert [(s.name, s.shape) for s in result.inputs] == [("image", (1, 32, 32, 3))]
    assert _hub_inputs(result) == {"image": [1, 32, 32, 3]}  # Normalization stats are constants
    assert [(s.name, s.shape) for s in result.outputs] == [("logits", (1, 5))]
    _assert_matches(result)


def _two_heads():
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="tanh")(x)
    zeta = keras.layers.Dense(4, name="zeta")(h)
    alpha = keras.layers.Dense(4, name="alpha")(h)
    return keras.Model(x, [zeta, alpha])


def test_same_shaped_outputs_keep_names_order_and_values(tmp_path):
    model = _two_heads()
    path = tmp_path / "heads.keras"
    model.save(path)
    result = _export(tmp_path, str(path))
    assert [s.name for s in result.outputs] == ["zeta", "alpha"]
    assert [o.name for o in onnx.load(result.hub_path).graph.output] == ["zeta", "alpha"]
    feed = result.feeds[0]
    zeta, alpha = (np.asarray(t) for t in model(feed["features"]))
    np.testing.assert_allclose(result.source_outputs[0]["zeta"], zeta, rtol=1e-6)
    np.testing.assert_allclose(result.source_outputs[0]["alpha"], alpha, rtol=1e-6)
    assert not np.allclose(zeta, alpha)
    _assert_matches(result)


def _lambda_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    y = keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(x)
    return keras.Model(x, keras.layers.Dense(3, name="out")(y))


@pytest.mark.parametrize("filename", ["lambda.keras", "plain.h5"])
def test_unsafe_files_need_trust_code(tmp_path, filename):
    model = _lambda_model() if filename.startswith("lambda") else _two_heads()
    path = tmp_path / filename
    model.save(path)
    with pytest.raises(UsageError, match="--trust-code") as err:
        _export(tmp_path, str(path))
    assert filename in str(err.value)
    assert "\n" not in str(err.value)
    result = _export(tmp_path, str(path), trust_code=True)
    _assert_matches(result)


class _Scaler(tf.Module):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(5, 3)).astype("float32"))
        self.b = tf.Variable(rng.normal(size=(3,)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, 5), tf.float32, name="x")])
    def __call__(self, x):
        y = tf.matmul(x, self.w) + self.b
        return {"prob": tf.nn.softmax(y), "score": tf.reduce_sum(y, axis=-1)}


def test_saved_model_needs_trust_and_matches(tmp_path):
    folder = tmp_path / "saved"
    module = _Scaler()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    with pytest.raises(UsageError, match="--trust-code"):
        _export(tmp_path, str(folder))
    result = _export(tmp_path, str(folder), trust_code=True)
    assert result.framework == "tensorflow"
    assert [(s.name, s.shape) for s in result.inputs] == [("x", (1, 5))]
    assert sorted(s.name for s in result.outputs) == ["prob", "score"]
    _assert_matches(result)


def test_dynamic_batch_stays_symbolic(tmp_path):
    path = tmp_path / "heads.keras"
    _two_heads().save(path)
    result = _export(tmp_path, str(path), dynamic=(("features", 0),))
    assert result.inputs[0].dynamic == (0,)
    batch = _hub_inputs(result)["features"][0]
    assert isinstance(batch, str) and batch
    assert {f["features"].shape[0] for f in result.feeds} == {1, 3}
    _assert_matches(result)


ENTRYPOINT = """
    import keras
    import numpy as np

    def make():
        keras.utils.set_random_seed(0)
        a = keras.Input((3,), name="a")
        b = keras.Input((3,), dtype="int32", name="b")
        emb = keras.layers.Flatten()(keras.layers.Embedding(7, 2)(b))
        y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([a, emb]))
        example = {"a": np.ones((2, 3), "float32"), "b": np.array([[0, 1, 6], [2, 3, 4]], "int32")}
        return keras.Model([a, b], y), example
"""


def test_python_entrypoint_with_dict_example(tmp_path):
    py = tmp_path / "model.py"
    py.write_text(textwrap.dedent(ENTRYPOINT))
    result = _export(tmp_path, f"{py}:make")
    assert [(s.name, s.shape, s.dtype) for s in result.inputs] == [
        ("a", (2, 3), "float32"), ("b", (2, 3), "int32")]
    assert result.inputs[1].int_range == (0, 7)  # synthetic ids stay inside the vocabulary
    assert [s.name for s in result.outputs] == ["y"]
    _assert_matches(result)


class TwoHeads(keras.Model):
    """Subclassed: declares no inputs, returns a dict whose key order is not sorted.

    No leading underscore: Keras names the model after its class, and TensorFlow refuses a name
    scope starting with one."""

    def __init__(self):
        super().__init__()
        self.first, self.second = keras.layers.Dense(2), keras.layers.Dense(2)

    def call(self, x):
        return {"second": self.second(x), "first": self.first(x)}


def test_subclassed_model_takes_inputs_from_overrides(tmp_path):
    from bridge.converters.onnx.keras_source import export_model

    keras.utils.set_random_seed(0)
    source = SourceRef("model.py:make", Format.PYTHON)
    req = ExportRequest(source=source, hub_path=str(tmp_path / "hub.onnx"))
    with pytest.raises(UsageError, match="--input"):
        export_model(TwoHeads(), None, req)
    req = ExportRequest(source=source, hub_path=str(tmp_path / "hub.onnx"),
                        overrides=(InputOverride("pixels", (2, 6), None),))
    result = export_model(TwoHeads(), None, req)
    assert [(s.name, s.shape) for s in result.inputs] == [("pixels", (2, 6))]
    assert [s.name for s in result.outputs] == ["second", "first"]
    _assert_matches(result)


class _LogGamma(keras.layers.Layer):
    def call(self, x):
        return tf.math.lgamma(tf.abs(x) + 1.0)


def test_unsupported_op_is_one_line_conversion_error(tmp_path):
    from bridge.converters.onnx.keras_source import export_model

    x = keras.Input((4,), name="x")
    model = keras.Model(x, _LogGamma()(x))
    req = ExportRequest(source=SourceRef("model.py:make", Format.PYTHON), hub_path=str(tmp_path / "hub.onnx"))
    with pytest.raises(ConversionError, match="Lgamma") as err:
        export_model(model, None, req)
    assert err.value.stage == "export"
    assert err.value.op_type == "Lgamma"
    assert "\n" not in str(err.value)


def test_recurrent_layer_converts_through_a_loop(tmp_path):
    from bridge.converters.onnx.keras_source import export_model

    keras.utils.set_random_seed(0)
    x = keras.Input((10, 3), name="seq")
    model = keras.Model(x, keras.layers.LSTM(5, name="state")(x))
    req = ExportRequest(source=SourceRef("model.py:make", Format.PYTHON), hub_path=str(tmp_path / "hub.onnx"))
    _assert_matches(export_model(model, None, req))
