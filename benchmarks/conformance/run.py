"""Run bridge's real pipeline on every kept node-test case, for one lane, and summarize.

    python -m benchmarks.conformance.run --lane coreml|tflite [--only GLOB] [--limit N] [--jobs 1]
        [--timeout 600] [--results PATH] [--redo | --failing] [--claimed | --unclaimed]
    python -m benchmarks.conformance.run --lane coreml --summary [--markdown]

Each case (cases.json, made by cases.py) runs in its own worker process, which writes the frozen
model to a temporary folder and calls the public API, exactly as a user would:

    bridge.convert(path, ConvertOptions(targets=("onnx", LANE), quantize=(f"{LANE}=fp32",), samples=2))

Parity runs on bridge's own seeded samples (standard normal floats). When the source itself yields
NaN/Inf on them (Log, Sqrt, Acos... of negative numbers), the case is run again with the test's
own inputs as the parity samples (`--calibration`: a folder of them; bridge holds the last
`samples` out for parity), and `parity_inputs` says so. A worker that outlives `--timeout` is
killed with everything it started; bridge's stages get the same limit each.

Results go to a JSON file after every case, so a killed run resumes where it stopped (cases
already in the file are skipped unless `--redo`). Each record: exit code, the lane artifact's
`status` (passed / failed / not_executed / error), its worst `rel_l2`, the failing `stage` and
`message` (200 chars), wall `seconds`, and whether the lane `claimed` every op type of the case:
for Core ML, what bridge's own preflight decides (a registered converter for the op at the hub's
opset); for TFLite, what the lane's preflight decides (onnx2tf 2.x's node validators after the
lane's rewrites: op types, attributes, ranks, dtypes). (The 3.11 baseline, on onnx2tf 1.29, which
had no preflight, counted an op claimed when onnx2tf had an `onnx2tf/ops/<OpType>.py` handler.)
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from benchmarks.conformance.cases import CASES_FILE, HERE, build, read_cases

ROOT = HERE.parents[1]
LANES = ("coreml", "tflite")
SAMPLES = 2
MESSAGE_CHARS = 200
OUTCOMES = ("passed", "wrong_numbers", "error", "not_executed", "inconclusive")


def default_results(lane: str) -> Path:
    return HERE / f"results-{lane}.json"


# ---------------------------------------------------------------- claims


def unclaimed_ops(lane: str, case: dict) -> list[str]:
    """The case's op types the lane refuses (empty: the lane claims the case)."""
    return sorted({u.op_type for u in refusals(lane, case["name"])})


def refusals(lane: str, name: str) -> list:
    """The lane's own preflight records (op type, nodes, reason) on the case model at the opset the
    hub gives it (older than 13 is upgraded to 17 first, as `hub.upgrade` does). TFLite: onnx2tf
    2.x's node validators after the lane's rewrites, and the lane's own refusals; Core ML: a
    registered converter for the op and its attribute limits."""
    from bridge.base.errors import ConversionError
    from bridge.converters.onnx.hub import upgrade

    if lane == "tflite":
        from bridge.converters.tflite.preflight import refused_ops as preflight
    else:
        from bridge.converters.coreml.preflight import unsupported_ops as preflight
    model = build(name)[0]
    try:
        model = upgrade(model)
    except ConversionError:  # the hub fails too; judge the ops at the opset they were stored at
        pass
    return preflight(model)


