//! Robust Video Matting's memory: the recurrent states it carries from frame to frame.
//!
//! RVM (the `video` tier) is not an image model run per frame: four ConvGRU layers keep a state
//! that each frame updates, which is what makes its matte steady over time. So the network sees
//! every frame of a video in order, and this module feeds each frame's output states back as the
//! next frame's input states. They start from zeros (a `[1,1,1,1]` zero tensor, which the graph
//! broadcasts) and go back to zeros when the history would mislead the network:
//!
//! - at the start of each video ([`Recurrent::reset`], called by the segmenter's owner);
//! - on a scene cut, found with the stabiliser's own measure (how much of the picture the
//!   previous frame, motion-compensated, does not explain: [`matte::is_scene_cut`]);
//! - when the input size changes (the states have the network's grid).
//!
//! The network itself (scripts/models/rvm_tfjs_to_onnx.py) takes `src` float [1,3,H,W] RGB in
//! [0,1] at the size [`input_size`] picks and returns `pha` [1,1,H,W] and the states `r1o..r4o`.

use ndarray::Array4;
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, Tensor, TensorRef};

use crate::error::{EngineError, Result};
use crate::frame::Mask;
use crate::matte;

/// The longest side the network sees. RVM's authors choose `downsample_ratio` so that the
/// network works at 256-512 px (0.25 for 1920x1080, 0.375-0.4 for 1280x720, 1 up to 512x512):
/// the recurrent decoder needs that much context, and our guided filter puts the edges back at
/// full resolution. [`input_size`] is that rule with the ratio applied before the model.
pub const MAX_SIDE: u32 = 512;

const STATE_INPUTS: [&str; 4] = ["r1i", "r2i", "r3i", "r4i"];
const STATE_OUTPUTS: [&str; 4] = ["r1o", "r2o", "r3o", "r4o"];

/// The network's input size for a `w`x`h` frame: the frame's own size up to [`MAX_SIDE`],
/// otherwise scaled down (aspect kept) so its long side is [`MAX_SIDE`].
pub fn input_size(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= MAX_SIDE {
        return (w.max(1), h.max(1));
    }
    let ratio = MAX_SIDE as f64 / long as f64;
    (((w as f64 * ratio).round() as u32).max(1), ((h as f64 * ratio).round() as u32).max(1))
}

/// The states between two frames of one video.
#[derive(Default)]
pub struct Recurrent {
    /// The last frame's `r1o..r4o`; `None`: start from zeros.
    states: Option<Vec<DynValue>>,
    /// The last frame's luma on the network's grid, for the scene-cut test.
    previous_luma: Option<(usize, usize, Vec<f32>)>,
    /// Scene cuts seen since it was made.
    cuts: u64,
}

impl Recurrent {
    /// Forgets everything: the next frame starts a video.
    pub fn reset(&mut self) {
        self.states = None;
        self.previous_luma = None;
    }

    /// Scene cuts that reset the states since the segmenter was made.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Runs the network on one frame (`src` as [`input_size`] made it), carrying the states.
    pub fn run(&mut self, session: &mut Session, src: &Array4<f32>, options: &RunOptions) -> Result<Mask> {
        let (h, w) = (src.shape()[2], src.shape()[3]);
        let luma = luma_of(src);
        let carried = match &self.previous_luma {
            Some((pw, ph, prev)) if (*pw, *ph) == (w, h) => {
                if matte::is_scene_cut(prev, &luma, w, h) {
                    self.cuts += 1;
                    tracing::debug!(cuts = self.cuts, "scene cut: the video model's memory starts afresh");
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        if !carried {
            self.states = None;
        }
        self.previous_luma = Some((w, h, luma));
        let zeros = Tensor::from_array(([1usize, 1, 1, 1], vec![0f32]))?;
        let mut inputs = ort::inputs!["src" => TensorRef::from_array_view(src)?];
        for (k, name) in STATE_INPUTS.iter().enumerate() {
            let state = match &self.states {
                Some(states) => (&states[k]).into(),
                None => (&zeros).into(),
            };
            inputs.push(((*name).into(), state));
        }
        let mut outputs = session.run_with_options(inputs, options)?;
        let mask = {
            let (shape, data) = outputs["pha"].try_extract_tensor::<f32>()?;
            let dims: Vec<i64> = shape.iter().copied().collect();
            if dims != [1, 1, h as i64, w as i64] {
                return Err(EngineError::Inference(format!("unexpected pha shape {dims:?} for a {w}x{h} input")));
            }
            Mask { width: w as u32, height: h as u32, data: data.iter().map(|v| v.clamp(0.0, 1.0)).collect() }
        };
        let states = STATE_OUTPUTS
            .iter()
            .map(|name| outputs.remove(name).ok_or_else(|| EngineError::Inference(format!("no output {name}"))))
            .collect::<Result<Vec<_>>>()?;
        self.states = Some(states);
        Ok(mask)
    }
}

/// Rec. 601 luma in [0,1] of an RGB [1,3,H,W] tensor in [0,1]: enough to tell shots apart.
fn luma_of(src: &Array4<f32>) -> Vec<f32> {
    let plane = src.shape()[2] * src.shape()[3];
    let data = src.as_slice().expect("the tensor is built contiguous");
    let (r, rest) = data.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter().zip(g).zip(b).map(|((r, g), b)| 0.299 * r + 0.587 * g + 0.114 * b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_sees_at_most_512_pixels_a_side() {
        assert_eq!(input_size(176, 144), (176, 144));
        assert_eq!(input_size(512, 512), (512, 512));
        assert_eq!(input_size(1280, 720), (512, 288)); // ratio 0.4
        assert_eq!(input_size(1920, 1080), (512, 288)); // ratio 0.267
        assert_eq!(input_size(3840, 2160), (512, 288)); // ratio 0.133
        assert_eq!(input_size(720, 1280), (288, 512));
        assert_eq!(input_size(4000, 33), (512, 4));
        assert_eq!(input_size(0, 0), (1, 1));
    }
}
