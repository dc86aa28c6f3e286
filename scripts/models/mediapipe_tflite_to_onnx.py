"""Convert MediaPipe's selfie_segmentation.tflite to ONNX (NCHW), so ONNX Runtime / tract can run it.

usage: mediapipe_tflite_to_onnx.py IN.tflite OUT.onnx

Why our own converter: tract-tflite cannot read the model (fp16 DEQUANTIZE weights and the MediaPipe
custom op Convolution2DTransposeBias), and the general converters pull in TensorFlow. The graph uses
a dozen ops, so we translate them one by one, folding the fp16 weights into fp32 initializers.
The whole graph is laid out NCHW, so the model takes `input` float [1,3,H,W] RGB in [0,1] and
returns `output` float [1,1,H,W] (person probability), the layout the Rust engine feeds the others.
Unknown ops stop the conversion rather than produce a wrong model.
"""
import struct
import sys

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPSET, IR_VERSION = 17, 8  # HardSwish needs opset >= 14; IR 8 keeps older runtimes happy
BUILTIN = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
NUMPY_TYPE = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
              tflite.TensorType.INT32: np.int32}


class Converter:
    def __init__(self, data):
        self.model = tflite.Model.GetRootAsModel(data, 0)
        assert self.model.SubgraphsLength() == 1
        self.graph = self.model.Subgraphs(0)
        self.const = {}  # tensor index -> numpy value, NHWC as stored in the file
        self.nodes, self.inits, self.init_names = [], [], set()
        for i in range(self.graph.TensorsLength()):
            t = self.graph.Tensors(i)
            buf = self.model.Buffers(t.Buffer())
            if buf.DataLength():
                self.const[i] = np.frombuffer(buf.DataAsNumpy().tobytes(), NUMPY_TYPE[t.Type()]).reshape(self.shape(i))
        self.input_idx, self.output_idx = self.graph.Inputs(0), self.graph.Outputs(0)

    def shape(self, i):
        return [int(d) for d in self.graph.Tensors(i).ShapeAsNumpy()]

    def name(self, i):
        return {self.input_idx: "input", self.output_idx: "output"}.get(i, "t%d" % i)

    def init(self, name, value):
        if name not in self.init_names:  # a constant may feed several ops
            self.init_names.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def operand(self, i):
        """Activation name, or an initializer for a constant operand, moved to NCHW broadcasting."""
        if i not in self.const:
            return self.name(i)
        v = self.const[i].astype(np.float32)
        v = v.transpose(0, 3, 1, 2) if v.ndim == 4 else v.reshape(-1, 1, 1) if v.ndim == 1 else v
        return self.init("c%d" % i, v)

    def emit(self, op, inputs, out, fused=0, **attrs):
        """Add a node; a fused activation becomes a second node after it."""
        if fused == tflite.ActivationFunctionType.NONE:
            self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
            return
        pre = out + "_linear"
        self.nodes.append(helper.make_node(op, inputs, [pre], **attrs))
        if fused == tflite.ActivationFunctionType.RELU:
            self.nodes.append(helper.make_node("Relu", [pre], [out]))
        elif fused == tflite.ActivationFunctionType.RELU6:
            lo, hi = self.init(out + "_lo", np.float32(0)), self.init(out + "_hi", np.float32(6))
            self.nodes.append(helper.make_node("Clip", [pre, lo, hi], [out]))
        else:
            raise SystemExit("unsupported fused activation %d" % fused)

    @staticmethod
    def same_pads(size, kernel, stride, dilation=(1, 1)):
        """TFLite SAME padding as ONNX [top, left, bottom, right]; the odd pixel goes last."""
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    @staticmethod
    def options(op, cls):
        opt, table = cls(), op.BuiltinOptions()
        opt.Init(table.Bytes, table.Pos)
        return opt

    def convert(self):
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            kind = BUILTIN[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            if kind == "CUSTOM":
                kind = code.CustomCode().decode()
            handler = getattr(self, "op_" + kind, None)
            if handler is None:
                raise SystemExit("unsupported op " + kind)
            ins = [op.Inputs(j) for j in range(op.InputsLength())]
            handler(op, ins, op.Outputs(0))
        h, w, c = self.shape(self.input_idx)[1:]
        graph = helper.make_graph(
            self.nodes, "mediapipe_selfie",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, h, w])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="clearbg-mediapipe_tflite_to_onnx")
        model.ir_version = IR_VERSION
        return model

    # --- op handlers: (op, input tensor indices, output tensor index) ---
    def op_DEQUANTIZE(self, op, ins, out):  # fp16 weights: fold to fp32 now, no node
        self.const[out] = self.const[ins[0]].astype(np.float32)

    def op_CONV_2D(self, op, ins, out, depthwise=False):
        o = self.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        w = self.const[ins[1]]
        if depthwise:  # [1,kh,kw,C] -> [C,1,kh,kw], one group per channel
            assert o.DepthMultiplier() == 1
            weight, group = w.transpose(3, 0, 1, 2), self.shape(ins[0])[3]
        else:  # [O,kh,kw,I] -> [O,I,kh,kw]
            weight, group = w.transpose(0, 3, 1, 2), 1
        kernel, stride = weight.shape[2:], (o.StrideH(), o.StrideW())
        dilation = (o.DilationHFactor(), o.DilationWFactor())
        pads = (self.same_pads(self.shape(ins[0])[1:3], kernel, stride, dilation)
                if o.Padding() == tflite.Padding.SAME else [0, 0, 0, 0])
        inputs = [self.name(ins[0]), self.init("w%d" % ins[1], weight)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.init("b%d" % ins[2], self.const[ins[2]]))
        self.emit("Conv", inputs, self.name(out), o.FusedActivationFunction(), kernel_shape=list(kernel),
                  strides=list(stride), dilations=list(dilation), pads=pads, group=group)

    def op_DEPTHWISE_CONV_2D(self, op, ins, out):
        self.op_CONV_2D(op, ins, out, depthwise=True)

    def op_AVERAGE_POOL_2D(self, op, ins, out):
        o = self.options(op, tflite.Pool2DOptions)
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        pads = (self.same_pads(self.shape(ins[0])[1:3], kernel, stride)
                if o.Padding() == tflite.Padding.SAME else [0, 0, 0, 0])
        # TFLite averages over the valid pixels only
        self.emit("AveragePool", [self.name(ins[0])], self.name(out), o.FusedActivationFunction(),
                  kernel_shape=list(kernel), strides=list(stride), pads=pads, count_include_pad=0)

    def op_ADD(self, op, ins, out):
        o = self.options(op, tflite.AddOptions)
        self.emit("Add", [self.operand(i) for i in ins], self.name(out), o.FusedActivationFunction())

    def op_MUL(self, op, ins, out):
        o = self.options(op, tflite.MulOptions)
        self.emit("Mul", [self.operand(i) for i in ins], self.name(out), o.FusedActivationFunction())

    def op_RELU(self, op, ins, out):
        self.emit("Relu", [self.name(ins[0])], self.name(out))

    def op_HARD_SWISH(self, op, ins, out):
        self.emit("HardSwish", [self.name(ins[0])], self.name(out))

    def op_LOGISTIC(self, op, ins, out):
        self.emit("Sigmoid", [self.name(ins[0])], self.name(out))

    def op_RESIZE_BILINEAR(self, op, ins, out):
        o = self.options(op, tflite.ResizeBilinearOptions)
        h, w = (int(v) for v in self.const[ins[1]].reshape(-1))
        mode = ("align_corners" if o.AlignCorners() else
                "half_pixel" if o.HalfPixelCenters() else "asymmetric")
        sizes = self.init("size%d" % out, np.array([1, self.shape(ins[0])[3], h, w], np.int64))
        self.emit("Resize", [self.name(ins[0]), "", "", sizes], self.name(out),
                  mode="linear", coordinate_transformation_mode=mode)

    def op_Convolution2DTransposeBias(self, op, ins, out):
        # MediaPipe custom op = TRANSPOSE_CONV + bias; its options are a raw
        # TfLiteTransposeConvParams {padding, stride_w, stride_h} (int32 each).
        _, stride_w, stride_h = struct.unpack_from("<3i", op.CustomOptionsAsNumpy().tobytes())
        weight = self.const[ins[1]].transpose(3, 0, 1, 2)  # [O,kh,kw,I] -> [I,O,kh,kw]
        kh, kw = weight.shape[2:]
        (ih, iw), (oh, ow) = self.shape(ins[0])[1:3], self.shape(out)[1:3]
        # crop whatever the full transposed conv produces beyond the recorded output size
        th, tw = (ih - 1) * stride_h + kh - oh, (iw - 1) * stride_w + kw - ow
        self.emit("ConvTranspose", [self.name(ins[0]), self.init("w%d" % ins[1], weight),
                                    self.init("b%d" % ins[2], self.const[ins[2]])],
                  self.name(out), kernel_shape=[kh, kw], strides=[stride_h, stride_w],
                  pads=[th // 2, tw // 2, th - th // 2, tw - tw // 2])


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as f:
        model = Converter(f.read()).convert()
    onnx.checker.check_model(model, full_check=True)  # full_check also runs shape inference
    onnx.save(model, sys.argv[2])
    print("wrote %s (%d nodes)" % (sys.argv[2], len(model.graph.node)))


if __name__ == "__main__":
    main()