def refusals_markdown(lane: str, cases: list[dict]) -> str:
    """Every (op, reason) the lane's preflight refuses over the kept cases, with the cases: the
    README's list of what each lane refuses, measured without converting anything."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for case in cases:
        for u in refusals(lane, case["name"]):
            found[(u.op_type, u.reason or "refused")].append(case["name"])
    lines = [f"| op | refused ({lane} preflight) | node-test cases |", "|---|---|---|"]
    for (op, reason), names in sorted(found.items()):
        shown = ", ".join(f"`{n}`" for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        lines.append(f"| {op} | {_cell(reason, 200)} | {len(names)}: {shown} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one case (worker process)


def run_case(name: str, lane: str, timeout: float, work: Path) -> dict:
    """Convert one case through the public API; the record for the results file."""
    import numpy as np
    import onnx

    from bridge import ConvertOptions, convert
    from bridge.base.errors import BridgeError
    from bridge.base.samples import CalibrationOptions

    model, feeds, _ = build(name)
    path = work / f"{name}.onnx"
    onnx.save(model, str(path))
    options = ConvertOptions(targets=("onnx", lane), quantize=(f"{lane}=fp32",), out=str(work / "out"),
                             samples=SAMPLES, timeout=timeout)
    try:
        report = convert(str(path), options).to_json()
        parity_inputs = "synthetic"
        if any(c["nan"] or c["inf"] for c in report["source"].get("nonfinite", {}).values()):
            data = work / "test-inputs"
            data.mkdir()
            for i in range(SAMPLES + 4):  # bridge holds the last `samples` out for parity when it has 4 more
                np.savez(data / f"{i}.npz", **feeds)
            options = replace(options, calibration=CalibrationOptions(path=str(data)),
                              out=str(work / "out-test-inputs"))
            report = convert(str(path), options).to_json()
            parity_inputs = "test_data_set_0"
    except BridgeError as e:  # usage errors found before converting (exit 2)
        return {"exit_code": e.exit_code, "status": "error", "stage": "usage", "message": _line(e),
                "rel_l2": None, "onnx_status": None, "parity_inputs": "synthetic"}
    return {"exit_code": report["exit_code"], **artifact_record(report, lane), "parity_inputs": parity_inputs}


def artifact_record(report: dict, lane: str) -> dict:
    """Status, worst rel_l2 and the failing stage/message of the lane's artifact in a report."""
    arts = {a["target"]: a for a in report["artifacts"]}
    art = arts.get(lane)
    onnx_art = arts.get("onnx")
    out = {"onnx_status": _status(onnx_art) if onnx_art else None, "source_nonfinite": _source_nonfinite(report)}
    if art is None:
        return {**out, "status": "error", "stage": "harness", "message": "no artifact for the lane", "rel_l2": None}
    parity = art.get("parity") or {}
    rels = [o.get("rel_l2") for o in parity.get("outputs", {}).values()]
    rel = None if not rels or any(r is None for r in rels) else max(rels)
    status = _status(art)
    if status == "error":
        stage, message = art["error"]["stage"], art["error"]["message"]
    elif status == "passed":
        stage, message = None, ""
    else:
        stage, message = "parity" if status == "failed" else "runtime", parity.get("reason", "")
    return {**out, "status": status, "rel_l2": rel, "stage": stage, "message": _line(message)}


def _status(art: dict) -> str:
    if art.get("error"):
        return "error"
    return (art.get("parity") or {}).get("status", "not_executed")


def _source_nonfinite(report: dict) -> bool:
    return any(c["nan"] or c["inf"] for c in report["source"].get("nonfinite", {}).values())


def _line(text: object) -> str:
    return " ".join(str(text).split())[:MESSAGE_CHARS]


