import numpy as np
import pytest

from bridge.base.errors import UsageError
from bridge.base.tensors import TensorSpec, apply_overrides, parse_dynamic, parse_input, synthetic_samples


def test_parse_input():
    o = parse_input("image:1,3,224,224:float16")
    assert (o.name, o.shape, o.dtype) == ("image", (1, 3, 224, 224), "float16")
    assert parse_input("ids:1,16").dtype is None
    for bad in ("image", "image:1,x", "image:1,3:complex", "image:0,3"):
        with pytest.raises(UsageError):
            parse_input(bad)


def test_overrides_and_dynamic():
    specs = [TensorSpec("x", (1, 3, 8, 8))]
    out = apply_overrides(specs, [parse_input("x:2,3,8,8")], [parse_dynamic("x:0")])
    assert out[0].shape == (2, 3, 8, 8) and out[0].dynamic == (0,)
    with pytest.raises(UsageError, match="no input of that name"):
        apply_overrides(specs, [parse_input("y:1")])
    with pytest.raises(UsageError, match="rank 4"):
        apply_overrides(specs, [], [("x", 4)])


def test_missing_shape_asks_for_input():
    with pytest.raises(UsageError, match="--input x:D0"):
        apply_overrides([TensorSpec("x", (-1, 3))], [])


def test_samples_are_seeded():
    specs = [TensorSpec("x", (1, 4)), TensorSpec("ids", (1, 5), "int64", int_range=(0, 7))]
    a, b = synthetic_samples(specs, 3, 1), synthetic_samples(specs, 3, 1)
    assert all(np.array_equal(x["x"], y["x"]) for x, y in zip(a.feeds, b.feeds, strict=True))
    assert all(f["ids"].max() < 7 and f["ids"].dtype == np.int64 for f in a.feeds)
