"""A float TFLite graph -> an ONNX graph, in pure Python (the ``tflite`` flatbuffer reader and ``onnx``; no
TensorFlow).

It covers the operators of MediaPipe's BlazeFace detectors: CONV_2D, DEPTHWISE_CONV_2D, ADD, RELU, RELU6,
MAX_POOL_2D, PAD, RESIZE_BILINEAR, RESHAPE and DEQUANTIZE of float16 weights (folded into float32 constants).
Activations stay NCHW inside the ONNX (what ONNX Runtime's convolutions run fastest); the graph's NHWC input
and its outputs keep their TFLite layout, names and shapes, so the ONNX answers exactly what the TFLite does.
Any other operator, or a quantized (int8) tensor, is a ``TfliteConversionError``.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class TfliteConversionError(ValueError):
    """The TFLite file uses something this converter does not translate."""


_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}  # tflite.TensorType values
_SAME, _VALID = 0, 1  # tflite.Padding
_ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}  # tflite.ActivationFunctionType NONE, RELU, RELU6


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra pixel goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def convert_tflite(data: bytes, *, graph_name: str = "tflite", opset: int = 17) -> Any:
    """The TFLite model in ``data`` (its first subgraph) as an ``onnx.ModelProto``. Raises
    TfliteConversionError for an operator or tensor type outside the supported set."""
    try:
        import tflite
    except ImportError:
        from aunet.faces.base import DependencyError

        raise DependencyError("converting a TFLite model needs the tflite package (pip install tflite)") from None
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise TfliteConversionError(f"expected one subgraph, the model has {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))

    def tensor(i: int):
        return graph.Tensors(int(i))

    def name(i: int) -> str:
        return tensor(i).Name().decode()

    def shape(i: int) -> list[int]:
        t = tensor(i)
        return [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def constant(i: int) -> np.ndarray | None:
        t = tensor(i)
        buf = model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        if t.Type() not in _NUMPY_TYPES:
            raise TfliteConversionError(f"tensor {name(i)!r} has TFLite type {t.Type()} "
                                        "(quantized models are not supported)")
        return buf.DataAsNumpy().view(np.dtype(_NUMPY_TYPES[t.Type()]).newbyteorder("<")).reshape(shape(i))

    consts: dict[int, np.ndarray] = {}  # tensor index -> float32 / int32 value (weights, folded DEQUANTIZE)
    for i in range(graph.TensorsLength()):
        value = constant(i)
        if value is not None:
            consts[i] = value
    nodes: list = []
    initializers: dict[str, np.ndarray] = {}
    counter = iter(range(1 << 30))

    def init(value: np.ndarray, hint: str) -> str:
        key = f"{hint}__{next(counter)}"
        initializers[key] = value
        return key

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(nodes)}", **attrs))
        return output

    def activation(value: str, fused: int, out: str) -> str:
        if fused not in _ACTIVATIONS:
            raise TfliteConversionError(f"fused activation {fused} is not supported")
        act = _ACTIVATIONS[fused]
        if act is None:
            return node("Identity", [value], out)
        if act == "Relu6":
            return node("Clip", [value, init(np.float32(0), "zero"), init(np.float32(6), "six")], out)
        return node(act, [value], out)

    def options(op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    inputs = [int(i) for i in graph.InputsAsNumpy()]
    outputs = [int(i) for i in graph.OutputsAsNumpy()]
    onnx_inputs, onnx_outputs = [], []
    for i in inputs:  # NHWC in, NCHW inside
        if tensor(i).Type() != 0 or len(shape(i)) != 4:
            raise TfliteConversionError(f"input {name(i)!r} must be float32 NHWC")
        onnx_inputs.append(helper.make_tensor_value_info(name(i), TensorProto.FLOAT, shape(i)))
        node("Transpose", [name(i)], f"{name(i)}__nchw", perm=[0, 3, 1, 2])
    nchw = {i: f"{name(i)}__nchw" for i in inputs}  # tensor index -> its NCHW value in the ONNX

    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        kind = codes[op.OpcodeIndex()]
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        out_name = f"{name(out)}__nchw"  # only RESHAPE writes a graph output under its own name (its layout)
        if kind == "DEQUANTIZE":
            if ins[0] not in consts:
                raise TfliteConversionError(f"DEQUANTIZE of a non-constant tensor {name(ins[0])!r}")
            consts[out] = consts[ins[0]].astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, b = ins[0], consts.get(ins[1]), consts.get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            if w is None:
                raise TfliteConversionError(f"{kind} with non-constant weights")
            depthwise = kind == "DEPTHWISE_CONV_2D"
            opts = options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            in_shape = shape(x)
            if depthwise:  # [1, kh, kw, C * multiplier] -> [C * multiplier, 1, kh, kw], one group per input channel
                weight, group = w.transpose(3, 0, 1, 2), in_shape[3]
            else:  # OHWI -> OIHW
                weight, group = w.transpose(0, 3, 1, 2), 1
            kh, kw = weight.shape[2:]
            dil = (opts.DilationHFactor() or 1, opts.DilationWFactor() or 1)
            strides = (opts.StrideH(), opts.StrideW())
            if opts.Padding() == _SAME:
                (t, bt), (lf, r) = (_same_pads(in_shape[1], kh, strides[0], dil[0]),
                                    _same_pads(in_shape[2], kw, strides[1], dil[1]))
            else:
                t = bt = lf = r = 0
            args = [nchw[x], init(np.ascontiguousarray(weight, np.float32), f"{name(ins[1])}")]
            if b is not None:
                args.append(init(b.astype(np.float32), name(ins[2])))
            conv = node("Conv", args, f"{name(out)}__conv", group=group, strides=list(strides), dilations=list(dil),
                        pads=[t, lf, bt, r], kernel_shape=[int(kh), int(kw)])
            nchw[out] = activation(conv, opts.FusedActivationFunction(), out_name)
        elif kind == "ADD":
            opts = options(op, tflite.AddOptions)

            def operand(i: int) -> str:
                if i in nchw:
                    return nchw[i]
                value = consts[i].astype(np.float32)  # NHWC broadcasting -> NCHW
                value = value.reshape(-1, 1, 1) if value.ndim == 1 else value.transpose(0, 3, 1, 2) \
                    if value.ndim == 4 else value
                return init(np.ascontiguousarray(value), name(i))

            a, c = operand(ins[0]), operand(ins[1])
            nchw[out] = activation(node("Add", [a, c], f"{name(out)}__add"), opts.FusedActivationFunction(), out_name)
        elif kind in ("RELU", "RELU6"):
            nchw[out] = activation(nchw[ins[0]], 1 if kind == "RELU" else 3, out_name)
        elif kind == "MAX_POOL_2D":
            opts = options(op, tflite.Pool2DOptions)
            kh, kw, strides = opts.FilterHeight(), opts.FilterWidth(), (opts.StrideH(), opts.StrideW())
            h, w_ = shape(ins[0])[1:3]
            (t, bt), (lf, r) = ((_same_pads(h, kh, strides[0]), _same_pads(w_, kw, strides[1]))
                                if opts.Padding() == _SAME else ((0, 0), (0, 0)))
            pool = node("MaxPool", [nchw[ins[0]]], f"{name(out)}__pool", kernel_shape=[kh, kw], strides=list(strides),
                        pads=[t, lf, bt, r])
            nchw[out] = activation(pool, opts.FusedActivationFunction(), out_name)
        elif kind == "PAD":
            pads = consts.get(ins[1])
            if pads is None or pads.shape != (4, 2):
                raise TfliteConversionError("PAD needs constant NHWC paddings [4, 2]")
            order = [0, 3, 1, 2]  # NHWC rows -> NCHW
            onnx_pads = [int(pads[d, 0]) for d in order] + [int(pads[d, 1]) for d in order]
            nchw[out] = node("Pad", [nchw[ins[0]], init(np.asarray(onnx_pads, np.int64), "pads")], out_name)
        elif kind == "RESIZE_BILINEAR":
            opts = options(op, tflite.ResizeBilinearOptions)
            mode = ("align_corners" if opts.AlignCorners() else "half_pixel" if opts.HalfPixelCenters()
                    else "asymmetric")
            n, h, w_, c = shape(out)
            sizes = init(np.asarray([n, c, h, w_], np.int64), "sizes")
            nchw[out] = node("Resize", [nchw[ins[0]], "", "", sizes], out_name, mode="linear",
                             coordinate_transformation_mode=mode)
        elif kind == "RESHAPE":  # back to TFLite's NHWC element order first
            if len(shape(ins[0])) != 4:
                raise TfliteConversionError("RESHAPE of a tensor that is not 4-D is not supported")
            nhwc = node("Transpose", [nchw[ins[0]]], f"{name(out)}__nhwc", perm=[0, 2, 3, 1])
            target = init(np.asarray(shape(out), np.int64), "shape")
            reshaped = node("Reshape", [nhwc, target], name(out) if out in outputs else f"{name(out)}__flat")
            if len(shape(out)) == 4 and out not in outputs:
                reshaped = node("Transpose", [reshaped], out_name, perm=[0, 3, 1, 2])
            nchw[out] = reshaped
        else:
            raise TfliteConversionError(f"TFLite operator {kind} is not supported")

    for i in outputs:
        if nchw.get(i) != name(i):  # an output produced in NCHW: give it back in NHWC
            if i not in nchw:
                raise TfliteConversionError(f"output {name(i)!r} is not computed by the graph")
            perm = [0, 2, 3, 1] if len(shape(i)) == 4 else list(range(len(shape(i))))
            node("Transpose", [nchw[i]], name(i), perm=perm)
        onnx_outputs.append(helper.make_tensor_value_info(name(i), TensorProto.FLOAT, shape(i)))
    onnx_graph = helper.make_graph(nodes, graph_name, onnx_inputs, onnx_outputs,
                                   [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="aunet.faces.tflite_onnx")
    onnx_model.ir_version = 8  # ONNX Runtime 1.16+ reads it
    onnx.checker.check_model(onnx_model)
    return onnx_model
