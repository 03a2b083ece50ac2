"""Time and peak memory of `bridge convert` against the raw onnx2tf chain, in alternating pairs.

    python benchmarks/bench_tflite.py [--pairs N] [--json PATH] [--case mobilenet|resnet50 ...]

Both variants turn a model into fp32 and fp16 .tflite files:

  raw     what a user runs by hand: for a torch source, `torch.onnx.export(..., dynamo=False,
          opset_version=17)` in one Python process; then one `onnx2tf -i model.onnx -o out
          -tb flatbuffer_direct` call with its other defaults (it writes float32 and float16 files).
          An ONNX source goes to onnx2tf alone.
  bridge  `bridge convert SOURCE --target tflite --quantize tflite=fp32,fp16 --out DIR`, which also
          runs both files and the source on 8 samples and checks parity. Each run is cold: it gets an
          empty stage cache folder of its own (`--cache-dir`), as a first conversion does.

Cases:
  mobilenet  samples/mobilenet_shapes.py:load, a trained MobileNetV2-class torch model (96x96).
  resnet50   a ResNet50-class ONNX file (25.6M parameters, 224x224): benchmarks/models.py:resnet50
             exported once before the pairs, not timed.

Each step runs in its own subprocess. Time is wall seconds over the variant's steps. Memory is the
peak summed RSS of the step's whole process tree (every child and grandchild: bridge's stage
children, onnx2tf's onnxsim subprocess), sampled every 50 ms from /proc, the larger over the
variant's steps (they never overlap); the largest single process (`/usr/bin/time -v`) is kept too.
Pairs alternate (raw, bridge, raw, bridge, ...) so drifting machine load hits both alike; the
ratios are of medians.

Before any step, bridge's own modules are byte-compiled (benchmarks/bytecode.py), as pip does for
every package of the raw chain when it installs them: an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise compile bridge from source in every process it starts.

Nothing here touches the network: HTTP(S) proxies point at a closed local port so any attempt to
download fails instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bytecode import compile_bridge  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / "models.py"
GNU_TIME = Path("/usr/bin/time")
MB = 1024 * 1024

# Run in a child Python: import the model file by path and export it the way most users do.
EXPORT_SNIPPET = """
import importlib.util, os, sys
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # as `python file.py` would: its folder first
spec = importlib.util.spec_from_file_location("bench_models", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model, example = getattr(module, sys.argv[2])()
torch.onnx.export(model, (example,), sys.argv[3], opset_version=17, dynamo=False)
"""


@dataclass(frozen=True)
class Case:
    file: Path  # a Python file with `function` returning (torch module, example input)
    function: str
    onnx: bool  # the benchmark's source is the ONNX export of it (made once, untimed), not the torch model


CASES = {
    "mobilenet": Case(ROOT / "samples" / "mobilenet_shapes.py", "load", onnx=False),
    "resnet50": Case(MODELS, "resnet50", onnx=True),
}

OFFLINE_ENV = {
    # A closed port: a library that tries to download fails at once rather than reaching out.
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "all_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
    "HF_HUB_OFFLINE": "1",
}


@dataclass
class Step:
    name: str
    seconds: float
    peak_mb: float  # largest single process
    tree_peak_mb: float | None  # sampled sum over the process tree
    returncode: int
    log: str


@dataclass
class Run:
    variant: str
    steps: list[Step] = field(default_factory=list)
    artifacts: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    stages: dict[str, float] = field(default_factory=dict)  # bridge: seconds per stage, from report.json

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.returncode == 0 for s in self.steps)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def peak_mb(self) -> float:
        return max(s.peak_mb for s in self.steps)

    @property
    def tree_peak_mb(self) -> float | None:
        """A step's tree peaks at least as high as its largest process: sampling every 50 ms misses
        a short peak (the raw torch export's 686 MB read as 577 MB in two of three runs), so each
        step counts the larger of the two."""
        trees = [s.tree_peak_mb for s in self.steps]
        return None if None in trees else max(max(t, s.peak_mb) for t, s in zip(trees, self.steps, strict=True))


# --- measuring one command ---------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Polls /proc for the summed RSS of `root` and all its descendants; keeps the maximum."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_bytes = 0
        self.stopped = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self._tree_rss())

    def _tree_rss(self) -> int:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            rss[pid] = int(fields[21]) * self.page
        tree, frontier = {self.root}, [self.root]
        while frontier:
            children = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree]
            tree.update(children)
            frontier = children
        return sum(rss.get(pid, 0) for pid in tree)


def measure(name: str, cmd: list[str], cwd: Path, timeout: float) -> Step:
    """Run `cmd` in `cwd`; wall seconds and peak RSS of its largest process (and of its tree)."""
    log = cwd / f"{name.replace(' ', '_').replace('.', '_')}.log"
    time_out = cwd / f".{log.stem}.time"
    use_gnu_time = GNU_TIME.is_file() and os.access(GNU_TIME, os.X_OK)
    full = [str(GNU_TIME), "-v", "-o", str(time_out), *cmd] if use_gnu_time else cmd
    # As in an activated environment: onnx2tf runs its `onnxsim` step through PATH, and without the
    # environment's bin folder there it skips it ("Failed to optimize the onnx file"), 1 s less.
    bin_folder = str(Path(tool("onnx2tf")).parent)
    env = {**os.environ, **OFFLINE_ENV, "PATH": os.pathsep.join([bin_folder, os.environ.get("PATH", "")])}
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, to end it whole
        sampler = TreeSampler(proc.pid) if Path("/proc/self/stat").exists() else None
        if sampler:
            sampler.start()
        try:
            _, status, usage = _wait4(proc, timeout)
        finally:
            seconds = time.perf_counter() - started
            if sampler:
                sampler.stopped.set()
                sampler.join()
    returncode = os.waitstatus_to_exitcode(status)  # GNU time passes the command's status on
    peak_kb = usage.ru_maxrss  # Linux: kilobytes
    if use_gnu_time and time_out.is_file():
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_out.read_text())
        if match:
            peak_kb = int(match.group(1))
    tree = sampler.peak_bytes / MB if sampler and sampler.peak_bytes else None
    return Step(name, seconds, peak_kb / 1024, tree, returncode, str(log))


def _wait4(proc: subprocess.Popen, timeout: float) -> tuple[int, int, os.struct_rusage]:
    """`os.wait4` with a deadline: the rusage it returns is this child's tree, not our history."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
            return pid, status, usage
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            print(f"  timed out after {timeout:g} s", file=sys.stderr)
            return pid, status, usage
        time.sleep(0.05)


# --- the two variants ---------------------------------------------------------------------------


def tool(name: str) -> str:
    """A console script from this interpreter's environment, else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name}: not found next to {sys.executable} or on PATH")
    return found


def fresh_folder(root: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


def export_once(root: Path, case: Case, timeout: float) -> Path:
    """The ONNX source of an ONNX case, written before any pair runs."""
    path = root / f"{case.function}.onnx"
    if not path.exists():
        step = measure("export source", [sys.executable, "-c", EXPORT_SNIPPET, str(case.file), case.function,
                                         str(path)], root, timeout)
        if step.returncode:
            raise SystemExit(f"could not export {case.file}:{case.function}:\n{_tail(Path(step.log))}")
    return path


def run_raw(root: Path, case: Case, source: Path | None, timeout: float) -> Run:
    work = fresh_folder(root, "raw")
    run = Run("raw")
    model = source
    if model is None:
        model = work / "model.onnx"
        export = [sys.executable, "-c", EXPORT_SNIPPET, str(case.file), case.function, str(model)]
        run.steps.append(measure("torch.onnx.export", export, work, timeout))
    if run.ok or not run.steps:
        onnx2tf = [tool("onnx2tf"), "-i", str(model), "-o", "out", "-tb", "flatbuffer_direct"]
        run.steps.append(measure("onnx2tf", onnx2tf, work, timeout))
    run.artifacts = artifacts(work / "out")
    return run


def run_bridge(root: Path, case: Case, source: Path | None, timeout: float) -> Run:
    work = fresh_folder(root, "bridge")
    src = str(source) if source is not None else f"{case.file}:{case.function}"
    # A cold run, as a first conversion is: an empty stage cache of its own (the user's cache would
    # answer every stage from the second pair on).
    cmd = [tool("bridge"), "convert", src, "--target", "tflite", "--quantize", "tflite=fp32,fp16", "--out", "out",
           "--cache-dir", str(work / "cache")]
    run = Run("bridge", [measure("bridge convert", cmd, work, timeout)])
    run.artifacts = artifacts(work / "out")
    run.stages = stages(work / "out")
    return run


def stages(out: Path) -> dict[str, float]:
    """bridge's own stage timings (report.json's `stage_runs`): each stage's run in its child, not
    counting the time it queued for a slot; a stage that ran more than once (one parity run per
    file) is summed. Stages run side by side, so they add up to more than the wall time."""
    found: dict[str, float] = {}
    for folder in (out, out / ".bridge-failed"):
        path = folder / "report.json"
        if path.is_file():
            for run in json.loads(path.read_text()).get("stage_runs", []):
                found[run["stage"]] = round(found.get(run["stage"], 0.0) + run["seconds"], 3)
            break
    return found


def artifacts(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*.tflite"))}




# --- reporting ----------------------------------------------------------------------------------


def summarize(runs: list[Run]) -> dict[str, dict]:
    """Per variant: median seconds and peak memory over the successful repeats."""
    summary: dict[str, dict] = {}
    for variant in dict.fromkeys(r.variant for r in runs):
        good = [r for r in runs if r.variant == variant and r.ok]
        if not good:
            summary[variant] = {"ok": False}
            continue
        trees = [r.tree_peak_mb for r in good if r.tree_peak_mb is not None]
        summary[variant] = {
            "ok": True,
            "repeats": len(good),
            "seconds": statistics.median(r.seconds for r in good),
            "peak_mb": statistics.median(r.peak_mb for r in good),
            "tree_peak_mb": statistics.median(trees) if trees else None,
            "steps": {s.name: {"seconds": statistics.median(r.steps[i].seconds for r in good),
                               "peak_mb": statistics.median(r.steps[i].peak_mb for r in good)}
                      for i, s in enumerate(good[0].steps)},
            "artifacts": good[-1].artifacts,
            "stages": {k: statistics.median(r.stages.get(k, 0.0) for r in good) for k in good[0].stages},
        }
    return summary


def ratios(summary: dict[str, dict]) -> dict[str, float] | None:
    raw, bridge = summary.get("raw", {}), summary.get("bridge", {})
    if not (raw.get("ok") and bridge.get("ok")):
        return None
    out = {"seconds": bridge["seconds"] / raw["seconds"], "peak_mb": bridge["peak_mb"] / raw["peak_mb"]}
    if raw["tree_peak_mb"] and bridge["tree_peak_mb"]:
        out["tree_peak_mb"] = bridge["tree_peak_mb"] / raw["tree_peak_mb"]
    return out


def print_table(summary: dict[str, dict], ratio: dict[str, float] | None) -> None:
    print(f"\n{'variant':<10} {'step':<20} {'seconds':>9} {'peak MB':>9} {'tree MB':>9}")
    for variant, s in summary.items():
        if not s["ok"]:
            print(f"{variant:<10} {'FAILED':<20}")
            continue
        if len(s["steps"]) > 1:
            for name, step in s["steps"].items():
                print(f"{'':<10} {name:<20} {step['seconds']:9.1f} {step['peak_mb']:9.0f}")
        tree = f"{s['tree_peak_mb']:9.0f}" if s["tree_peak_mb"] else f"{'-':>9}"
        print(f"{variant:<10} {'total':<20} {s['seconds']:9.1f} {s['peak_mb']:9.0f} {tree}")
    if ratio:
        tree = f", tree memory {ratio['tree_peak_mb']:.2f}x" if "tree_peak_mb" in ratio else ""
        print(f"\nbridge / raw: time {ratio['seconds']:.2f}x, memory {ratio['peak_mb']:.2f}x{tree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating raw/bridge pairs per case (medians)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per step")
    parser.add_argument("--keep", action="store_true", help="keep the working folders and logs")
    args = parser.parse_args()

    compile_bridge(Path(tool("bridge")).parent / "python")  # as pip does for the raw chain's packages
    root = Path(tempfile.mkdtemp(prefix="bench-tflite-"))
    results: dict[str, dict] = {}
    ok = True
    try:
        for name in args.case or list(CASES):
            case = CASES[name]
            source = export_once(root, case, args.timeout) if case.onnx else None
            runs: list[Run] = []
            for i in range(args.pairs):
                for variant, fn in (("raw", run_raw), ("bridge", run_bridge)):
                    print(f"[{name} {i + 1}/{args.pairs}] {variant} ...", flush=True)
                    run = fn(root, case, source, args.timeout)
                    runs.append(run)
                    for step in run.steps:
                        state = "ok" if step.returncode == 0 else f"FAILED (exit {step.returncode}), log:"
                        tree = f", tree {step.tree_peak_mb:.0f} MB" if step.tree_peak_mb else ""
                        print(f"  {step.name}: {step.seconds:.1f} s, {step.peak_mb:.0f} MB{tree}  {state}")
                        if step.returncode:
                            print(_tail(Path(step.log)), file=sys.stderr)
            summary = summarize(runs)
            ratio = ratios(summary)
            print(f"\n{name}:")
            print_table(summary, ratio)
            ok = ok and all(r.ok for r in runs)
            results[name] = _report(case, args, runs, summary, ratio)
        if args.json:
            args.json.write_text(json.dumps({"machine": _machine(), "pairs": args.pairs, "cases": results},
                                            indent=2) + "\n")
            print(f"wrote {args.json}")
    finally:
        if args.keep:
            print(f"working folders kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def _tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join("    " + line for line in text[-lines:])


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "meter": "GNU time -v + /proc tree sampling" if GNU_TIME.is_file() else "os.wait4 rusage + /proc"}


def _report(case: Case, args: argparse.Namespace, runs: list[Run], summary: dict, ratio: dict | None) -> dict:
    return {
        "source": f"{case.file.relative_to(ROOT)}:{case.function}" + (" exported to ONNX" if case.onnx else ""),
        "summary": summary,
        "ratios_bridge_over_raw": ratio,
        "runs": [{"variant": r.variant, "ok": r.ok, "seconds": r.seconds, "peak_mb": r.peak_mb,
                  "tree_peak_mb": r.tree_peak_mb, "artifacts": r.artifacts, "stages": r.stages,
                  "steps": [{k: v for k, v in asdict(s).items() if k != "log"} for s in r.steps]}
                 for r in runs],
    }


if __name__ == "__main__":
    sys.exit(main())
