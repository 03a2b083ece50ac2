"""The reference executor on files made by coremltools' own PyTorch frontend, not by our converter:
a small CNN and a transformer-style block at fp32 and fp16, the same models with perturbed weights
(which must fail parity), a weight edited inside weight.bin, compressed weights, and speed."""

from __future__ import annotations

import copy
import io
import shutil
import time

import numpy as np
import pytest

from tests.validators.coreml_reference.helpers import rel_l2, run_file, snr_db

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")
nn = torch.nn

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
              pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = nn.functional.avg_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


class AttentionBlock(nn.Module):
    """Pre-norm attention and MLP written out (nn.TransformerEncoder does not trace into coremltools)."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        h = self.ln1(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.o(attn @ v)
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


SHAPES = {"cnn": (2, 3, 32, 32), "block": (2, 8, 32)}


def build(name: str):
    torch.manual_seed(0)
    model = (SmallCNN() if name == "cnn" else AttentionBlock()).eval()
    for bn in model.modules():  # non-trivial BN statistics, so folding them into conv is exercised
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
    return model


def perturb(model):
    """Every weight off by ~10%: a model that must not pass parity against the original."""
    bad = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bad.parameters():
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return bad


def convert(model, shape, precision: str, target=None):
    example = torch.randn(shape)
    traced = torch.jit.trace(model, example)
    return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], outputs=[ct.TensorType(name="y")],
                      convert_to="mlprogram", minimum_deployment_target=target or ct.target.iOS16,
                      compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Models, inputs, torch outputs and the converted packages (saved once, read back by path)."""
    out = tmp_path_factory.mktemp("torch_models")
    rng = np.random.default_rng(0)
    data = {"out": out, "x": {}, "torch": {}, "paths": {}, "models": {}}
    for name, shape in SHAPES.items():
        model = build(name)
        x = rng.standard_normal(shape).astype(np.float32)
        data["models"][name], data["x"][name] = model, x
        with torch.no_grad():
            data["torch"][name] = model(torch.from_numpy(x)).numpy()
        for precision in ("fp32", "fp16"):
            for tag, m in (("", model), ("_perturbed", perturb(model))):
                path = out / f"{name}_{precision}{tag}.mlpackage"
                convert(m, shape, precision).save(str(path))
                data["paths"][f"{name}_{precision}{tag}"] = str(path)
    return data


def run(setup, key: str, model: str) -> np.ndarray:
    return run_file(setup["paths"][key], {"x": setup["x"][model]})["y"]


@pytest.mark.parametrize("model", list(SHAPES))
def test_fp32_matches_torch(setup, model):
    err = rel_l2(run(setup, f"{model}_fp32", model), setup["torch"][model])
    print(f"{model} fp32 rel L2 vs torch: {err:.2e}")
    assert err <= 1e-5


@pytest.mark.parametrize("model", list(SHAPES))
def test_fp16_matches_torch(setup, model):
    snr = snr_db(run(setup, f"{model}_fp16", model), setup["torch"][model])
    print(f"{model} fp16 SNR vs torch: {snr:.1f} dB")
    assert snr >= 30


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", list(SHAPES))
def test_perturbed_weights_fail(setup, model, precision):
    err = rel_l2(run(setup, f"{model}_{precision}_perturbed", model), setup["torch"][model])
    print(f"{model} {precision} perturbed rel L2 vs torch: {err:.2e}")
    assert err > 1e-2


