"""The hostile-input corpus: one `Case` per mechanism, in eight classes (see `harness.CLASSES`).

Every case builds its own files in its tmp folder; `harness.run_case` runs and judges it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np

from tests.conftest import forge_report
from tests.e2e.hostile import models as m
from tests.e2e.hostile.harness import BRIDGE, Case, Run, foreground

CASES: list[Case] = []


def case(cls: int, mechanism: str):
    def register(build):
        CASES.append(Case(build.__name__, cls, mechanism, build))
        return build
    return register


def convert(src, *args) -> list[str]:
    return ["convert", str(src), "--target", "onnx", "--out", "out", *map(str, args)]


def tiny(tmp: Path, name: str = "m.onnx", **kw) -> Path:
    return m.tiny(tmp / "model" / name, **kw)


# ----------------------------------------------------------------------------- 1. outside files

def _secret_refused(argv, *needles) -> Run:
    return Run(argv, 2, ("external data", *needles))


@case(1, "function default attribute (FunctionProto.attribute_proto) pointing at an absolute path, convert")
def ext_function_default_absolute(tmp):
    return _secret_refused(convert(m.function_default(tmp / "model" / "m.onnx", str(tmp / "secret"))),
                           "absolute path")


@case(1, "function default attribute pointing at ../secret, validate (as the artifact)")
def ext_function_default_validate(tmp):
    src = tiny(tmp, "src.onnx")
    art = m.function_default(tmp / "model" / "art.onnx", "../secret")
    return _secret_refused(["validate", src, art], "leaves the model's folder")


@case(1, "function default attribute pointing at ../secret, inspect")
def ext_function_default_inspect(tmp):
    return _secret_refused(["inspect", m.function_default(tmp / "model" / "m.onnx", "../secret")], "'..'")


@case(1, "sparse initializer whose values tensor is external")
def ext_sparse_initializer(tmp):
    onnx, TensorProto, helper, numpy_helper = m._onnx()
    values = m.external_tensor("v", "../secret", shape=(2,))
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "i")
    sparse = helper.make_sparse_tensor(values, indices, [4])
    model = m.model([helper.make_node("Identity", ["x"], ["y"])], [m.vi("x", [1, 4])], [m.vi("y", [1, 4])],
                    sparse_initializer=[sparse])
    return _secret_refused(convert(m.save(model, tmp / "model" / "m.onnx")), "'..'")


@case(1, "Constant inside a Loop body (a subgraph attribute) pointing outside")
def ext_loop_body_constant(tmp):
    onnx, TensorProto, helper, numpy_helper = m._onnx()
    const = helper.make_node("Constant", [], ["c"], value=m.external_tensor("c", str(tmp / "secret")))
    body = helper.make_graph([const, helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["acc_in", "c"], ["acc_out"])], "body",
                             [m.vi("i", [], TensorProto.INT64), m.vi("cond_in", [], TensorProto.BOOL),
                              m.vi("acc_in", [1, 4])],
                             [m.vi("cond_out", [], TensorProto.BOOL), m.vi("acc_out", [1, 4])])
    trip = numpy_helper.from_array(np.array(2, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = m.model([helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], [m.vi("x", [1, 4])],
                    [m.vi("y", [1, 4])], [trip, cond])
    return _secret_refused(convert(m.save(model, tmp / "model" / "m.onnx")), "absolute path")


@case(1, "tensor in a training_info initialization graph")
def ext_training_info(tmp):
    onnx, TensorProto, helper, _ = m._onnx()
    path = tiny(tmp)
    model = onnx.load(str(path))
    info = model.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[
        m.external_tensor("leak", "../secret")]))
    return _secret_refused(convert(m.save(model, path)), "'..'")


@case(1, "repeated TENSORS attribute of a custom-domain node")
def ext_attribute_tensor_list(tmp):
    onnx, TensorProto, helper, _ = m._onnx()
    node = helper.make_node("Identity", ["x"], ["y"])
    attr = onnx.AttributeProto(name="extra", type=onnx.AttributeProto.TENSORS)
    attr.tensors.append(m.external_tensor("a", "../secret"))
    node.attribute.append(attr)
    model = m.model([node], [m.vi("x", [1, 4])], [m.vi("y", [1, 4])])
    return _secret_refused(convert(m.save(model, tmp / "model" / "m.onnx")), "'..'")


@case(1, "location is a symlink in the model folder to the secret")
def ext_symlink_file(tmp):
    (tmp / "model").mkdir()
    os.symlink(tmp / "secret", tmp / "model" / "w.bin")
    return _secret_refused(convert(m.with_external_weight(tmp / "model" / "m.onnx", "w.bin")), "is a symlink")


@case(1, "location goes through a symlinked folder")
def ext_symlink_folder(tmp):
    (tmp / "model").mkdir()
    os.symlink(tmp, tmp / "model" / "data")
    return _secret_refused(convert(m.with_external_weight(tmp / "model" / "m.onnx", "data/secret")),
                           "goes through a symlink")


@case(1, "location is the FIFO itself, placed in the model folder")
def ext_fifo_in_folder(tmp):
    (tmp / "model").mkdir()
    os.link(tmp / "secret", tmp / "model" / "w.bin")  # a second name for the same FIFO
    return _secret_refused(convert(m.with_external_weight(tmp / "model" / "m.onnx", "w.bin")),
                           "not a regular file")


@case(1, "Windows separators: ..\\secret")
def ext_backslash(tmp):
    return _secret_refused(convert(m.with_external_weight(tmp / "model" / "m.onnx", "..\\secret")), "'..'")


@case(1, "dot segments hiding the climb: ./sub/../../secret")
def ext_dot_segments(tmp):
    (tmp / "model" / "sub").mkdir(parents=True)
    return _secret_refused(convert(m.with_external_weight(tmp / "model" / "m.onnx", "./sub/../../secret")), "'..'")


@case(1, "an unknown external_data key (a loader extension)")
def ext_unknown_key(tmp):
    onnx, TensorProto, helper, _ = m._onnx()
    (tmp / "model").mkdir()
    (tmp / "model" / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    t = m.external_tensor("w", "w.bin")
    extra = t.external_data.add()
    extra.key, extra.value = "basepath", str(tmp)
    model = m.model([helper.make_node("Mul", ["x", "w"], ["y"])], [m.vi("x", [1, 4])], [m.vi("y", [1, 4])], [t])
    return _secret_refused(convert(m.save(model, tmp / "model" / "m.onnx")), "unknown or repeated keys")


@case(1, "offset past the end of a real file beside the model")
def ext_offset_past_end(tmp):
    onnx, TensorProto, helper, _ = m._onnx()
    (tmp / "model").mkdir()
    (tmp / "model" / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    model = m.model([helper.make_node("Mul", ["x", "w"], ["y"])], [m.vi("x", [1, 4])], [m.vi("y", [1, 4])],
                    [m.external_tensor("w", "w.bin", offset=4096)])
    return _secret_refused(convert(m.save(model, tmp / "model" / "m.onnx")), "past the end")


@case(1, "calibration folder holding a symlink to the secret named like data")
def ext_calibration_symlink(tmp):
    (tmp / "cal").mkdir()
    os.symlink(tmp / "secret", tmp / "cal" / "a.npy")
    return Run(convert(tiny(tmp), "--calibration", "cal"), 2, ("not a regular file",))


def _package(tmp: Path) -> tuple[Path, Path]:
    """A source (y = x @ w, ONNX) and a Core ML package of the same interface, to tamper with."""
    import shutil

    _, _, helper, numpy_helper = m._onnx()
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    src = m.save(m.model([helper.make_node("MatMul", ["x", "w"], ["y"])], [m.vi("x", [1, 64])],
                         [m.vi("y", [1, 64])], [w]), tmp / "src.onnx")
    package = tmp / "model" / "m.mlpackage"
    package.parent.mkdir(exist_ok=True)
    shutil.copytree(_PACKAGE.path(), package)
    return src, package


class _Package:
    """One clean package per session (coremltools is slow to import), copied into each case."""

    built: Path | None = None

    def path(self) -> Path:
        if self.built is None:
            import atexit
            import shutil
            import tempfile

            folder = tempfile.mkdtemp(prefix="bridge-corpus-")
            atexit.register(shutil.rmtree, folder, True)  # the session's copy; each suite run left one in /tmp
            self.built = m.mlpackage(Path(folder) / "clean.mlpackage")
        return self.built


_PACKAGE = _Package()


@case(1, "a Core ML package whose weight.bin is a symlink to the secret, validate")
def ext_package_symlink(tmp):
    src, package = _package(tmp)
    weights = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.unlink()
    os.symlink(tmp / "secret", weights)
    return Run(["validate", src, package], 2, ("is a symlink or special file",))


@case(1, "a Core ML program naming @model_path/weights/../../../../secret as its weights, validate")
def ext_package_blob_path(tmp):
    src, package = _package(tmp)
    m.retarget_weights(package, "@model_path/weights/../../../../secret")
    return Run(["validate", src, package], 2, ("outside the package's weights",))


# ------------------------------------------------------------------ 2. failures keep the output

def _kept(*needles) -> tuple[str, ...]:
    return ("kept: the previous output", ".bridge-failed", *needles)


@case(2, "a stage runs past --timeout (an entrypoint that sleeps)")
def fail_timeout(tmp):
    src = m.entrypoint(tmp / "slow.py", "import time; time.sleep(600)")
    return Run(convert(src, "--timeout", "8"), 3, _kept("stage export timed out after 8 s"))


@case(2, "parity fails (a threshold no file can meet)")
def fail_parity(tmp):
    def after(r):
        failed = json.loads((tmp / "out" / ".bridge-failed" / "report.json").read_text())
        assert failed["exit_code"] == 1 and (tmp / "out" / ".bridge-failed" / "m.onnx").is_file()
    return Run(convert(tiny(tmp), "--threshold", "snr_db=1000"), 1, _kept("snr_db"), after=after)


@case(2, "the disk fills up mid-run (RLIMIT_FSIZE: writes past 64 KiB fail)")
def fail_disk_full(tmp):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    _, _, helper, numpy_helper = m._onnx()
    w = numpy_helper.from_array(np.ones((256, 256), np.float32), "w")
    model = m.model([helper.make_node("MatMul", ["x", "w"], ["y"])], [m.vi("x", [1, 256])], [m.vi("y", [1, 256])],
                    [w])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 3, ("File too large",), one_line=False,
               preexec=limit)


@case(2, "the source raises while it is built")
def fail_export_error(tmp):
    src = m.entrypoint(tmp / "broken.py", "raise RuntimeError('weights missing')")
    return Run(convert(src), 3, _kept("weights missing"))


@case(2, "the source crashes its process (SIGSEGV)")
def fail_segfault(tmp):
    src = m.entrypoint(tmp / "crash.py", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    return Run(convert(src), 3, _kept("signal 11"))


@case(2, "the source yields NaN: no artifact can pass")
def fail_nan_source(tmp):
    _, _, helper, _ = m._onnx()
    model = m.model([helper.make_node("Log", ["x"], ["l"]), helper.make_node("Sqrt", ["l"], ["y"])],
                    [m.vi("x", [1, 4])], [m.vi("y", [1, 4])])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 1, _kept("NaN"))


@case(2, "Ctrl-C during the export")
def fail_interrupted(tmp):
    src = m.entrypoint(tmp / "slow.py", "import time; time.sleep(600)")
    run = Run(convert(src), 130, ("interrupted",))
    run.during = _wait_then(tmp, signal.SIGINT)
    return run


@case(2, "bridge killed outright (SIGKILL) during the export")
def fail_killed(tmp):
    src = m.entrypoint(tmp / "slow.py", "import time; time.sleep(600)")
    run = Run(convert(src), -signal.SIGKILL, one_line=False)
    run.during = _wait_then(tmp, signal.SIGKILL)
    return run


def _wait_then(tmp: Path, sig: int):
    def during(proc):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(".bridge.work-") for p in (tmp / "out").iterdir()):
                time.sleep(2.0)  # the export child is running
                proc.send_signal(sig)
                return
            time.sleep(0.1)
    return during


@case(2, "--seed -1: refused before anything runs")
def fail_negative_seed(tmp):
    return Run(convert(tiny(tmp), "--seed", "-1"), 2, ("--seed",))


@case(2, "--mean of the wrong length, found once the inputs are known (in the export stage)")
def fail_mean_length(tmp):
    _, _, helper, _ = m._onnx()
    model = m.model([helper.make_node("Relu", ["x"], ["y"])], [m.vi("x", [1, 3, 8, 8])], [m.vi("y", [1, 3, 8, 8])])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx"), "--mean", "0.5,0.5"), 2,
               ("--mean has 2 values", "3 channel"))


# ---------------------------------------------------------------------------- 3. user files

@case(3, "--out is the source model's own folder")
def user_out_is_source_folder(tmp):
    src = tiny(tmp)
    before = src.read_bytes()

    def after(r):
        assert src.read_bytes() == before
    return Run(["convert", src, "--target", "onnx", "--out", src.parent], 2, ("is an input of this run",),
               after=after)


@case(3, "a user folder in --out named like an artifact (out/m.onnx/)")
def user_folder_named_like_artifact(tmp):
    (tmp / "out" / "m.onnx").mkdir()
    (tmp / "out" / "m.onnx" / "notes.txt").write_text("mine")
    return Run(convert(tiny(tmp)), 2, ("exists and no earlier bridge report",))


@case(3, "a user file in --out named like a TFLite artifact (no TensorFlow needed to refuse)")
def user_file_named_like_tflite(tmp):
    (tmp / "out" / "m_fp32.tflite").write_bytes(b"my own model")
    return Run(["convert", tiny(tmp), "--target", "tflite", "--out", "out"], 2, ("m_fp32.tflite exists",))


@case(3, "validate --report names the model being validated")
def user_report_is_model(tmp):
    src = tiny(tmp)
    return Run(["validate", src, src, "--report", src], 2, ("is an input of this run",))


@case(3, "validate --report names a user's text file")
def user_report_is_text(tmp):
    (tmp / "notes.txt").write_text("mine")
    src = tiny(tmp)
    return Run(["validate", src, src, "--report", "notes.txt"], 2, ("not a bridge report",))


@case(3, "validate --report is a symlink to a user's file")
def user_report_symlink(tmp):
    (tmp / "notes.txt").write_text("mine")
    os.symlink(tmp / "notes.txt", tmp / "r.json")
    src = tiny(tmp)
    return Run(["validate", src, src, "--report", "r.json"], 2, ("not a bridge report",))


@case(3, "a second run into the same --out while the first is running")
def user_concurrent_runs(tmp):
    src = m.entrypoint(tmp / "slow.py", "import time; time.sleep(600)")
    first = subprocess.Popen([str(BRIDGE), *convert(src)], cwd=tmp, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=foreground())
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".bridge.work-") for p in (tmp / "out").iterdir()):
        assert time.monotonic() < deadline and first.poll() is None, "the first run never started"
        time.sleep(0.1)

    def cleanup():
        os.killpg(first.pid, signal.SIGINT)
        first.wait(30)
    return Run(convert(tiny(tmp)), 2, ("another bridge run is writing to this folder",), cleanup=cleanup)


@case(3, "a previous report forged to list ../victim.txt with its real hash")
def user_forged_report_escape(tmp):
    victim = tmp / "victim.txt"
    victim.write_text("precious")
    report = json.loads((tmp / "out" / "report.json").read_text())
    report["artifacts"].append({"path": "../victim.txt", "sha256": hashlib.sha256(b"precious").hexdigest(),
                                "target": "onnx"})
    forge_report(tmp / "out" / "report.json", report)

    def after(r):
        assert victim.read_text() == "precious"
    return Run(convert(tiny(tmp)), 0, previous_intact=False, after=after)


@case(3, "an artifact the user edited since the last run (hash no longer matches)")
def user_edited_artifact(tmp):
    prev = next(p for p in (tmp / "out").iterdir() if p.suffix == ".onnx")
    prev.write_bytes(prev.read_bytes() + b"\0")  # the user's own change
    return Run(convert(tiny(tmp, prev.name)), 2, ("exists and no earlier bridge report",),
               previous_intact=False, after=lambda r: _ends_with_zero(prev))


def _ends_with_zero(path: Path) -> None:
    assert path.read_bytes().endswith(b"\0")


@case(3, "--out is an existing file")
def user_out_is_file(tmp):
    (tmp / "plain").write_text("mine")
    return Run(["convert", tiny(tmp), "--target", "onnx", "--out", "plain"], 2, ("is not a folder",))


@case(3, "--out inside the source SavedModel folder")
def user_out_inside_saved_model(tmp):
    sm = tmp / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    return Run(["convert", sm, "--target", "onnx", "--out", sm / "out"], 2, ("lies inside the input",))


@case(3, "a symlink in --out named like an artifact, pointing at a user's file")
def user_symlink_named_like_artifact(tmp):
    (tmp / "important.txt").write_text("mine")
    os.symlink(tmp / "important.txt", tmp / "out" / "m.onnx")
    return Run(convert(tiny(tmp)), 2, ("exists and no earlier bridge report",),
               after=lambda r: _text(tmp / "important.txt", "mine"))


def _text(path: Path, text: str) -> None:
    assert path.read_text() == text


# ------------------------------------------------------------------------ 4. parse errors

def _usage(argv, *needles) -> Run:
    return Run(argv, 2, ("bridge: error:", *needles))


@case(4, "misspelled option")
def parse_unknown_option(tmp):
    return _usage(["convert", "m.onnx", "--targte", "tflite"], "No such option: --targte")


@case(4, "an integer option given text")
def parse_bad_int(tmp):
    return _usage(["convert", "m.onnx", "--samples", "abc"], "--samples")


@case(4, "an enum option given a value outside its choices")
def parse_bad_choice(tmp):
    return _usage(["convert", "m.onnx", "--tflite-layout", "nchw"], "--tflite-layout")


@case(4, "an unknown command")
def parse_unknown_command(tmp):
    return _usage(["frobnicate"], "No such command")


@case(4, "a file whose name starts with a dash")
def parse_dash_file(tmp):
    (tmp / "-dash.onnx").write_bytes(b"")
    return _usage(["convert", "-dash.onnx"], "put it after '--'")


@case(4, "a missing required argument")
def parse_missing_argument(tmp):
    return _usage(["validate", "m.onnx"], "Missing argument")


@case(4, "an option missing its value")
def parse_option_without_value(tmp):
    return _usage(["convert", "m.onnx", "--out"], "requires an argument")


@case(4, "a float option given text")
def parse_bad_float(tmp):
    return _usage(["convert", "m.onnx", "--timeout", "soon"], "--timeout")


@case(4, "an integer below its minimum")
def parse_below_minimum(tmp):
    return _usage(["convert", "m.onnx", "--samples", "0"], "--samples")


@case(4, "bare `bridge` prints the help and exits 0")
def parse_no_arguments(tmp):
    def after(r):
        assert "Usage: bridge" in r.stdout and "convert" in r.stdout
    return Run([], 0, after=after)


@case(4, "a command alone prints its help once and exits 2")
def parse_command_alone(tmp):
    def after(r):
        assert (r.stdout + r.stderr).count("Usage: bridge validate") == 1, r.stdout + r.stderr
    return Run(["validate"], 2, one_line=False, after=after)


@case(4, "`bridge --version` prints the version and exits 0")
def parse_version(tmp):
    def after(r):
        from bridge import __version__
        assert r.stdout.strip() == f"bridge {__version__}"
    return Run(["--version"], 0, after=after)


@case(4, "an argument that is not valid UTF-8")
def parse_undecodable(tmp):
    return Run(["convert", os.fsdecode(b"\xff\xfe.onnx")], 2, ("no such file",))


# --------------------------------------------------------------------------- 5. never markup

def _literal(*texts) -> callable:
    def after(r):
        for t in texts:
            assert t in r.stderr + r.stdout, t
    return after


@case(5, "--out path with [/x]")
def markup_out_path(tmp):
    return Run(["convert", tiny(tmp), "--target", "onnx", "--out", "o[/x]"], 0,
               after=_literal("o[/x]/report.json"))


@case(5, "an ONNX output named [/bold]")
def markup_output_name(tmp):
    return Run(convert(tiny(tmp, "m2.onnx", output_name="[/bold]")), 0, previous_intact=False,
               after=_literal("[/bold]"))


@case(5, "an onnxruntime error naming a node called [/red]")
def markup_runtime_error(tmp):
    _, TensorProto, helper, numpy_helper = m._onnx()
    shape = numpy_helper.from_array(np.array([3, 5], np.int64), "shape")
    model = m.model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="[/red]bad")], [m.vi("x", [1, 4])],
                    [m.vi("y", [3, 5])], [shape])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 3, ("[/red]bad",), one_line=False)


@case(5, "a model file named m[bold]x.onnx")
def markup_model_name(tmp):
    return Run(["convert", tiny(tmp, "m[bold]x.onnx"), "--target", "onnx", "--out", "o2"], 0,
               after=_literal("Exporting m[bold]x"))


@case(5, "a --calibration folder named cal[/x] (it shows in warnings)")
def markup_warning(tmp):
    (tmp / "cal[/x]").mkdir(parents=True)
    for i in range(3):
        np.save(tmp / "cal[/x]" / f"{i}.npy", np.ones((1, 4), np.float32))
    return Run(["convert", tiny(tmp), "--target", "onnx", "--out", "o3", "--calibration", "cal[/x]"], 0,
               after=_literal("cal[/x]"))


@case(5, "inspect of a model whose input is named [bold]x")
def markup_inspect(tmp):
    return Run(["inspect", tiny(tmp, input_name="[bold]x")], 0, after=_literal("[bold]x"))


# ---------------------------------------------------------------------- 6. option values

def _value(*args_and_needle) -> callable:
    *args, needle = args_and_needle

    def build(tmp):
        return Run(convert(tiny(tmp), *args), 2, (needle,))
    return build


for _cls, _name, _args, _needle in [
    (6, "threshold_not_a_number", ("--threshold", "snr_db=e"), "snr_db must be"),
    (6, "threshold_overflows", ("--threshold", "rel_l2=1e999"), "rel_l2 must be"),
    (6, "threshold_nan", ("--threshold", "snr_db=nan"), "snr_db must be"),
    (6, "threshold_cosine_out_of_range", ("--threshold", "cosine=2"), "cosine must be"),
    (6, "max_memory_infinite", ("--max-memory", "infG"), "--max-memory"),
    (6, "max_memory_negative", ("--max-memory", "-1G"), "--max-memory"),
    (6, "max_memory_one_byte", ("--max-memory", "1"), "at least 256 MiB"),
    (6, "timeout_infinite", ("--timeout", "inf"), "--timeout"),
    (6, "timeout_nan", ("--timeout", "nan"), "--timeout"),
    (6, "timeout_zero", ("--timeout", "0"), "--timeout"),
    (6, "search_budget_zero", ("--search-budget", "0"), "--search-budget"),
    (6, "search_budget_nan", ("--search-budget", "nan"), "--search-budget"),
    (6, "search_budget_huge", ("--search-budget", "1e9"), "--search-budget"),
    (6, "std_zero", ("--std", "0"), "divides by zero"),
    (6, "mean_nan", ("--mean", "nan"), "finite"),
    (6, "resize_zero", ("--resize", "0x0"), "--resize"),
    (6, "samples_huge", ("--samples", "100000000"), "--samples"),
    (6, "input_zero_dim", ("--input", "x:1,0"), "positive"),
]:
    CASES.append(Case(_name, _cls, f"{' '.join(_args)}", _value(*_args, _needle)))


@case(6, "calibration .npy holding Python objects")
def value_object_npy(tmp):
    (tmp / "cal").mkdir()
    np.save(tmp / "cal" / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return Run(convert(tiny(tmp), "--calibration", "cal"), 2, ("not a readable numeric array",))


@case(6, "calibration .npy of strings")
def value_string_npy(tmp):
    (tmp / "cal").mkdir()
    np.save(tmp / "cal" / "a.npy", np.array(["a", "b"]))
    return Run(convert(tiny(tmp), "--calibration", "cal"), 2, ("must be numeric",))


# -------------------------------------------------------------------------- 7. resources

@case(7, "If nested 30 deep in a 4 KB file")
def res_nested_if(tmp):
    path = m.nested_if(tmp / "model" / "m.onnx", 30)
    assert path.stat().st_size < 8192
    return Run(convert(path), 2, ("nest 31 levels deep",))


@case(7, "model-local functions that call each other in a cycle")
def res_recursive_functions(tmp):
    _, _, helper, _ = m._onnx()
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    f = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("G", ["a"], ["b"], domain="local")], opsets)
    g = helper.make_function("local", "G", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="local")], opsets)
    model = m.model([helper.make_node("F", ["x"], ["y"], domain="local")], [m.vi("x", [1, 4])], [m.vi("y", [1, 4])],
                    functions=[f, g])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 2, ("call themselves", "F -> G -> F"))


@case(7, "subgraphs nested through a function call (each level shallow, the sum deep)")
def res_nesting_through_functions(tmp):
    onnx, _, helper, _ = m._onnx()
    inner = onnx.load(str(m.nested_if(tmp / "inner.onnx", 6)))
    opsets = [helper.make_opsetid("", 17)]
    fn = helper.make_function("local", "Deep", ["x"], ["y"], list(inner.graph.node), opsets)
    fn.node.insert(0, helper.make_node("Constant", [], ["cond"], value=inner.graph.initializer[0]))
    outer = m.nested_if(tmp / "outer.onnx", 4)
    model = onnx.load(str(outer))
    leaf = model.graph
    while leaf.node[0].op_type == "If":  # down the then-branches, where the nesting is
        leaf = next(a.g for a in leaf.node[0].attribute if a.name == "then_branch")
    leaf.node[0].op_type, leaf.node[0].domain = "Deep", "local"
    model.functions.append(fn)
    model.opset_import.append(helper.make_opsetid("local", 1))
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 2, ("through any function calls",))


@case(7, "a .keras zip bomb: 1 MB that expands to 2 GB")
def res_keras_zip_bomb(tmp):
    path = tmp / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
        with z.open("model.weights.h5", "w", force_zip64=True) as f:
            chunk = bytes(64 << 20)
            for _ in range(32):
                f.write(chunk)
    return Run(convert(path), 2, ("zip bomb",))


@case(7, "a torch archive whose declared member sizes are huge")
def res_torch_zip_bomb(tmp):
    path = tmp / "w.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(64 << 20)
            for _ in range(16):
                f.write(chunk)
    return Run(convert(path), 2, ("zip bomb",))


@case(7, "a calibration .npz zip bomb")
def res_npz_bomb(tmp):
    path = tmp / "cal.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            chunk = bytes(64 << 20)
            for _ in range(16):
                f.write(chunk)
    return Run(convert(tiny(tmp), "--calibration", path), 2, ("zip bomb",))


@case(7, "a zip with 200,000 entries")
def res_zip_entries(tmp):
    path = tmp / "many.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(200_000):
            z.writestr(f"f{i}", b"")
    return Run(convert(path), 2, ("200,000 entries",))


@case(7, "an input declared [65536, 65536, 64]: refused before sampling it")
def res_huge_input(tmp):
    _, _, helper, _ = m._onnx()
    model = m.model([helper.make_node("Relu", ["x"], ["y"])], [m.vi("x", [65536, 65536, 64])],
                    [m.vi("y", [65536, 65536, 64])])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 2, ("GiB", "--input"))


@case(7, "a calibration file that is a FIFO (a reader would hang)")
def res_calibration_fifo(tmp):
    (tmp / "cal").mkdir()
    os.mkfifo(tmp / "cal" / "a.npy")
    return Run(convert(tiny(tmp), "--calibration", "cal"), 2, ("not a regular file",), timeout=60)


@case(7, "an image decompression bomb in the calibration folder")
def res_image_bomb(tmp):
    from PIL import Image

    (tmp / "cal").mkdir()
    Image.new("1", (20000, 20000)).save(tmp / "cal" / "a.png")
    _, _, helper, _ = m._onnx()
    model = m.model([helper.make_node("Relu", ["x"], ["y"])], [m.vi("x", [1, 3, 8, 8])], [m.vi("y", [1, 3, 8, 8])])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx"), "--calibration", "cal"), 2,
               ("not a readable image",))


# ------------------------------------------------------------------------- 8. small gaps

@case(8, "an input whose name holds ':' given with --input")
def gap_colon_input(tmp):
    src = tiny(tmp, input_name="serving:0")
    return Run(["convert", src, "--target", "onnx", "--out", "o4", "--input", "serving:0:1,4"], 0,
               after=_literal("passed"))


@case(8, "validate an IR-12 file the pinned onnx writes")
def gap_ir12(tmp):
    onnx, _, _, _ = m._onnx()
    src = tiny(tmp)
    model = onnx.load(str(src))
    model.ir_version = 12
    art = m.save(model, tmp / "art" / "m.onnx")
    return Run(["validate", src, art], 0)


@case(8, "a graph listing one output twice")
def gap_duplicate_outputs(tmp):
    _, _, helper, _ = m._onnx()
    model = m.model([helper.make_node("Relu", ["x"], ["y"])], [m.vi("x", [1, 4])], [m.vi("y", [1, 4]),
                                                                                    m.vi("y", [1, 4])])
    return Run(convert(m.save(model, tmp / "model" / "m.onnx")), 2, ("listed more than once",))


@case(8, "--dynamic on an input whose name holds ':'")
def gap_colon_dynamic(tmp):
    src = tiny(tmp, input_name="in:0", batch="N")
    return Run(["convert", src, "--target", "onnx", "--out", "o5", "--input", "in:0:1,4", "--dynamic", "in:0:0"],
               0, after=_literal("passed"))


@case(8, "--dynamic on an axis the ONNX source fixes (the source cannot run other sizes)")
def gap_dynamic_on_static_axis(tmp):
    return Run(convert(tiny(tmp), "--dynamic", "x:0"), 2, ("--dynamic x:0", "fixes axis 0"))


@case(8, "--threshold on an output whose name holds ':'")
def gap_colon_threshold(tmp):
    src = tiny(tmp, output_name="logits:0")
    return Run(["convert", src, "--target", "onnx", "--out", "o6", "--threshold", "logits:0:rel_l2=1e-3"], 0,
               after=_literal("logits:0"))


@case(8, "an input named with spaces and non-ASCII letters, given with --input")
def gap_unicode_input(tmp):
    src = tiny(tmp, input_name="图 像")
    return Run(["convert", src, "--target", "onnx", "--out", "o7", "--input", "图 像:1,4"], 0,
               after=_literal("passed"))
