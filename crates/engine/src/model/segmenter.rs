//! Frame → foreground mask at the model's own resolution, with each model's exact pre- and
//! post-processing (see `shared/reference/models.md` §3).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use ndarray::Array4;
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use super::catalogue::{verify, Precision, Tier, MODNET, RVM, SELFIE};
use super::recurrent::{self, Recurrent};
use super::runtime::Runtime;
use crate::error::{EngineError, Result};
use crate::frame::{Mask, RgbFrame, YuvFrame};
use crate::home::Home;
use crate::matte;

/// One network and how to feed it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Net {
    /// MediaPipe selfie: 256x256 stretched, RGB in [0,1].
    Selfie,
    /// MODNet: short side 512 (MODNet's reference-size rule), multiples of 32, (v-127.5)/127.5.
    Modnet,
    /// ISNet (imgly): 1024x1024 stretched, (v-128)/256.
    Isnet,
    /// Robust Video Matting: long side at most 512, RGB in [0,1], recurrent states.
    Rvm,
}

impl Net {
    fn from_file(file: &str) -> Net {
        match file {
            SELFIE => Net::Selfie,
            MODNET => Net::Modnet,
            RVM => Net::Rvm,
            _ => Net::Isnet,
        }
    }

    /// About a millisecond a frame: better on one thread than waking a pool.
    fn is_tiny(self) -> bool {
        self == Net::Selfie
    }

    /// (mean, std) of the per-channel normalisation `x = (v - mean) / std`.
    fn normalisation(self) -> (f32, f32) {
        match self {
            Net::Selfie | Net::Rvm => (0.0, 255.0),
            Net::Modnet => (127.5, 127.5),
            Net::Isnet => (128.0, 256.0),
        }
    }

    /// The input size (width, height) for a frame of `w`x`h`. `side` overrides the size rule's
    /// reference side (ISNet's square side, MODNet's short side) for experiments.
    fn input_size(self, w: u32, h: u32, side: Option<u32>) -> (u32, u32) {
        match self {
            Net::Selfie => (256, 256),
            Net::Isnet => {
                let side = side.unwrap_or(ISNET_SIDE);
                (side, side)
            }
            Net::Rvm => recurrent::input_size(w, h),
            Net::Modnet => {
                let reference = side.unwrap_or(MODNET_SIDE);
                let (mut rw, mut rh) = (w, h);
                if w.max(h) < reference || w.min(h) > reference {
                    if w >= h {
                        rh = reference;
                        rw = (w as f64 / h as f64 * reference as f64) as u32;
                    } else {
                        rw = reference;
                        rh = (h as f64 / w as f64 * reference as f64) as u32;
                    }
                }
                ((rw - rw % 32).max(32), (rh - rh % 32).max(32))
            }
        }
    }
}

/// ISNet's square input side.
const ISNET_SIDE: u32 = 1024;
/// MODNet's reference short side.
const MODNET_SIDE: u32 = 512;

struct LoadedNet {
    net: Net,
    session: Session,
    /// The states a recurrent network carries between frames.
    recurrent: Option<Recurrent>,
    /// The model file and its sha256, to open it afresh.
    file: PathBuf,
    sha256: String,
    /// The session was loaded from a saved optimised graph, not yet shown to run.
    from_saved_graph: bool,
}

impl LoadedNet {
    fn run(&mut self, input: &Array4<f32>, options: &RunOptions) -> Result<Mask> {
        match &mut self.recurrent {
            Some(recurrent) => recurrent.run(&mut self.session, input, options),
            None => run(&mut self.session, input, options),
        }
    }
}

/// Runs a tier's model(s) on frames. Not thread-safe; one per pipeline.
pub struct Segmenter {
    tier: Tier,
    device: crate::model::Device,
    nets: Vec<LoadedNet>,
    resizer: Resizer,
    interrupt: Interrupt,
    /// To open a model afresh when its saved graph fails.
    runtime: Runtime,
    /// Overrides the first model's reference side ([`Segmenter::with_input_side`]).
    side: Option<u32>,
}

/// Stops the model run in progress of one [`Segmenter`], from another thread: a large model
/// takes seconds a frame, and a cancelled job should not wait for it.
#[derive(Clone)]
pub struct Interrupt {
    options: Arc<RunOptions>,
    /// Set while the runs are stopped: a run that fails then failed for that, not for its model.
    fired: Arc<AtomicBool>,
}

impl Interrupt {
    fn new() -> Result<Interrupt> {
        Ok(Interrupt { options: Arc::new(RunOptions::new()?), fired: Arc::new(AtomicBool::new(false)) })
    }

