"""The installed lanes, as their declarations say: found through the entry-point group, each mode
row complete, the derived facts (fp16 compute, calibration) coming from those rows."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.base.errors import UsageError
from bridge.base.lane import Lane
from bridge.base.modes import Mode
from bridge.lanes import all_modes, lanes


def test_built_in_lanes_register_through_the_entry_point_group():
    found = lanes()
    assert list(found)[:3] == ["onnx", "tflite", "coreml"]
    assert all(isinstance(lane, Lane) for lane in found.values())


def test_which_modes_compute_in_fp16():
    def fp16(target, mode):
        return lanes()[target].mode(mode).fp16_compute

    assert fp16("tflite", Mode.FP16)
    assert not any(fp16("tflite", m) for m in (Mode.FP32, Mode.DYNAMIC_INT8, Mode.INT8, Mode.INT16X8))
    assert all(fp16("coreml", m) for m in (Mode.FP16, Mode.INT8_WEIGHTS, Mode.PALETTIZE_4, Mode.INT8))
    assert not fp16("coreml", Mode.FP32)
    assert not fp16("onnx", Mode.FP32)


def test_every_mode_row_is_complete():
    for lane in lanes().values():
        assert set(lane.default) <= set(lane.mode_names), lane.name
        assert len(set(lane.mode_names)) == len(lane.mode_names), f"{lane.name} declares a mode twice"
        for m in lane.modes:
            assert m.thresholds.to_json(), f"{lane.name}/{m.name} judges nothing"
            assert m.description, f"{lane.name}/{m.name} has no description"
    assert {"fp32", "fp16", "int8", "int16x8", "palettize-4", "int4-weights"} <= set(all_modes())


def test_calibrated_modes_are_declared_not_listed():
    calibrated = {(lane.name, m.name) for lane in lanes().values() for m in lane.modes if m.calibrated}
    assert calibrated == {("tflite", "int8"), ("tflite", "int8-io"), ("tflite", "int16x8"), ("tflite", "int8-mixed"),
                          ("coreml", "int8"), ("coreml", "int8-mixed")}


def test_lane_options_are_frozen_dataclasses_with_help():
    for lane in lanes().values():
        if lane.options is None:
            continue
        assert dataclasses.is_dataclass(lane.options) and lane.options.__dataclass_params__.frozen
        assert all(f.metadata.get("help") for f in dataclasses.fields(lane.options)), lane.name


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(UsageError, match="tflite has no mode palettize-4; valid: fp32, fp16"):
        lanes()["tflite"].mode("palettize-4")
