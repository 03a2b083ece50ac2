import pytest

from bridge.base.errors import UsageError
from bridge.base.modes import Mode
from bridge.lanes import lanes
from bridge.plan import Route, parse_threshold, plan_routes, thresholds_for


def test_defaults_and_order():
    assert plan_routes(["tflite", "onnx"], []) == [Route("onnx", Mode.FP32), Route("tflite", Mode.FP32)]


def test_quantize_replaces_defaults():
    routes = plan_routes(["tflite"], ["tflite=fp16,int8", "tflite=fp16"])
    assert [r.mode for r in routes] == [Mode.FP16, Mode.INT8]


@pytest.mark.parametrize("args, message", [
    (["tflite=int9"], "unknown quantization mode 'int9'"),
    (["tflite=int8-weights"],
     "tflite has no mode int8-weights; valid: fp32, fp16, dynamic-int8, int8, int8-mixed, int8-io, int16x8"),
    (["coreml2=fp16"], "unknown target 'coreml2'"),
    (["tflite"], "expected TARGET=MODE"),
    (["onnx=fp32"], "not given with --target"),
])
def test_bad_quantize_is_usage_error(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        plan_routes(["tflite"], args)


def test_unknown_target():
    with pytest.raises(UsageError, match="valid targets: onnx, tflite"):
        plan_routes(["android"], [])


def test_threshold_overrides():
    o = parse_threshold("int8@logits:snr_db=12")
    int8, fp16 = (lanes()["tflite"].mode(m) for m in (Mode.INT8, Mode.FP16))
    t = thresholds_for(int8, ["logits", "box"], [o])
    assert t["logits"].snr_db_min == 12 and t["box"].snr_db_min == 15
    assert thresholds_for(fp16, ["logits"], [o])["logits"].snr_db_min == 30
    with pytest.raises(UsageError):
        parse_threshold("snr=abc")
    with pytest.raises(UsageError, match="names output 'nope'"):
        thresholds_for(int8, ["logits"], [parse_threshold("nope:cosine=0.9")])
