"""Core ML modes as data: deployment target, compute precision and weight compression per mode.

Weights below `WEIGHT_THRESHOLD` elements stay fp16 in every compressed mode (coremltools' own
default, kept deliberately: biases, norms and tiny kernels are a rounding error of the file but
the most sensitive tensors to quantize).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.base.modes import FP16_PARITY, FP32_PARITY, FULL_INT, WEIGHT_ONLY, Mode, ModeSpec

WEIGHT_THRESHOLD = 2048
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
DEFAULT_TARGET = "iOS16"


@dataclass(frozen=True)
class CoreMLMode:
    precision: str = "fp16"  # compute precision: fp16 | fp32
    compression: str | None = None  # linear | palettize | blockwise
    nbits: int = 8
    activations: bool = False  # int8 activations via quantize/dequantize pairs
    # palettize: output channels sharing one table from `GROUPED_TARGET` on (per-tensor tables before)
    group_size: int | None = None
    # palettize from `GROUPED_TARGET` on: the weights read by these MIL ops get int8 per channel instead
    int8_ops: tuple[str, ...] = ()


# Grouped-channel look-up tables (constexpr_lut_to_dense with one table per group of output
# channels) exist from iOS18's opset on. Measured with benchmarks/palettize_groups.py (README
# "Grouped palettization"), worst output on 8 held-out realistic samples, fp16 compute:
#   PP-OCRv4 det (trained): per tensor 3.5 dB, 8 channels 10.1 dB, 16 channels 5.7 dB, 32 channels 8.6 dB
#   all-MiniLM-L6-v2 (trained): per tensor 10.3 dB (cosine 0.953), 8 channels 10.6 dB (0.957)
# coremltools silently leaves a weight uncompressed when the group size does not divide its output
# channels (12 of PP-OCR's 42 large weights at 16): 8 divides the most channel counts. A gather
# table (an embedding: 30522 token rows in MiniLM) has no output channels, so it gets one table.
# No 4-bit table recipe coremltools offers brings MiniLM to the 4-bit threshold (15 dB, 0.98): each
# class of its linear layers alone at 4 bits costs 15.3-20.2 dB and the costs add up (README). So
# from iOS18 the weights of fully connected layers (`linear`) stay at 8 bits, per channel, and the
# report lists them (`palettes`).
GROUPED_TARGET = "iOS18"
GROUP_SIZE = 8
INT8_OPS = ("linear",)


MODES = (
    ModeSpec(Mode.FP32, FP32_PARITY, config=CoreMLMode(precision="fp32"), description="float32"),
    ModeSpec(Mode.FP16, FP16_PARITY, fp16_compute=True, config=CoreMLMode(), description="float16 weights and compute"),
    ModeSpec(Mode.FP16_MIXED, FP16_PARITY, fp16_compute=True, mixed="fp16", config=CoreMLMode(),
             description="float16 weights and compute, the layers --coreml-keep names in float32"),
    ModeSpec(Mode.INT8_WEIGHTS, WEIGHT_ONLY, fp16_compute=True, min_target="iOS16",
             config=CoreMLMode(compression="linear", nbits=8),
             description="int8 weights (per channel), float compute"),
    ModeSpec(Mode.INT8, FULL_INT, calibrated=True, fp16_compute=True, needs_ranges=True, min_target="iOS17",
             config=CoreMLMode(compression="linear", nbits=8, activations=True),
             description="int8 weights and activations, calibrated, float I/O"),
    ModeSpec(Mode.INT8_MIXED, FULL_INT, calibrated=True, fp16_compute=True, needs_ranges=True, mixed="int8",
             min_target="iOS17", config=CoreMLMode(compression="linear", nbits=8, activations=True),
             description="as int8, with the kept layers' outputs float16 (their weights int8, or float16 with "
                         "--coreml-keep-weights or the search's second tier)"),
    ModeSpec(Mode.PALETTIZE_8, WEIGHT_ONLY, fp16_compute=True, min_target="iOS16",
             config=CoreMLMode(compression="palettize", nbits=8),
             description="k-means look-up table of 256 weights"),
    ModeSpec(Mode.PALETTIZE_6, WEIGHT_ONLY, fp16_compute=True, min_target="iOS16",
             config=CoreMLMode(compression="palettize", nbits=6),
             description="k-means look-up table of 64 weights"),
    ModeSpec(Mode.PALETTIZE_4, FULL_INT, fp16_compute=True, min_target="iOS16",
             config=CoreMLMode(compression="palettize", nbits=4, group_size=GROUP_SIZE, int8_ops=INT8_OPS),
             description=f"k-means look-up tables of 16 weights (from {GROUPED_TARGET}: one per {GROUP_SIZE} output "
                         "channels, fully connected layers int8; one per tensor before)"),
    ModeSpec(Mode.INT4_WEIGHTS, FULL_INT, fp16_compute=True, min_target="iOS18",
             config=CoreMLMode(compression="blockwise", nbits=4),
             description="4-bit weights in blocks of 16 input channels"),
)
SPECS = {m.name: m for m in MODES}
CONFIG = {m.name: m.config for m in MODES}


def target_index(name: str) -> int:
    return TARGETS.index(name)


def mode_target(mode: str, requested: str) -> str:
    """The deployment target an artifact of `mode` gets: the requested one, raised to the mode's
    minimum when needed."""
    need = SPECS[mode].min_target or TARGETS[0]
    return need if target_index(need) > target_index(requested) else requested


def palette_groups(mode: str, target: str) -> int | None:
    """Output channels per look-up table for `mode` at deployment target `target`; None: one table
    per tensor (the mode has no grouped tables, or the target predates them)."""
    size = CONFIG[mode].group_size
    return size if size and target_index(target) >= target_index(GROUPED_TARGET) else None


def int8_ops(mode: str, target: str) -> tuple[str, ...]:
    """The MIL ops whose weights a palettized `mode` keeps at 8 bits at `target` (none before
    grouped tables exist: older targets keep the mode as it was)."""
    return CONFIG[mode].int8_ops if palette_groups(mode, target) else ()


def uncompressed_warning(mode: str, compressed: int, kept: bool) -> list[str]:
    """The warning a compressed mode's artifact gets when it compressed no weight (`kept`: the mode kept
    layers in float, whose weights were the others)."""
    if not CONFIG[mode].compression or compressed:
        return []
    why = "the kept layers hold the others" if kept else "none has"
    return [f"{mode}: no weight tensor was compressed ({why} {WEIGHT_THRESHOLD}+ elements in a shape the mode "
            "accepts)"]


def compress(mlmodel, mode: str, target: str, group_size: int | None = None, keep: frozenset[str] = frozenset()):
    """Apply the mode's weight compression with coremltools.optimize.coreml. `group_size` overrides
    the mode's palette groups (benchmarks measure the choice with it); `keep` names weight constants
    left uncompressed (a mixed mode's kept layers)."""
    cfg = CONFIG[mode]
    if cfg.compression is None:
        return mlmodel
    from coremltools.optimize import coreml as opt

    skip = {name: None for name in sorted(keep)}
    if cfg.compression == "linear":
        return _int8_per_channel(mlmodel, opt.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD),
            skip=skip)
    if cfg.compression == "blockwise":
        # Blocks of 16 input channels: coremltools silently skips a weight whose input-channel count the
        # block size does not divide, and 32 (its usual choice) skipped every conv of a 16/48-channel net.
        op = opt.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=16, weight_threshold=WEIGHT_THRESHOLD)
        return opt.linear_quantize_weights(mlmodel, opt.OptimizationConfig(global_config=op))
    return _palettize(mlmodel, mode, target, group_size)