def worker_main(name: str, lane: str, timeout: float, record: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"conformance-{lane}-"))
    try:
        rec = run_case(name, lane, timeout, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record.write_text(json.dumps(rec))


# ---------------------------------------------------------------- the run (parent process)


def spawn_case(case: dict, lane: str, timeout: float) -> dict:
    """Run one case in a worker process (its own session, so a timeout kills all it started;
    bridge's stage children die with it). Returns the full record."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="conformance-record-") as tmp:
        record = Path(tmp) / "record.json"
        log = Path(tmp) / "worker.log"
        cmd = [sys.executable, "-m", "benchmarks.conformance.run", "--lane", lane, "--timeout", str(timeout),
               "--worker", case["name"], "--record", str(record)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=timeout * 4 + 60)  # the stages time out first; this catches the rest
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if record.exists():
            rec = json.loads(record.read_text())
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            why = "timed out" if proc.returncode == -signal.SIGKILL else f"exited with {proc.returncode}"
            rec = {"exit_code": None, "status": "error", "stage": "harness", "rel_l2": None, "onnx_status": None,
                   "message": _line(f"worker {why}: {' | '.join(tail)}")}
    return {"name": case["name"], "op_types": case["op_types"], "opset": case["opset"], **rec,
            "seconds": round(time.perf_counter() - start, 2)}


def load_results(path: Path, lane: str) -> dict:
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("lane") != lane:
            raise SystemExit(f"{path} holds {doc.get('lane')} results, not {lane}")
        return doc
    from bridge.environment import versions

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"lane": lane, "cases_file": CASES_FILE.name, "samples": SAMPLES, "commit": commit.stdout.strip() or None,
            "environment": {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "versions": versions()},
            "results": {}}


def save_results(path: Path, doc: dict) -> None:
    doc["summary"] = summarize(doc["results"].values())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def select(cases: list[dict], only: str | None, results: dict[str, dict], redo: bool, limit: int | None,
           failing: bool = False) -> list[dict]:
    """Cases to run: those matching `only` not yet in the results (all of them with `redo`), or with
    `failing` those the results hold with another outcome than passed."""
    if failing:
        picked = [c for c in cases if c["name"] in results and results[c["name"]]["outcome"] != "passed"]
    else:
        done = set() if redo else set(results)
        picked = [c for c in cases if c["name"] not in done]
    picked = [c for c in picked if only is None or fnmatch.fnmatchcase(c["name"], only)]
    return picked[:limit] if limit is not None else picked


def spread(cases: list[dict]) -> list[dict]:
    """Round robin over op types (each one's first case, then each one's second, ...), so a run
    stopped early has sampled every op rather than the first letters of the alphabet."""
    by_op: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        by_op[c["op_types"][0]].append(c)
    rounds = itertools.zip_longest(*by_op.values())
    return [c for r in rounds for c in r if c is not None]


def run(args: argparse.Namespace) -> dict:
    path = args.results or default_results(args.lane)
    doc = load_results(path, args.lane)
    pending = select(read_cases(args.cases), args.only, doc["results"], args.redo, None, args.failing)
    if args.claimed or args.unclaimed:  # the preflight is cheap next to a conversion: the claimed cases first
        pending = [c for c in pending if (not unclaimed_ops(args.lane, c)) == args.claimed]
    pending = spread(pending) if args.spread else pending
    pending = pending[:args.limit] if args.limit is not None else pending
    print(f"{args.lane}: {len(pending)} case(s) to run, {len(doc['results'])} already in {path}", flush=True)
    lock = threading.Lock()
    started = time.perf_counter()

    def one(case: dict) -> None:
        unclaimed = unclaimed_ops(args.lane, case)
        rec = spawn_case(case, args.lane, args.timeout)
        rec["claimed"], rec["unclaimed_ops"] = not unclaimed, unclaimed
        rec["outcome"] = outcome(rec)
        with lock:
            doc["results"][case["name"]] = rec
            save_results(path, doc)
            n = len(doc["results"])
            print(f"[{n}] {case['name']}: {rec['outcome']} ({rec['seconds']:.0f} s)"
                  + (f" {rec['stage']}: {rec['message'][:100]}" if rec["outcome"] != "passed" else ""), flush=True)

    if args.lane == "coreml" and pending:  # import the op registry (and coremltools) once, before the threads
        from bridge.converters.coreml.registry import supported_ops

        supported_ops()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, pending))
    doc["wall_seconds"] = round(doc.get("wall_seconds", 0.0) + time.perf_counter() - started, 1)
    save_results(path, doc)
    return doc


# ---------------------------------------------------------------- summary


def outcome(rec: dict) -> str:
    """passed; wrong_numbers (converted and ran, parity failed); error (no artifact, or it crashed);
    not_executed (the runtime could not run the artifact); inconclusive (the source itself yields
    NaN/Inf even on the test's own inputs: no verdict is possible)."""
    if rec["status"] == "failed":
        return "inconclusive" if rec.get("source_nonfinite") else "wrong_numbers"
    return rec["status"] if rec["status"] in OUTCOMES else "error"


def summarize(records: Iterable[dict]) -> dict:
    records = list(records)
    claimed = [r for r in records if r.get("claimed")]
    counts = Counter(r["outcome"] for r in records)
    claimed_counts = Counter(r["outcome"] for r in claimed)
    per_op: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        for op in dict.fromkeys(r["op_types"]):
            per_op[op]["kept"] += 1
            per_op[op]["claimed"] += bool(r.get("claimed"))
            per_op[op][r["outcome"]] += 1
    return {
        "kept": len(records),
        "claimed": len(claimed),
        **{k: counts[k] for k in OUTCOMES},
        "claimed_outcomes": {k: claimed_counts[k] for k in OUTCOMES},
        "claimed_pass_rate": round(claimed_counts["passed"] / len(claimed), 4) if claimed else None,
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
        "per_op": {op: dict(c) for op, c in sorted(per_op.items())},
    }


def print_summary(doc: dict) -> None:
    s = summarize(doc["results"].values())
    c = s["claimed_outcomes"]
    rate = f"{100 * s['claimed_pass_rate']:.1f}%" if s["claimed_pass_rate"] is not None else "-"
    print(f"\n{doc['lane']}: {s['kept']} kept cases, {s['claimed']} claimed; passed {s['passed']} "
          f"(claimed {c['passed']}, {rate}), wrong numbers {s['wrong_numbers']} (claimed {c['wrong_numbers']}), "
          f"errors {s['error']} (claimed {c['error']}), not executed {s['not_executed']}, "
          f"inconclusive {s['inconclusive']}; {s['seconds'] / 60:.0f} min of cases")
    print(f"\n{'op type':28} {'kept':>5} {'claim':>5} {'pass':>5} {'wrong':>5} {'error':>5} {'n/e':>5} {'inc':>5}")
    for op, n in s["per_op"].items():
        print(f"{op:28} {n['kept']:5} {n['claimed']:5} {n.get('passed', 0):5} {n.get('wrong_numbers', 0):5} "
              f"{n.get('error', 0):5} {n.get('not_executed', 0):5} {n.get('inconclusive', 0):5}")
    wrong = [r for r in doc["results"].values() if r["outcome"] == "wrong_numbers"]
    if wrong:
        print("\nwrong numbers:")
        for r in sorted(wrong, key=lambda r: r["name"]):
            print(f"  {r['name']} ({', '.join(r['op_types'])}; claimed={r['claimed']}): {r['message']}")


HUB_STAGES = ("usage", "export", "onnx-upgrade", "onnx-simplify", "onnx-check", "onnx-runtime")


def stage_group(rec: dict) -> str:
    """Where a failing case stopped: before the lane (the hub), at the lane's preflight, converting,
    running the artifact, or comparing its numbers."""
    stage = rec.get("stage") or ""
    if rec["outcome"] == "wrong_numbers":
        return "parity"
    if stage in HUB_STAGES:
        return "hub"
    for part in ("preflight", "convert", "runtime"):
        if stage.endswith(part):
            return part
    return stage or rec["outcome"]


def _reason(rec: dict) -> str:
    """The one-line reason without what differs from case to case (node and input names)."""
    text = re.sub(r" \(\(?unnamed [^)]*\)\)?", "", rec.get("message") or "")
    text = re.sub(r"\b(input|node) \S+ (has|node)", r"\1 … \2", text)
    return text


def markdown(doc: dict) -> str:
    """The README's tables for one lane: totals, where failures stop, every wrong-number case, and
    the other failing cases grouped by op type and reason."""
    s = summarize(doc["results"].values())
    c = s["claimed_outcomes"]
    rate = f"{100 * s['claimed_pass_rate']:.1f}%" if s["claimed_pass_rate"] is not None else "-"
    records = sorted(doc["results"].values(), key=lambda r: (r["op_types"][0], r["name"]))
    lines = ["| kept | claimed | passed | wrong numbers | errors | not executed | inconclusive "
             "| claimed cases passing |", "|---|---|---|---|---|---|---|---|",
             f"| {s['kept']} | {s['claimed']} | {s['passed']} | {s['wrong_numbers']} ({c['wrong_numbers']} claimed) "
             f"| {s['error']} ({c['error']} claimed) | {s['not_executed']} ({c['not_executed']} claimed) "
             f"| {s['inconclusive']} | **{rate}** ({c['passed']}/{s['claimed']}) |", ""]
    stops = Counter((stage_group(r), bool(r.get("claimed"))) for r in records if r["outcome"] != "passed")
    lines += ["| failing cases stop at | claimed | not claimed |", "|---|---|---|"]
    for group in dict.fromkeys(g for g, _ in sorted(stops, key=lambda k: -stops[k])):
        lines.append(f"| {group} | {stops[(group, True)]} | {stops[(group, False)]} |")
    wrong = [r for r in records if r["outcome"] == "wrong_numbers"]
    lines += ["", f"**Converted with wrong numbers ({len(wrong)}):**", ""]
    if wrong:
        lines += ["| case | op | claimed | rel_l2 | reason |", "|---|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['op_types'][0]} | {'yes' if r['claimed'] else 'no'} | "
                  f"{_num(r['rel_l2'])} | {_cell(r['message'])} |" for r in wrong]
    else:
        lines.append("none")
    other = [r for r in records if r["outcome"] not in ("passed", "wrong_numbers")]
    per_op = s["per_op"]
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in other:
        groups[(r["op_types"][0], bool(r.get("claimed")), r["outcome"], r.get("stage") or "", _reason(r))].append(
            r["name"])
    lines += ["", f"**Other failing cases, by op type ({len(other)}):**", "",
              "| op | claimed | cases | stage: reason |", "|---|---|---|---|"]
    for (op, claimed, _, stage, reason), names in groups.items():
        every = len(names) == per_op[op]["kept"] and len(names) > 3
        cases = f"all {len(names)}" if every else ", ".join(f"`{n}`" for n in names)
        lines.append(f"| {op} | {'yes' if claimed else 'no'} | {cases} | {stage}: {_cell(reason)} |")
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _cell(text: str, limit: int = 150) -> str:
    return text.replace("|", "\\|")[:limit]


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bridge conformance on onnx's backend node tests")
    parser.add_argument("--lane", choices=LANES, required=True)
    parser.add_argument("--only", metavar="GLOB", help="run the cases whose name matches, e.g. 'test_conv*'")
    parser.add_argument("--limit", type=int, help="run at most N pending cases")
    parser.add_argument("--jobs", type=int, default=1, help="cases converted at once (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per bridge stage; the worker gets 4x")
    parser.add_argument("--results", type=Path, help="results file (default results-LANE.json here); resumed")
    parser.add_argument("--cases", type=Path, default=CASES_FILE)
    parser.add_argument("--redo", action="store_true", help="run selected cases again even if already in results")
    parser.add_argument("--failing", action="store_true",
                        help="run again the cases the results file holds with another outcome than passed")
    claims = parser.add_mutually_exclusive_group()
    claims.add_argument("--claimed", action="store_true", help="run only the cases the lane claims")
    claims.add_argument("--unclaimed", action="store_true",
                        help="run only the cases the lane does not claim (each should stop at its preflight)")
    parser.add_argument("--spread", action="store_true",
                        help="order the pending cases round robin over op types (a partial run samples every op)")
    parser.add_argument("--refusals", action="store_true",
                        help="only print every op and reason the lane's preflight refuses over the cases (markdown)")
    parser.add_argument("--summary", action="store_true", help="only print the summary of the results file")
    parser.add_argument("--markdown", action="store_true", help="with --summary: print the README tables")
    parser.add_argument("--reclaim", action="store_true",
                        help="recompute every result's claim with the current code (claims follow the lane's "
                             "preflight, which a run may have changed under it) and save")
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.lane, args.timeout, args.record)
        return
    if args.reclaim:
        path = args.results or default_results(args.lane)
        doc = load_results(path, args.lane)
        for rec in doc["results"].values():
            unclaimed = unclaimed_ops(args.lane, rec)
            rec["claimed"], rec["unclaimed_ops"] = not unclaimed, unclaimed
        save_results(path, doc)
        print_summary(doc)
        return
    if args.refusals:
        print(refusals_markdown(args.lane, read_cases(args.cases)), end="")
        return
    if args.summary:
        doc = load_results(args.results or default_results(args.lane), args.lane)
        print(markdown(doc) if args.markdown else "", end="")
        if not args.markdown:
            print_summary(doc)
        return
    print_summary(run(args))


if __name__ == "__main__":
    main()