    /// Makes the current (and every later) run fail at once, until [`Interrupt::reset`].
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Err(e) = self.options.terminate() {
            tracing::warn!(error = %e, "interrupting a model run");
        }
    }

    /// Lets runs go ahead again (before the next video).
    pub fn reset(&self) {
        if let Err(e) = self.options.unterminate() {
            tracing::warn!(error = %e, "resetting a model interrupt");
        }
        self.fired.store(false, Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Segmenter {
    /// Verifies and loads the model files of `tier`, at the runtime's device's [`Precision`].
    pub fn new(runtime: &Runtime, home: &Home, tier: Tier) -> Result<Segmenter> {
        Segmenter::at_precision(runtime, home, tier, Precision::for_device(runtime.device()))
    }

    /// The same at `precision` (the CLI's `--precision`; the evaluation's fp32 reference).
    pub fn at_precision(runtime: &Runtime, home: &Home, tier: Tier, precision: Precision) -> Result<Segmenter> {
        let dir = home.models_dir();
        let nets = tier
            .files_at(precision)
            .iter()
            .map(|file| {
                let sha256 = verify(&dir, file)?;
                let net = Net::from_file(file);
                let opened = runtime.session(&dir.join(file), &sha256, net.is_tiny()).map_err(|e| {
                    // The file was verified above: on a GPU, a failure is the device's.
                    if runtime.device() == crate::model::Device::Cpu {
                        EngineError::ModelMissing {
                            file: file.to_string(),
                            reason: format!("ONNX Runtime could not load it: {e}"),
                        }
                    } else {
                        EngineError::DeviceUnavailable { device: runtime.device().to_string(), reason: e.to_string() }
                    }
                })?;
                Ok(LoadedNet {
                    net,
                    session: opened.session,
                    recurrent: (net == Net::Rvm).then(Recurrent::default),
                    file: dir.join(file),
                    sha256,
                    from_saved_graph: opened.from_saved_graph,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Segmenter {
            tier,
            device: runtime.device(),
            nets,
            resizer: Resizer::new(),
            interrupt: Interrupt::new()?,
            runtime: runtime.clone(),
            side: None,
        })
    }

    /// The same with the first model run at another reference side: ISNet's square side or
    /// MODNet's short side (a multiple of 32). For measuring what the size costs in quality
    /// (`make eval`); the pipeline uses each model's own rule.
    pub fn with_input_side(mut self, side: u32) -> Segmenter {
        self.side = Some(side.max(32) / 32 * 32);
        self
    }

    /// A handle that interrupts this segmenter's model runs from another thread.
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// The tier this segmenter runs.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Where its models run.
    pub fn device(&self) -> crate::model::Device {
        self.device
    }

    /// Forgets the frames seen so far: call before each video's first frame. Only a recurrent
    /// model (`video`) remembers anything; the per-frame ones are unaffected.
    pub fn reset_history(&mut self) {
        for recurrent in self.nets.iter_mut().filter_map(|n| n.recurrent.as_mut()) {
            recurrent.reset();
        }
    }

    /// Scene cuts on which a recurrent model forgot its history (always 0 for the others).
    pub fn scene_cuts(&self) -> u64 {
        self.nets.iter().filter_map(|n| n.recurrent.as_ref()).map(Recurrent::cuts).sum()
    }

    /// The foreground probability of an RGB `frame`, at the model's resolution (for `pro`,
    /// ISNet's). Pre-processing is exactly models.md's, which the parity tests check.
    pub fn segment(&mut self, frame: &RgbFrame) -> Result<Mask> {
        self.segment_with(|resizer, net, side| prepare_rgb(resizer, net, side, frame))
    }

    /// The frame's Y plane on the mask's grid (the first model's input grid): what
    /// [`Segmenter::segment_yuv`] returns beside the mask, without running any model. The
    /// keyframe planner measures motion on it to decide whether the model must run at all.
    pub fn guide_luma(&mut self, frame: &YuvFrame) -> Vec<u8> {
        let (w, h) = self.nets[0].net.input_size(frame.width, frame.height, self.side);
        matte::resize_bytes(&mut self.resizer, frame.y(), frame.width, frame.height, w, h)
    }

    /// The same for a YUV frame, as the pipeline has it: the planes are resized to the model's
    /// size first and only those few pixels are converted to RGB. Also returns the Y plane on the
    /// mask's grid (the first model's input grid), which the matting needs as its guide: resized
    /// once here rather than again per frame downstream.
    pub fn segment_yuv(&mut self, frame: &YuvFrame) -> Result<(Mask, Vec<u8>)> {
        let mut guide = None;
        let mask = self.segment_with(|resizer, net, side| {
            let (tensor, luma) = prepare_yuv(resizer, net, side, frame);
            guide.get_or_insert(luma);
            Ok(tensor)
        })?;
        Ok((mask, guide.expect("every tier runs at least one model")))
    }

    fn segment_with(
        &mut self,
        mut prepare: impl FnMut(&mut Resizer, Net, Option<u32>) -> Result<Array4<f32>>,
    ) -> Result<Mask> {
        let mut masks = Vec::with_capacity(self.nets.len());
        for (i, loaded) in self.nets.iter_mut().enumerate() {
            let side = if i == 0 { self.side } else { None };
            let input = prepare(&mut self.resizer, loaded.net, side)?;
            let options = &self.interrupt.options;
            let mask = match loaded.run(&input, options) {
                // A graph saved by an earlier process loaded but does not run here (one laid out
                // for vector instructions this process lacks did so): made again from the model
                // and the frame run once more, rather than failing every job of the tier.
                Err(e) if loaded.from_saved_graph && !self.interrupt.fired() => {
                    loaded.session =
                        self.runtime.session_remade(&loaded.file, &loaded.sha256, loaded.net.is_tiny(), &e)?;
                    loaded.run(&input, options)?
                }
                result => result?,
            };
            // Once it has run, a later failure is not the saved graph's.
            loaded.from_saved_graph = false;
            masks.push(mask);
        }
        match self.tier {
            Tier::Pro => {
                let modnet = masks.pop().expect("pro runs MODNet second");
                let isnet = masks.pop().expect("pro runs ISNet first");
                Ok(matte::fuse_detail(&isnet, &modnet))
            }
            _ => Ok(masks.pop().expect("one net per tier")),
        }
    }
}

/// Resizes (bilinear) and normalises an RGB frame into the NCHW tensor `net` expects.
///
/// The resize runs on floats: rounding to 8 bits in between would move the models' output
/// by up to 0.4 at edges, and the reference implementation (Pillow in mode "F") does not.
fn prepare_rgb(resizer: &mut Resizer, net: Net, side: Option<u32>, frame: &RgbFrame) -> Result<Array4<f32>> {
    let (w, h) = net.input_size(frame.width, frame.height, side);
    let pixels: Vec<f32> = frame.data.iter().map(|&v| v as f32).collect();
    let resized;
    let rgb: &[f32] = if (w, h) == (frame.width, frame.height) {
        &pixels
    } else {
        let src = ImageRef::new(frame.width, frame.height, bytemuck::cast_slice(&pixels), PixelType::F32x3)
            .map_err(|e| EngineError::Inference(format!("frame buffer: {e}")))?;
        let mut dst = Image::new(w, h, PixelType::F32x3);
        resizer
            .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
            .map_err(|e| EngineError::Inference(format!("resizing the frame: {e}")))?;
        resized = matte::floats(dst.buffer());
        &resized
    };
    Ok(normalise(net, w, h, rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]])))
}

/// Resizes the Y, U and V planes to the model's size, then converts those pixels to RGB.
/// Returns the tensor and the resized Y plane.
fn prepare_yuv(resizer: &mut Resizer, net: Net, side: Option<u32>, frame: &YuvFrame) -> (Array4<f32>, Vec<u8>) {
    let (w, h) = net.input_size(frame.width, frame.height, side);
    let (cw, ch) = YuvFrame::chroma_size(frame.width, frame.height);
    let (u, v) = frame.uv();
    let y = matte::resize_bytes(resizer, frame.y(), frame.width, frame.height, w, h);
    let u = matte::resize_bytes(resizer, u, cw, ch, w, h);
    let v = matte::resize_bytes(resizer, v, cw, ch, w, h);
    let color = frame.color;
    let tensor = normalise(net, w, h, (0..y.len()).map(|i| color.to_rgb(y[i] as f32, u[i] as f32, v[i] as f32)));
    (tensor, y)
}

/// `x = (v - mean) / std` per channel, into NCHW.
fn normalise(net: Net, w: u32, h: u32, rgb: impl Iterator<Item = [f32; 3]>) -> Array4<f32> {
    let (mean, std) = net.normalisation();
    let plane = (w * h) as usize;
    let mut tensor = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
    let out = tensor.as_slice_mut().expect("fresh arrays are contiguous");
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let inv = 1.0 / std;
    for (i, px) in rgb.enumerate() {
        r[i] = (px[0] - mean) * inv;
        g[i] = (px[1] - mean) * inv;
        b[i] = (px[2] - mean) * inv;
    }
    tensor
}

/// Runs one network; every model here has one input `input` and a [1,1,H,W] output `output`.
fn run(session: &mut Session, input: &Array4<f32>, options: &RunOptions) -> Result<Mask> {
    let outputs = session.run_with_options(ort::inputs!["input" => TensorRef::from_array_view(input)?], options)?;
    let (shape, data) = outputs["output"].try_extract_tensor::<f32>()?;
    let dims: Vec<i64> = shape.iter().copied().collect();
    let [1, 1, h, w] = dims[..] else {
        return Err(EngineError::Inference(format!("unexpected output shape {dims:?}")));
    };
    Ok(Mask { width: w as u32, height: h as u32, data: data.iter().map(|v| v.clamp(0.0, 1.0)).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modnet_follows_the_reference_size_rule() {
        assert_eq!(Net::Modnet.input_size(1280, 720, None), (896, 512));
        assert_eq!(Net::Modnet.input_size(176, 144, None), (608, 512));
        assert_eq!(Net::Modnet.input_size(720, 1280, None), (512, 896));
        // One side above and one below 512: kept, floored to /32.
        assert_eq!(Net::Modnet.input_size(640, 480, None), (640, 480));
        assert_eq!(Net::Modnet.input_size(1, 1, None), (512, 512));
    }

    #[test]
    fn fixed_size_models_stretch() {
        assert_eq!(Net::Selfie.input_size(1920, 1080, None), (256, 256));
        assert_eq!(Net::Isnet.input_size(33, 4000, None), (1024, 1024));
    }
}