def _int8_per_channel(mlmodel, op, only: tuple[str, ...] = (), skip: dict | None = None):
    """int8 weights, one scale per output channel: every weight, or those read by the ops `only` names;
    none of the constants `skip` names (maps each to None)."""
    from coremltools.optimize import coreml as opt

    config = opt.OptimizationConfig(global_config=None, op_type_configs=dict.fromkeys(only, op),
                                    op_name_configs=skip) if only else \
        opt.OptimizationConfig(global_config=op, op_name_configs=skip)
    return opt.linear_quantize_weights(mlmodel, config)


def _palettize(mlmodel, mode: str, target: str, group_size: int | None):
    """Look-up tables; from GROUPED_TARGET on, grouped ones, gather tables per tensor (their rows are
    tokens, not channels, and rarely divide by the group) and the `int8_ops` weights at 8 bits."""
    from coremltools.optimize import coreml as opt

    cfg = CONFIG[mode]
    groups = group_size or palette_groups(mode, target)
    base = {"mode": "kmeans", "nbits": cfg.nbits, "weight_threshold": WEIGHT_THRESHOLD}
    if not groups:
        op = opt.OpPalettizerConfig(granularity="per_tensor", **base)
        return opt.palettize_weights(mlmodel, opt.OptimizationConfig(global_config=op))
    wider = int8_ops(mode, target)
    by_type = {"gather": opt.OpPalettizerConfig(granularity="per_tensor", **base), **dict.fromkeys(wider)}
    op = opt.OpPalettizerConfig(granularity="per_grouped_channel", group_size=groups, **base)
    mlmodel = opt.palettize_weights(mlmodel, opt.OptimizationConfig(global_config=op, op_type_configs=by_type))
    if not wider:
        return mlmodel
    return _int8_per_channel(mlmodel, opt.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD), wider)


_CONSTEXPR = ("constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_blockwise_shift_scale",
              "constexpr_sparse_to_dense")


def compressed_bytes_per_param(program) -> tuple[int, float | None]:
    """Over the weights the mode compressed: (their element count, stored bytes per element),
    counting every input of each decompression op (packed data, scales, offsets, tables)."""
    elements, stored = 0, 0
    for op in _all_ops(program):
        if not any(op.op_type.startswith(c) for c in _CONSTEXPR):
            continue
        out = op.outputs[0]
        elements += int(_numel(out.shape))
        for var in op.inputs.values():
            val = getattr(var, "val", None)
            if val is not None and hasattr(val, "nbytes"):
                stored += _stored_bytes(var)
    return elements, (round(stored / elements, 4) if elements else None)


def int8_weights(program) -> list[str]:
    """The weights stored as int8 with a scale (the ops `int8_ops` names, in a palettized mode)."""
    return [op.outputs[0].name for op in _all_ops(program) if op.op_type == "constexpr_blockwise_shift_scale"
            and _is_int8(op.data)]


def _is_int8(var) -> bool:
    from coremltools.converters.mil.mil import types

    return var.dtype == types.int8


def _all_ops(program):
    stack = [program.functions["main"]]
    while stack:
        block = stack.pop()
        for op in block.operations:
            yield op
            stack.extend(op.blocks)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _stored_bytes(var) -> int:
    """Sub-byte types (uint4, int4, uint6...) are stored packed."""
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    bits = types.type_mapping.builtin_to_string(dtype)
    width = {"uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "int4": 4, "uint6": 6}.get(bits)
    if width:
        return (_numel(var.shape) * width + 7) // 8
    return int(var.val.nbytes)
