// The reference side of check.sh: runs the RVM tfjs graph with TensorFlow.js's own CPU backend
// (the runtime the package was made for) on the frames check.py wrote, carrying the recurrent
// states from frame to frame as the model's users do.
//
// usage: node run_tfjs.js MODEL_DIR CASE_DIR
//   MODEL_DIR: rvm.json and rvm.bin; CASE_DIR/inputs.json: {frames: [{id, inputs: [{name, shape,
//   file} | {name, prev}]}]} with raw float32 files. Writes CASE_DIR/out_<id>_<output>.f32 and
//   CASE_DIR/outputs.json.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs-core");
require("@tensorflow/tfjs-backend-cpu");
const tfc = require("@tensorflow/tfjs-converter");

// tfjs output nodes of the graph (signature in rvm.json) and their names.
const OUTPUTS = { Identity_1: "pha", Identity_2: "r1o", Identity_3: "r2o", Identity_4: "r3o", Identity_5: "r4o" };

async function main() {
  const [dir, caseDir] = process.argv.slice(2);
  await tf.setBackend("cpu");
  const j = JSON.parse(fs.readFileSync(path.join(dir, "rvm.json")));
  const bin = fs.readFileSync(path.join(dir, "rvm.bin"));
  const model = await tfc.loadGraphModel(tf.io.fromMemory({
    modelTopology: j.modelTopology,
    weightSpecs: [].concat(...j.weightsManifest.map((g) => g.weights)),
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
    format: j.format, generatedBy: j.generatedBy, convertedBy: j.convertedBy, signature: j.signature,
  }));
  const spec = JSON.parse(fs.readFileSync(path.join(caseDir, "inputs.json")));
  const result = {};
  let prev = {};
  for (const frame of spec.frames) {
    const feed = {};
    for (const input of frame.inputs) {
      if (input.prev) {
        feed[input.name] = prev[input.prev].clone();
        continue;
      }
      const buf = fs.readFileSync(path.join(caseDir, input.file));
      feed[input.name] = tf.tensor(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), input.shape);
    }
    const outs = await model.executeAsync(feed, Object.keys(OUTPUTS));
    const info = {};
    const names = Object.values(OUTPUTS);
    for (let k = 0; k < outs.length; k++) {
      const data = await outs[k].data();
      const file = `out_${frame.id}_${names[k]}.f32`;
      fs.writeFileSync(path.join(caseDir, file), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      info[names[k]] = { shape: outs[k].shape, file };
    }
    result[frame.id] = info;
    tf.dispose(Object.values(feed));
    tf.dispose(Object.values(prev));
    prev = {};
    names.forEach((name, k) => { prev[name] = outs[k]; });
  }
  fs.writeFileSync(path.join(caseDir, "outputs.json"), JSON.stringify(result));
}

main().catch((e) => { console.error(e); process.exit(1); });
