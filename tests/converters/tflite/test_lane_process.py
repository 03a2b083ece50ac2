"""The lane's entry point in a fresh process, as its stage runs it: every mode, and no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.converters.tflite.helpers import cnn

onnx = pytest.importorskip("onnx")

LANE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from bridge.base.arrays import write_feeds
    from bridge.base.lane import LaneRequest
    from bridge.converters.tflite.lane import convert
    from bridge.base.tensors import TensorSpec

    work = sys.argv[1]
    rng = np.random.default_rng(0)
    calibration = write_feeds(work + "/calibration",
                              [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)])
    req = LaneRequest(hub_path=work + "/hub.onnx", workdir=work, name="cnn", modes=tuple(sys.argv[2].split(",")),
                      framework="onnx", inputs=(TensorSpec("x", (1, 3, 16, 16)),), outputs=(TensorSpec("y", (1, 10)),),
                      calibration=calibration)
    arts = convert(req)
    heavy = [m for m in ("tensorflow", "keras", "tf_keras", "torch") if m in sys.modules]
    print(json.dumps({"heavy": heavy, "arts": [{"mode": a.mode, "path": a.path, "error": a.error, "route": a.route,
                                                "io": a.io.to_json() if a.io else None} for a in arts]}))
""")


@pytest.mark.parametrize("modes", ["fp32,fp16", "dynamic-int8,int8,int8-io,int16x8"])
def test_every_mode_without_tensorflow(tmp_path, modes):
    onnx.save(cnn(), tmp_path / "hub.onnx")
    r = subprocess.run([sys.executable, "-c", LANE, str(tmp_path), modes], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"the lane imported {out['heavy']}"
    assert [a["mode"] for a in out["arts"]] == modes.split(",")
    for a in out["arts"]:
        assert a["error"] is None and a["path"].endswith(f"cnn_{a['mode']}.tflite")
        [x] = a["io"]["inputs"]
        assert x["shape"] == [1, 16, 16, 3] and x["permutation"] == [0, 2, 3, 1] and x["layout"] == "NHWC"
        assert x["dtype"] == ("int8" if a["mode"] == "int8-io" else "float32")
    calibrated = [a for a in out["arts"] if a["mode"] in ("int8", "int8-io", "int16x8")]
    assert all(a["route"][-1] == "litert-quantizer" for a in calibrated)