def test_flexible_sequence_length(setup, tmp_path):
    """A RangeDim input: symbolic dims in the program, real sizes at run time."""
    model = setup["models"]["block"]
    traced = torch.jit.trace(model, torch.randn(SHAPES["block"]))
    flexible = ct.Shape((2, ct.RangeDim(1, 64), 32))
    path = str(tmp_path / "flexible.mlpackage")
    ct.convert(traced, inputs=[ct.TensorType(name="x", shape=flexible)], outputs=[ct.TensorType(name="y")],
               convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
               compute_precision=ct.precision.FLOAT32).save(path)
    for length in (1, 5, 17):
        x = np.random.default_rng(length).standard_normal((2, length, 32)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert rel_l2(run_file(path, {"x": x})["y"], want) <= 1e-5


def test_weights_are_read_from_the_file(setup, tmp_path):
    """Negate the classifier's weights inside weight.bin: the executor must follow the file (and
    then match a torch model with the same edit)."""
    edited = tmp_path / "edited.mlpackage"
    shutil.copytree(setup["paths"]["cnn_fp32"], edited)
    blob = next(edited.rglob("weight.bin"))
    model = copy.deepcopy(setup["models"]["cnn"])
    fc = model.fc.weight.detach().numpy().astype(np.float32)
    raw = blob.read_bytes()
    assert raw.count(fc.tobytes()) == 1, "the fc weight should be stored verbatim exactly once"
    blob.write_bytes(raw.replace(fc.tobytes(), (-fc).tobytes()))
    with torch.no_grad():
        model.fc.weight.neg_()
        want = model(torch.from_numpy(setup["x"]["cnn"])).numpy()
    got = run_file(str(edited), {"x": setup["x"]["cnn"]})["y"]
    assert rel_l2(got, setup["torch"]["cnn"]) > 0.5
    assert rel_l2(got, want) <= 1e-5


def compressions():
    from coremltools.optimize import coreml as opt

    def linear(dtype="int8", granularity="per_channel", block_size=32):
        config = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=dtype, granularity=granularity,
                                             block_size=block_size)
        return lambda m: opt.linear_quantize_weights(m, opt.OptimizationConfig(global_config=config))

    def palettize(nbits=4, **grouping):
        return lambda m: opt.palettize_weights(m, opt.OptimizationConfig(
            global_config=opt.OpPalettizerConfig(mode="kmeans", nbits=nbits, **grouping)))

    def prune():
        return lambda m: opt.prune_weights(m, opt.OptimizationConfig(
            global_config=opt.OpMagnitudePrunerConfig(target_sparsity=0.5)))

    # (target, compression, min SNR vs torch or None when only decompression is checked)
    return {
        "int8_ios16": ("iOS16", linear(), 20.0),
        "palettize4_ios16": ("iOS16", palettize(), 15.0),
        "int8_ios18": ("iOS18", linear(), 20.0),
        "int4_block_ios18": ("iOS18", linear("int4", "per_block"), None),
        "palettize4_ios18": ("iOS18", palettize(), 15.0),
        # the palettize-4 mode from iOS18: one table per 8 output channels (compress.GROUP_SIZE)
        "palettize4_grouped_ios18": ("iOS18", palettize(granularity="per_grouped_channel", group_size=8), 15.0),
        "sparse_ios18": ("iOS18", prune(), None),
    }


@pytest.fixture(scope="module")
def compressed(setup):
    """The CNN at fp16, compressed each way, plus coremltools' own decompression of each file."""
    from coremltools.optimize.coreml import decompress_weights

    made = {}
    model = setup["models"]["cnn"]
    base = {t: convert(model, SHAPES["cnn"], "fp16", getattr(ct.target, t)) for t in ("iOS16", "iOS18")}
    for name, (target, compress, _) in compressions().items():
        small = compress(base[target])
        path, plain = setup["out"] / f"cnn_{name}.mlpackage", setup["out"] / f"cnn_{name}_decompressed.mlpackage"
        small.save(str(path))
        decompress_weights(small).save(str(plain))
        made[name] = (str(path), str(plain))
    return made


@pytest.mark.parametrize("name", list(compressions()))
def test_compressed_weights(setup, compressed, name):
    from bridge.validators.runners.coreml_reference import ReferenceRunner

    path, plain = compressed[name]
    small, dense = ReferenceRunner(), ReferenceRunner()
    small.load(path)
    dense.load(plain)
    constexprs = [op for op in small.package.program.functions["main"].operations if op.op_type.startswith("constexpr")]
    ops = sorted({op.op_type for op in constexprs})
    assert ops, "the compression should have left decompression ops in the file"
    if "grouped" in name:  # iOS18 tables: shape (groups along output channels, 1..., entries, 1)
        assert any(op.lut.val.shape[0] > 1 for op in constexprs if op.op_type == "constexpr_lut_to_dense")
    for op in constexprs:  # decompression is exact: each weight equals coremltools' decompress_weights
        var = op.outputs[0].name
        assert np.array_equal(small.executor.constants[var], dense.executor.constants[var]), var
    x = {"x": setup["x"]["cnn"]}
    got = small.infer(x)["y"]
    assert np.array_equal(got, dense.infer(x)["y"])
    snr, floor = snr_db(got, setup["torch"]["cnn"]), compressions()[name][2]
    print(f"{name}: {ops}, SNR vs torch {snr:.1f} dB")
    if floor is not None:
        assert snr >= floor


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_speed_within_20x_of_onnxruntime(setup, precision):
    """One thread each (onnxruntime's intra-op pool, numpy's BLAS); best of 30 runs each, so other
    load on the machine evens out. onnxruntime runs the fp32 ONNX model either way."""
    ort = pytest.importorskip("onnxruntime")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from bridge.validators.runners.coreml_reference import ReferenceRunner

    buf = io.BytesIO()
    x = setup["x"]["cnn"]
    torch.onnx.export(setup["models"]["cnn"], (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"],
                      output_names=["y"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    runner = ReferenceRunner()
    runner.load(setup["paths"][f"cnn_{precision}"])

    def best(fn) -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with threadpoolctl.threadpool_limits(1):
        t_ort = best(lambda: session.run(["y"], {"x": x}))
        t_ref = best(lambda: runner.infer({"x": x}))
    print(f"small CNN {precision}: reference {t_ref * 1e3:.2f} ms, onnxruntime {t_ort * 1e3:.3f} ms, "
          f"ratio {t_ref / t_ort:.1f}x")
    assert t_ref <= 20 * t_ort
