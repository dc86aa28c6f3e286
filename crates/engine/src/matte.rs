//! From a model's low-resolution mask to a full-resolution, temporally steady alpha matte.
//!
//! Models see the frame at 256-1024 px; users want alpha at 4K. Plain bilinear upsampling of
//! the mask gives soft, blocky edges, so the mask is upsampled with a *fast guided filter*
//! (He & Sun, 2015): on the mask's grid each window fits `alpha ≈ a·luma + b`, and the smoothed
//! `a`, `b` are upsampled and applied to the full-resolution luma, so edges snap to the frame's
//! own edges. Per-frame models also flicker on parts of the picture that do not move; the
//! [`TemporalStabiliser`] blends each mask with the previous one wherever the frame did not
//! change, and lets moving parts through untouched.

use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rayon::prelude::*;

use crate::frame::{Mask, YuvFrame};
use crate::keyframes::{Reason, Segmented};
use crate::model::Tier;

/// Mean over a (2r+1)² window, clipped at the borders; O(1) per pixel.
pub fn box_mean(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    // Window sizes are clipped at the borders; their inverses are computed once per row/column.
    let inverse_counts =
        |n: usize| -> Vec<f32> { (0..n).map(|i| 1.0 / ((i + r + 1).min(n) - i.saturating_sub(r)) as f32).collect() };
    let (inv_x, inv_y) = (inverse_counts(w), inverse_counts(h));
    // Rows, then strips of columns, each on whichever core is free: every output pixel is the
    // same sum in the same order as on one core, so the result does not depend on the cores.
    let mut tmp = vec![0f32; w * h];
    // Columns whose window lies wholly inside the row: there, no clipping to work out per pixel.
    let inner = r.min(w)..w.saturating_sub(r).max(r.min(w));
    let window_means = |sums: &[f32], out: &mut [f32]| {
        for x in (0..inner.start).chain(inner.end..w) {
            out[x] = (sums[(x + r + 1).min(w)] - sums[x.saturating_sub(r)]) * inv_x[x];
        }
        if !inner.is_empty() {
            let (above, below) = (&sums[inner.start + r + 1..], &sums[inner.start - r..]);
            for (((o, hi), lo), inv) in out[inner.clone()].iter_mut().zip(above).zip(below).zip(&inv_x[inner.clone()]) {
                *o = (hi - lo) * inv;
            }
        }
    };
    // Prefix sums of four rows at once: each row's is a chain of additions that must stay in
    // order (for the same result), and four independent chains keep the adder busy.
    tmp.par_chunks_mut(4 * w.max(1)).zip(src.par_chunks(4 * w.max(1))).for_each_init(
        || vec![0f32; 4 * (w + 1)],
        |sums, (out, rows)| {
            if rows.len() == 4 * w {
                let (s0, rest) = sums.split_at_mut(w + 1);
                let (s1, rest) = rest.split_at_mut(w + 1);
                let (s2, s3) = rest.split_at_mut(w + 1);
                let (r0, r1, r2, r3) = (&rows[..w], &rows[w..2 * w], &rows[2 * w..3 * w], &rows[3 * w..]);
                let (s0, s1, s2, s3) = (&mut s0[1..], &mut s1[1..], &mut s2[1..], &mut s3[1..]);
                let (mut a0, mut a1, mut a2, mut a3) = (0f32, 0f32, 0f32, 0f32);
                for x in 0..w {
                    a0 += r0[x];
                    a1 += r1[x];
                    a2 += r2[x];
                    a3 += r3[x];
                    (s0[x], s1[x], s2[x], s3[x]) = (a0, a1, a2, a3);
                }
            } else {
                for (row, sums) in rows.chunks(w).zip(sums.chunks_mut(w + 1)) {
                    for x in 0..w {
                        sums[x + 1] = sums[x] + row[x];
                    }
                }
            }
            for (sums, out) in sums.chunks(w + 1).zip(out.chunks_mut(w)) {
                window_means(sums, out);
            }
        },
    );
    // Running column sums over the vertical window, row by row, one strip of columns at a time,
    // written straight into the strip's part of each output row.
    let mut out = vec![0f32; w * h];
    let mut strips: Vec<Vec<&mut [f32]>> = (0..w.div_ceil(STRIP)).map(|_| Vec::with_capacity(h)).collect();
    for out_row in out.chunks_mut(w.max(1)) {
        for (strip, part) in strips.iter_mut().zip(out_row.chunks_mut(STRIP)) {
            strip.push(part);
        }
    }
    strips.into_par_iter().enumerate().for_each(|(s, mut strip)| {
        let columns = s * STRIP..((s + 1) * STRIP).min(w);
        let mut col_sum = vec![0f32; columns.len()];
        let mut top = 0usize;
        let mut bottom = 0usize; // rows [top, bottom) are in col_sum
        let row_of = |y: usize| &tmp[y * w + columns.start..y * w + columns.end];
        for (y, out_part) in strip.iter_mut().enumerate() {
            let (lo, hi) = (y.saturating_sub(r), (y + r + 1).min(h));
            while bottom < hi {
                for (c, v) in col_sum.iter_mut().zip(row_of(bottom)) {
                    *c += v;
                }
                bottom += 1;
            }
            while top < lo {
                for (c, v) in col_sum.iter_mut().zip(row_of(top)) {
                    *c -= v;
                }
                top += 1;
            }
            let inv = inv_y[y];
            for (o, c) in out_part.iter_mut().zip(&col_sum) {
                *o = c * inv;
            }
        }
    });
    out
}

/// Columns per strip of [`box_mean`]'s vertical pass: wide enough to read whole cache lines,
/// narrow enough that a 1024-pixel grid gives 16 cores a strip each.
const STRIP: usize = 64;

/// Bilinear resize of a single-channel float image.
pub fn resize_plane(resizer: &mut Resizer, src: &[f32], w: u32, h: u32, to_w: u32, to_h: u32) -> Vec<f32> {
    if (w, h) == (to_w, to_h) {
        return src.to_vec();
    }
    let src = ImageRef::new(w, h, bytemuck::cast_slice(src), PixelType::F32).expect("plane matches its size");
    let mut out = vec![0f32; to_w as usize * to_h as usize];
    let mut dst = Image::from_slice_u8(to_w, to_h, bytemuck::cast_slice_mut(&mut out), PixelType::F32)
        .expect("buffer matches its size");
    resizer
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .expect("same pixel types");
    out
}

/// Reads an image buffer of native-endian f32s (image buffers are bytes with no alignment promise).
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// An 8-bit plane as floats in [0, 1] (luma as the motion search and the guided filter take it).
pub fn unit_floats(bytes: &[u8]) -> Vec<f32> {
    bytes.par_iter().map(|&v| v as f32 * (1.0 / 255.0)).collect()
}

/// Bilinear resize of a single-channel 8-bit plane.
pub fn resize_bytes(resizer: &mut Resizer, src: &[u8], w: u32, h: u32, to_w: u32, to_h: u32) -> Vec<u8> {
    if (w, h) == (to_w, to_h) {
        return src.to_vec();
    }
    let src = ImageRef::new(w, h, src, PixelType::U8).expect("plane matches its size");
    let mut dst = Image::new(to_w, to_h, PixelType::U8);
    resizer
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .expect("same pixel types");
    dst.into_vec()
}

/// How the guided filter treats edges.
#[derive(Debug, Clone, Copy)]
pub struct EdgeParams {
    /// Window radius on the mask's grid.
    pub radius: usize,
    /// Regularisation: smaller follows the frame's edges more closely.
    pub eps: f32,
}

impl Default for EdgeParams {
    fn default() -> Self {
        EdgeParams { radius: 2, eps: 1e-3 }
    }
}

/// Upsamples `mask` to the full frame with the frame's luma as guide.
///
/// `guide_lo` is the luma in [0,1] resized to the mask's grid, `guide` the full-resolution 8-bit
/// luma plane (`width`x`height`). Returns 8-bit alpha at full resolution.
pub fn guided_upsample(
    mask: &Mask,
    guide_lo: &[f32],
    guide: &[u8],
    width: u32,
    height: u32,
    params: EdgeParams,
) -> Vec<u8> {
    let (w, h, r) = (mask.width as usize, mask.height as usize, params.radius);
    let p = &mask.data;
    // The four window means are independent: each on its own core (same sums, same result).
    let ((mean_i, mean_p), (mean_ip, mean_ii)) = rayon::join(
        || rayon::join(|| box_mean(guide_lo, w, h, r), || box_mean(p, w, h, r)),
        || {
            rayon::join(
                || box_mean(&guide_lo.par_iter().zip(p).map(|(i, p)| i * p).collect::<Vec<_>>(), w, h, r),
                || box_mean(&guide_lo.par_iter().map(|i| i * i).collect::<Vec<_>>(), w, h, r),
            )
        },
    );
    let mut a = vec![0f32; w * h];
    let mut b = vec![0f32; w * h];
    a.par_iter_mut().zip(&mut b).enumerate().for_each(|(k, (a, b))| {
        let cov = mean_ip[k] - mean_i[k] * mean_p[k];
        let var = mean_ii[k] - mean_i[k] * mean_i[k];
        *a = cov / (var + params.eps);
        *b = mean_p[k] - *a * mean_i[k];
    });
    let (a, b) = rayon::join(|| box_mean(&a, w, h, r), || box_mean(&b, w, h, r));
    apply_upsampled(&a, &b, w, h, guide, width as usize, height as usize)
}

/// `alpha = a·I + b` at full resolution, with `a` and `b` (`w`x`h`) resampled to `width`x`height`
/// as [`resize_plane`] would, one output row at a time.
///
/// Resizing `a` and `b` to full-resolution planes first and combining them after wrote and read
/// back two float planes a frame (7 MB at 720p, 33 MB at 4K); here the horizontal pass runs on
/// the mask's rows and the vertical pass ends in the combination, so only 8-bit alpha is written.
fn apply_upsampled(a: &[f32], b: &[f32], w: usize, h: usize, guide: &[u8], width: usize, height: usize) -> Vec<u8> {
    let (columns, rows) = (AxisTaps::new(w, width), AxisTaps::new(h, height));
    // Every mask row at full width, a's then b's, so the vertical pass is one long sum a row.
    let mut wide = vec![0f32; h * 2 * width];
    wide.par_chunks_mut(2 * width).enumerate().for_each(|(y, out)| {
        let (wide_a, wide_b) = out.split_at_mut(width);
        for (source, wide) in [(&a[y * w..][..w], wide_a), (&b[y * w..][..w], wide_b)] {
            for (x, wide) in wide.iter_mut().enumerate() {
                let (first, weights) = columns.at(x);
                *wide = weights.iter().zip(&source[first..]).map(|(weight, v)| weight * v).sum();
            }
        }
    });
    let mut alpha = vec![0u8; width * height];
    alpha.par_chunks_mut(width).zip(guide.par_chunks(width)).enumerate().for_each_init(
        || vec![0f32; 2 * width],
        |sums, (y, (alpha, guide))| {
            let (first, weights) = rows.at(y);
            sums.fill(0.0);
            for (k, &weight) in weights.iter().enumerate().filter(|(_, &weight)| weight != 0.0) {
                for (sum, v) in sums.iter_mut().zip(&wide[(first + k) * 2 * width..][..2 * width]) {
                    *sum += weight * v;
                }
            }
            let (a, b) = sums.split_at(width);
            for (((alpha, &i), a), b) in alpha.iter_mut().zip(guide).zip(a).zip(b) {
                *alpha = unit_to_byte(a * (i as f32 * (1.0 / 255.0)) + b);
            }
        },
    );
    alpha
}

/// A value in [0, 1] (clamped; NaN counts as 0) as 8 bits, rounded to the nearest.
#[inline]
#[allow(clippy::manual_clamp)] // clamp keeps NaN, which the conversion below must not see
fn unit_to_byte(v: f32) -> u8 {
    // `max`/`min`, unlike `clamp`, turn NaN into 0, so `v` ends finite and within 0.5..=255.5.
    let v = v.max(0.0).min(1.0) * 255.0 + 0.5;
    // SAFETY: `v` is finite and within i32's range (above). A plain `as` would saturate, which
    // x86-64 does one value at a time; this lets the loops over a row run in vector registers.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

/// Which input pixels, with which weights, make each output pixel when one axis is resized with
/// fast_image_resize's bilinear convolution (the tent filter, widened by the scale when
/// shrinking, weights normalised to 1), so [`apply_upsampled`] resamples as [`resize_plane`] does.
struct AxisTaps {
    /// Weights per output pixel (zeros where a pixel needs fewer).
    window: usize,
    /// Per output pixel, the input pixel its first weight applies to.
    first: Vec<usize>,
    /// `window` weights per output pixel.
    weights: Vec<f32>,
}

impl AxisTaps {
    fn new(in_size: usize, out_size: usize) -> AxisTaps {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        // A tent of radius `filter_scale` covers at most this many whole pixels.
        let window = ((2.0 * filter_scale).ceil() as usize + 2).min(in_size);
        let mut first = Vec::with_capacity(out_size);
        let mut weights = vec![0f32; window * out_size];
        for (out, taps) in weights.chunks_exact_mut(window).enumerate() {
            let in_center = (out as f64 + 0.5) * scale;
            let lo = (in_center - filter_scale).floor().max(0.0) as usize;
            let hi = ((in_center + filter_scale).ceil() as usize).min(in_size);
            let center = in_center - 0.5;
            let tent = |x: usize| (1.0 - ((x as f64 - center) * (1.0 / filter_scale)).abs()).max(0.0);
            let total: f64 = (lo..hi).map(tent).sum();
            // Near the far edge the window starts early, so it never reads past the row.
            let start = lo.min(in_size - window);
            for x in lo..hi {
                taps[x - start] = (tent(x) / total) as f32;
            }
            first.push(start);
        }
        AxisTaps { window, first, weights }
    }

    /// The first input pixel of output pixel `out`, and the weights from there on.
    fn at(&self, out: usize) -> (usize, &[f32]) {
        (self.first[out], &self.weights[out * self.window..][..self.window])
    }
}

/// Keeps the matte still where the picture is still, following the picture where it moves.
///
/// Works on the mask's grid, as a motion-compensated recursive filter. The previous frame's
/// matte is first moved along with the picture: block matching on a coarse copy of the luma
/// finds how each block moved, and every pixel takes, of "did not move", its block's motion
/// and its neighbour blocks' motions, the one whose moved previous luma matches this frame's
/// best (so a pixel on a subject's edge can follow the subject while the one beside it stays
/// with the background). Where the moved previous picture matches this frame to within `still`
/// (luma, 0-1), the matte only moves `follow` of the way towards the new mask; where it differs
/// by more than `moving` (occlusions, new content, lighting), the new mask is taken at once; in
/// between, the weight ramps. A scene cut (most of the picture unexplained) resets the history.
#[derive(Debug, Clone)]
pub struct TemporalStabiliser {
    previous: Option<(Vec<f32>, Vec<f32>)>,
    /// Fraction of the new value a still pixel takes per frame.
    pub follow: f32,
    /// Luma difference (after motion compensation) below which a pixel counts as still.
    pub still: f32,
    /// Luma difference above which a pixel counts as changed.
    pub moving: f32,
    /// Largest motion searched per frame, in coarse pixels (the coarse grid's long side is
    /// about [`MOTION_GRID`] pixels, so 6 is ±4% of the picture's width per frame).
    pub search: usize,
}

/// Long side, in pixels, of the coarse luma that motion is estimated on.
pub const MOTION_GRID: usize = 160;
/// Block size, in coarse pixels, of the motion search.
const BLOCK: usize = 8;
/// How much better (luma difference, 0-1) a motion candidate must match than "did not move"
/// (or an earlier candidate) to be taken: in flat areas every candidate matches about equally
/// well, and taking an arbitrary one would drag the matte in from somewhere else.
const MARGIN: f32 = 0.006;

impl Default for TemporalStabiliser {
    fn default() -> Self {
        TemporalStabiliser { previous: None, follow: 0.3, still: 0.02, moving: 0.08, search: 6 }
    }
}

impl TemporalStabiliser {
    /// Stabilises `mask` in place against the previous frame; `guide_lo` is this frame's luma on
    /// the mask's grid.
    pub fn apply(&mut self, mask: &mut Mask, guide_lo: &[f32]) {
        self.apply_moved(mask, guide_lo, None);
    }

    /// [`TemporalStabiliser::apply`] with the motion from the previous frame already measured
    /// (by the keyframe planner, on the same grid and luma), so it is not searched twice.
    ///
    /// A keyframe after carried frames is blended like any other frame. Taking its large rises
    /// at once (a subject the carried guess missed) was tried and measured worse on `make
    /// eval-keyframes`: dtSSD 5-10% above every-frame's on the ground-truth clips instead of
    /// 2-7%, and `human` on street footage without a person at IoU 0.80 instead of 0.91
    /// against every-frame; where a subject really appears its pixels change, so the blend
    /// takes them at once anyway.
    pub fn apply_moved(&mut self, mask: &mut Mask, guide_lo: &[f32], motion: Option<&Motion>) {
        let (w, h) = (mask.width as usize, mask.height as usize);
        if let Some((prev_alpha, prev_guide)) = &self.previous {
            if prev_alpha.len() == mask.data.len() {
                let measured;
                let motion = match motion {
                    Some(m) if (m.width, m.height) == (w, h) => m,
                    _ => {
                        measured = Motion::measure(prev_guide, guide_lo, w, h, self.search);
                        &measured
                    }
                };
                if motion.unexplained() < SCENE_CUT {
                    let span = (self.moving - self.still).max(1e-6);
                    let (still, follow) = (self.still, self.follow);
                    mask.data.par_chunks_mut(w).enumerate().for_each_init(
                        || motion.row_buffers(),
                        |(residual, source), (y, row)| {
                            motion.fill_row(y, residual, source);
                            let mut previous = Sampler::new(prev_alpha, w, h);
                            for ((alpha, &m), &(sx, sy)) in row.iter_mut().zip(residual.iter()).zip(source.iter()) {
                                let prev = previous.at(sx, sy);
                                let moving = ((m - still) / span).clamp(0.0, 1.0);
                                let weight = moving + (1.0 - moving) * follow;
                                *alpha = prev + weight * (*alpha - prev);
                            }
                        },
                    );
                }
            }
        }
        self.previous = Some((mask.data.clone(), guide_lo.to_vec()));
    }
}

/// Mean motion-compensated luma difference (0-1) at and above which the stabiliser drops its
/// history: most of the picture is not explained by the previous frame moved.
const SCENE_CUT: f32 = 0.15;

/// The same measure, on the coarse motion grid, at and above which [`is_scene_cut`] says a new
/// shot starts. Measured with [`shot_change`] on our footage: about 0.01 within a shot and up to
/// 0.04 in fast motion (bikes.mp4 frames 96-102), against 0.08-0.23 across the five cuts of
/// bikes.mp4 and 0.16 from carphone to bikes. The stabiliser's 0.15 would miss four of those five:
/// it only needs the extreme cases, because its blend already follows whatever moved, while a
/// recurrent model would carry the old shot for many frames.
const SHOT_CHANGE: f32 = 0.06;

/// How the picture moved from one frame to the next, per pixel of a grid (the mask's).
///
/// It may have been measured on a copy of the grid a whole number of times smaller
/// ([`Motion::measure_within`]); it is then kept at that size and read out per pixel of the
/// full grid as needed. A gap the keyframe planner holds keeps one motion per frame: at
/// ISNet's 1024x1024, 3 MB each instead of 12.
#[derive(Debug, Clone)]
pub struct Motion {
    /// Width of the grid.
    pub width: usize,
    /// Height of the grid.
    pub height: usize,
    /// How many times smaller the grid it was measured on is (1: this one).
    scale: usize,
    /// Width and height of the grid it was measured on.
    measured: (usize, usize),
    /// How badly the moved previous luma explains this frame's (3x3-averaged absolute
    /// difference, luma 0-1), on the measured grid.
    residual: Vec<f32>,
    /// Where each pixel's content was in the previous frame, on the measured grid.
    source: Vec<(f32, f32)>,
    /// [`Motion::unexplained`], summed once: the planner and the stabiliser both ask.
    unexplained: f32,
}

impl Motion {
    /// A motion given per pixel of a `width`x`height` grid, row by row: `residual` and `source`
    /// as [`Motion::fill_row`] gives them.
    pub fn from_parts(width: usize, height: usize, residual: Vec<f32>, source: Vec<(f32, f32)>) -> Motion {
        assert!(residual.len() == width * height && source.len() == width * height, "one value per pixel");
        Motion::new(width, height, 1, (width, height), residual, source)
    }

    fn new(
        width: usize,
        height: usize,
        scale: usize,
        measured: (usize, usize),
        residual: Vec<f32>,
        source: Vec<(f32, f32)>,
    ) -> Motion {
        let mut motion = Motion { width, height, scale, measured, residual, source, unexplained: 0.0 };
        let mut sum = 0f32; // in the same order as over the whole grid at once: the same result
        motion.for_each_row(|_, residual, _| residual.iter().for_each(|r| sum += r));
        motion.unexplained = sum / (width * height).max(1) as f32;
        motion
    }

    /// Measures the motion from `prev` to `cur` (luma in [0,1], `w`x`h`) with the stabiliser's
    /// block matching, searching `search` coarse pixels (see [`TemporalStabiliser::search`]).
    pub fn measure(prev: &[f32], cur: &[f32], w: usize, h: usize, search: usize) -> Motion {
        let (residual, source) = compensate(prev, cur, w, h, search);
        Motion::from_parts(w, h, residual, source)
    }

    /// [`Motion::measure`] for large grids at a lower cost: the per-pixel choice between motion
    /// candidates is made on a copy at most `max_side` pixels long (block matching already works
    /// on a 160-pixel copy), and each pixel of the full grid takes the motion of the copy's
    /// pixel it falls in. At ISNet's 1024x1024 this is about 4x cheaper than
    /// [`Motion::measure`]; the keyframe planner uses it.
    pub fn measure_within(prev: &[f32], cur: &[f32], w: usize, h: usize, search: usize, max_side: usize) -> Motion {
        let factor = w.max(h).div_ceil(max_side.max(1));
        if factor <= 1 {
            return Motion::measure(prev, cur, w, h, search);
        }
        let (small_prev, sw, sh) = shrink(prev, w, h, factor);
        let (small_cur, _, _) = shrink(cur, w, h, factor);
        let (residual, source) = compensate(&small_prev, &small_cur, sw, sh, search);
        Motion::new(w, h, factor, (sw, sh), residual, source)
    }

    /// At pixel (`x`, `y`) of the grid: the residual, and where its content was in the previous
    /// frame (x, y on this grid). Pixel by pixel, for the tests: the code reads whole rows.
    #[cfg(test)]
    fn at(&self, x: usize, y: usize) -> (f32, (f32, f32)) {
        if self.scale == 1 {
            let k = y * self.width + x;
            return (self.residual[k], self.source[k]);
        }
        let (mw, mh) = self.measured;
        let (xs, ys) = ((x / self.scale).min(mw - 1), (y / self.scale).min(mh - 1));
        let k = ys * mw + xs;
        let (sx, sy) = self.source[k];
        let (dx, dy) = (xs as f32 - sx, ys as f32 - sy);
        let f = self.scale as f32;
        (self.residual[k], (x as f32 - dx * f, y as f32 - dy * f))
    }

    /// Row `y` of the grid, into `residual` (how badly the moved previous luma explains this
    /// frame's: 3x3-averaged absolute difference, luma 0-1; near 0 where motion explains the
    /// picture, large where content is new) and `source` (where each pixel's content was in the
    /// previous frame, x and y on this grid), a row long each. Each of the measured grid's
    /// columns covers `scale` of this grid's, counted rather than divided (the columns the copy
    /// dropped take its last).
    pub fn fill_row(&self, y: usize, residual: &mut [f32], source: &mut [(f32, f32)]) {
        let ((mw, mh), scale) = (self.measured, self.scale);
        if scale == 1 {
            let row = y * mw..(y + 1) * mw;
            residual.copy_from_slice(&self.residual[row.clone()]);
            source.copy_from_slice(&self.source[row]);
            return;
        }
        let ys = (y / scale).min(mh - 1);
        let f = scale as f32;
        let mut x0 = 0;
        for xs in 0..mw {
            let k = ys * mw + xs;
            let (sx, sy) = self.source[k];
            let (dx, dy) = (xs as f32 - sx, ys as f32 - sy);
            let x1 = if xs + 1 == mw { self.width } else { x0 + scale };
            for x in x0..x1 {
                residual[x] = self.residual[k];
                source[x] = (x as f32 - dx * f, y as f32 - dy * f);
            }
            x0 = x1;
        }
    }

    /// Calls `each` with every row's number, residuals and sources, top to bottom.
    pub fn for_each_row(&self, mut each: impl FnMut(usize, &[f32], &[(f32, f32)])) {
        let (mut residual, mut source) = self.row_buffers();
        for y in 0..self.height {
            self.fill_row(y, &mut residual, &mut source);
            each(y, &residual, &source);
        }
    }

    /// Buffers for one row of [`Motion::fill_row`].
    fn row_buffers(&self) -> (Vec<f32>, Vec<(f32, f32)>) {
        (vec![0f32; self.width], vec![(0f32, 0f32); self.width])
    }

    /// Mean residual over the whole picture: how much of it the previous frame does not explain.
    pub fn unexplained(&self) -> f32 {
        self.unexplained
    }

    /// `previous` (on this grid) moved along with the picture: each pixel takes the value its
    /// content had in the previous frame.
    pub fn carry(&self, previous: &Mask) -> Mask {
        self.resample(previous, |_, source| source)
    }

    /// The opposite of [`Motion::carry`]: `next`, a mask of this motion's frame, moved back to
    /// the previous frame. Each pixel follows its own motion the other way, which is the inverse
    /// wherever the motion is smooth over one frame's displacement (block motion is: it is
    /// constant over blocks and chosen among neighbours' vectors).
    pub fn carry_back(&self, next: &Mask) -> Mask {
        self.resample(next, |(x, y), (sx, sy)| (2.0 * x - sx, 2.0 * y - sy))
    }

    /// `mask` sampled, at each pixel, where `from` (given the pixel and its source) says.
    fn resample(&self, mask: &Mask, from: impl Fn((f32, f32), (f32, f32)) -> (f32, f32) + Sync) -> Mask {
        let (w, h) = (self.width, self.height);
        debug_assert_eq!(mask.data.len(), w * h);
        let mut data = vec![0f32; w * h];
        data.par_chunks_mut(w.max(1)).enumerate().for_each_init(
            || self.row_buffers(),
            |(residual, source), (y, row)| {
                self.fill_row(y, residual, source);
                let mut mask = Sampler::new(&mask.data, w, h);
                for (x, (value, &source)) in row.iter_mut().zip(source.iter()).enumerate() {
                    let (sx, sy) = from((coordinate(x), y as f32), source);
                    *value = mask.at(sx, sy);
                }
            },
        );
        Mask { width: mask.width, height: mask.height, data }
    }
}

fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len().max(1) as f32
}

/// How much of `cur` the previous frame `prev` does not explain (both luma in [0,1], `w`x`h`):
/// the stabiliser's motion-compensated difference, averaged, on the coarse motion grid
/// ([`MOTION_GRID`]), where it costs about a millisecond.
pub fn shot_change(prev: &[f32], cur: &[f32], w: usize, h: usize) -> f32 {
    let factor = w.max(h).div_ceil(MOTION_GRID).max(1);
    let (coarse_prev, cw, ch) = shrink(prev, w, h, factor);
    let (coarse_cur, _, _) = shrink(cur, w, h, factor);
    if cw == 0 || ch == 0 {
        return mean(&cur.iter().zip(prev).map(|(a, b)| (a - b).abs()).collect::<Vec<_>>());
    }
    let (motion, _) = compensate(&coarse_prev, &coarse_cur, cw, ch, TemporalStabiliser::default().search);
    mean(&motion)
}

/// Whether `cur` starts a new shot after `prev`: for models that must forget on a cut (the
/// recurrent `video` tier).
pub fn is_scene_cut(prev: &[f32], cur: &[f32], w: usize, h: usize) -> bool {
    shot_change(prev, cur, w, h) >= SHOT_CHANGE
}

/// Bilinear samples of one image, clamped to it. Samples in a row usually come in runs at the
/// same height (block motion moves whole runs of pixels by one vector), and those share the
/// work on the two rows they read.
struct Sampler<'a> {
    img: &'a [f32],
    w: usize,
    h: usize,
    /// The last sample's height (its bits: any value, NaN included, gives the same rows again)
    /// and its rows.
    last: Option<(u32, RowPair<'a>)>,
}

impl<'a> Sampler<'a> {
    fn new(img: &'a [f32], w: usize, h: usize) -> Sampler<'a> {
        Sampler { img, w, h, last: None }
    }

    #[inline]
    fn at(&mut self, x: f32, y: f32) -> f32 {
        match &self.last {
            Some((bits, rows)) if *bits == y.to_bits() => rows.sample(x),
            _ => {
                let rows = RowPair::at(self.img, self.w, self.h, y);
                let value = rows.sample(x);
                self.last = Some((y.to_bits(), rows));
                value
            }
        }
    }
}

/// The two rows of an image that a bilinear sample at height `y` reads, and the weight between
/// them: what a [`Sampler`] keeps for a run of samples at one height.
///
/// Positions go through `i32`, not `usize`: x86-64 converts between floats and signed integers
/// in one instruction, and between floats and `usize` (unsigned 64-bit) in several.
struct RowPair<'a> {
    top: &'a [f32],
    bottom: &'a [f32],
    fy: f32,
    /// The last column, as a float.
    right: f32,
}

impl<'a> RowPair<'a> {
    #[inline]
    fn at(img: &'a [f32], w: usize, h: usize, y: f32) -> RowPair<'a> {
        let y = y.clamp(0.0, (h - 1) as f32);
        let y0 = y as i32;
        let fy = y - y0 as f32;
        let y0 = y0 as usize;
        let y1 = (y0 + 1).min(h - 1);
        RowPair { top: &img[y0 * w..(y0 + 1) * w], bottom: &img[y1 * w..(y1 + 1) * w], fy, right: (w - 1) as f32 }
    }

    #[inline]
    fn sample(&self, x: f32) -> f32 {
        let x = x.clamp(0.0, self.right);
        let x0 = x as i32;
        let fx = x - x0 as f32;
        let x0 = x0 as usize;
        let x1 = (x0 + 1).min(self.top.len() - 1);
        let top = self.top[x0] + fx * (self.top[x1] - self.top[x0]);
        let bottom = self.bottom[x0] + fx * (self.bottom[x1] - self.bottom[x0]);
        top + self.fy * (bottom - top)
    }
}

/// A pixel's index as a float coordinate. Through `u32`: x86-64 converts that in one
/// instruction, a `usize` (unsigned 64-bit) in several, and the samplers do it per pixel.
#[inline]
fn coordinate(index: usize) -> f32 {
    index as u32 as f32
}

/// Area-average downscale by an integer factor (the remainder rows and columns are dropped).
fn shrink(src: &[f32], w: usize, h: usize, factor: usize) -> (Vec<f32>, usize, usize) {
    let (cw, ch) = (w / factor, h / factor);
    let mut out = vec![0f32; cw * ch];
    let inv = 1.0 / (factor * factor) as f32;
    out.par_chunks_mut(cw.max(1)).enumerate().for_each(|(cy, out_row)| {
        for y in cy * factor..(cy + 1) * factor {
            for (x, v) in src[y * w..y * w + cw * factor].iter().enumerate() {
                out_row[x / factor] += v * inv;
            }
        }
    });
    (out, cw, ch)
}

/// Motion of each `BLOCK`² block of `cur` (coarse grid) relative to `prev`, in coarse pixels
/// with sub-pixel precision: content at `prev(p - v)` is at `cur(p)`. Full search within
/// ±`search`; a small penalty on the vector's length picks "no motion" in flat areas.
fn block_motion(prev: &[f32], cur: &[f32], w: usize, h: usize, search: usize) -> (Vec<(f32, f32)>, usize, usize) {
    let (bw, bh) = (w / BLOCK, h / BLOCK);
    let r = search as isize;
    let side = 2 * search + 1;
    let mut vectors = Vec::with_capacity(bw * bh);
    // Mean absolute difference per candidate vector, and the same plus the length penalty.
    let mut differences = vec![f32::INFINITY; side * side];
    let mut costs = vec![f32::INFINITY; side * side];
    // An interior block's sums for one vertical displacement, by horizontal displacement from +r
    // down to -r (so that they read the previous row left to right).
    let mut row_sums = vec![0f32; side];
    for by in 0..bh {
        for bx in 0..bw {
            let (x0, y0) = (bx * BLOCK, by * BLOCK);
            // Most blocks lie so far inside that every displacement stays in the picture: sum
            // them without bounds checks, and all horizontal displacements side by side (each
            // sum is a chain of additions waiting on the one before; side by side, the chains
            // run together and in vector registers). Each sum adds the same terms in the same
            // order as the general loop below, so the result is the same.
            let interior = x0 >= search && x0 + BLOCK + search <= w && y0 >= search && y0 + BLOCK + search <= h;
            for dy in -r..=r {
                if interior {
                    row_sums.fill(0.0);
                    for y in y0..y0 + BLOCK {
                        let py = (y as isize - dy) as usize;
                        let cur_run = &cur[y * w + x0..][..BLOCK];
                        // Everything the displacements read on this row: x0 - r .. x0 + BLOCK + r.
                        let prev_span = &prev[py * w + x0 - search..][..BLOCK + 2 * search];
                        for (i, &c) in cur_run.iter().enumerate() {
                            for (sum, &p) in row_sums.iter_mut().zip(&prev_span[i..i + side]) {
                                *sum += (c - p).abs();
                            }
                        }
                    }
                }
                for dx in -r..=r {
                    let (mut sad, mut n) = (0f32, 0u32);
                    if interior {
                        sad = row_sums[(r - dx) as usize];
                        n = (BLOCK * BLOCK) as u32;
                    }
                    for y in (y0..y0 + BLOCK).filter(|_| !interior) {
                        let py = y as isize - dy;
                        if py < 0 || py >= h as isize {
                            continue;
                        }
                        let (cur_row, prev_row) =
                            (&cur[y * w..(y + 1) * w], &prev[py as usize * w..(py as usize + 1) * w]);
                        for (x, c) in cur_row.iter().enumerate().skip(x0).take(BLOCK) {
                            let px = x as isize - dx;
                            if px >= 0 && px < w as isize {
                                sad += (c - prev_row[px as usize]).abs();
                                n += 1;
                            }
                        }
                    }
                    let idx = ((dy + r) as usize) * side + (dx + r) as usize;
                    differences[idx] = if n * 2 >= (BLOCK * BLOCK) as u32 { sad / n as f32 } else { f32::INFINITY };
                    costs[idx] = differences[idx] + 0.002 * (dx.abs() + dy.abs()) as f32;
                }
            }
            // The best vector; ties keep the first found, so order the zero vector first.
            let zero = search * side + search;
            let mut best = zero;
            for (i, &c) in costs.iter().enumerate() {
                if c < costs[best] {
                    best = i;
                }
            }
            let (ix, iy) = (best % side, best / side);
            // Sub-pixel: where two lines of equal and opposite slope through the best cost and
            // its neighbours meet. A sum of absolute differences is V-shaped near its minimum,
            // not parabolic; a parabola's vertex lies nearer the whole pixel (0.21 for a 0.3 px
            // move), and masks carried along such motion fell behind the subject. The lines go
            // through the differences without the length penalty, which would tilt them.
            let refine = |minus: Option<f32>, centre: f32, plus: Option<f32>| -> f32 {
                match (minus, plus) {
                    (Some(m), Some(p)) if m.is_finite() && p.is_finite() => {
                        let slope = m.max(p) - centre;
                        if slope > 1e-6 {
                            (0.5 * (m - p) / slope).clamp(-0.5, 0.5)
                        } else {
                            0.0
                        }
                    }
                    _ => 0.0,
                }
            };
            let d = &differences;
            let fx = refine((ix > 0).then(|| d[best - 1]), d[best], (ix + 1 < side).then(|| d[best + 1]));
            let fy = refine((iy > 0).then(|| d[best - side]), d[best], (iy + 1 < side).then(|| d[best + side]));
            vectors.push((ix as f32 - search as f32 + fx, iy as f32 - search as f32 + fy));
        }
    }
    (vectors, bw, bh)
}

/// For each pixel of `cur` (`w`x`h`, the mask's grid): where in the previous frame its content
/// was, and how well the moved previous luma matches (3x3-averaged absolute difference).
///
/// At ISNet's 1024x1024 this is most of the matte's work, and on a GPU the matte, not the
/// model, sets the pace: so the motion candidates are scored in parallel, row by row, and then
/// chosen between in the same order as one core would (the result is the same to the bit).
fn compensate(prev: &[f32], cur: &[f32], w: usize, h: usize, search: usize) -> (Vec<f32>, Vec<(f32, f32)>) {
    let factor = w.max(h).div_ceil(MOTION_GRID).max(1);
    let ((mut best, mut source), motion) = rayon::join(
        || {
            let zero_diff: Vec<f32> = cur.par_iter().zip(prev).map(|(a, b)| (a - b).abs()).collect();
            let identity = (0..w * h).into_par_iter().map(|k| ((k % w) as f32, (k / w) as f32)).collect::<Vec<_>>();
            (box_mean(&zero_diff, w, h, 1), identity)
        },
        || {
            let (coarse_prev, cw, ch) = shrink(prev, w, h, factor);
            let (coarse_cur, _, _) = shrink(cur, w, h, factor);
            (cw >= BLOCK && ch >= BLOCK && search > 0).then(|| block_motion(&coarse_prev, &coarse_cur, cw, ch, search))
        },
    );
    let Some((vectors, bw, bh)) = motion else {
        return (best, source);
    };
    // A block's side on the mask's grid.
    let block_px = BLOCK * factor;
    // Candidates: the pixel's own block's motion, then its four neighbours'.
    const OFFSETS: [(isize, isize); 5] = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)];
    // A candidate's motion on the mask's grid, for the pixels of block column `column`, row `y`.
    let vector = |(ox, oy): (isize, isize), column: usize, y: usize| -> (f32, f32) {
        let bx = (column as isize + ox).clamp(0, bw as isize - 1) as usize;
        let by = ((y / block_px) as isize + oy).clamp(0, bh as isize - 1) as usize;
        let (vx, vy) = vectors[by * bw + bx];
        (vx * factor as f32, vy * factor as f32)
    };
    // Each candidate's score plane; where each pixel's content came from is worked out again
    // for the winner only (the same arithmetic, so the same numbers), not stored per candidate.
    let scores: Vec<Vec<f32>> = OFFSETS
        .par_iter()
        .map(|&offset| {
            let mut diff = vec![0f32; w * h];
            diff.par_chunks_mut(w).zip(cur.par_chunks(w)).enumerate().for_each(|(y, (diff_row, cur_row))| {
                let mut previous = Sampler::new(prev, w, h);
                let runs = diff_row.chunks_mut(block_px).zip(cur_row.chunks(block_px));
                for (column, (diff_run, cur_run)) in runs.enumerate() {
                    let (vx, vy) = vector(offset, column, y);
                    let sy = y as f32 - vy;
                    for (i, (d, &c)) in diff_run.iter_mut().zip(cur_run).enumerate() {
                        let x = coordinate(column * block_px + i);
                        *d = (c - previous.at(x - vx, sy)).abs();
                    }
                }
            });
            box_mean(&diff, w, h, 1)
        })
        .collect();
    // Each pixel weighs the candidates in the order above, wherever it is computed.
    best.par_chunks_mut(w).zip(source.par_chunks_mut(w)).enumerate().for_each(|(y, (best_row, source_row))| {
        for (x, (best, source)) in best_row.iter_mut().zip(source_row).enumerate() {
            let k = y * w + x;
            let mut winner = None;
            for (offset, score) in OFFSETS.iter().zip(&scores) {
                if score[k] + MARGIN < *best {
                    *best = score[k];
                    winner = Some(*offset);
                }
            }
            if let Some(offset) = winner {
                let (vx, vy) = vector(offset, x / block_px, y);
                *source = (x as f32 - vx, y as f32 - vy);
            }
        }
    });
    (best, source)
}

/// How a frame's mask becomes its alpha. The pipeline uses each tier's [`shipped_mode`]; every
/// mode exists so the evaluation (`eval/`, `make eval`) can measure what each step buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatteMode {
    /// Temporal stabilisation on the mask's grid, then guided upsampling (the pipeline's way).
    #[default]
    Stabilised,
    /// Guided upsampling of each frame's mask on its own, no temporal stabilisation.
    Guided,
    /// Plain per-frame inference: each mask bilinearly resized to the frame, as most
    /// per-frame tools do.
    Bilinear,
}

/// The matte `clearbg remove` ships for `tier`. The per-frame models flicker and their masks are
/// coarse, so they get [`MatteMode::Stabilised`]. The recurrent `video` model is steady by
/// itself and its matte (long side 512) already follows the edges: on `make eval` both the
/// stabiliser and the guided filter made it worse (MAD, dtSSD, flicker and Grad all up, also when
/// upsampling 2.5x and with RVM's own filter settings; eval/RESULTS.md), so it is plainly
/// upsampled.
pub fn shipped_mode(tier: Tier) -> MatteMode {
    match tier {
        Tier::Video => MatteMode::Bilinear,
        Tier::Light | Tier::Human | Tier::Original | Tier::Pro => MatteMode::Stabilised,
    }
}

/// Edge refinement per tier: `pro` follows the frame's edges more closely.
pub fn edge_params(tier: Tier) -> EdgeParams {
    match tier {
        Tier::Pro => EdgeParams { radius: 3, eps: 2e-4 },
        Tier::Original => EdgeParams { radius: 3, eps: 1e-3 },
        Tier::Light | Tier::Human | Tier::Video => EdgeParams::default(),
    }
}

/// The matte step for one stream of frames: mask (and the Y plane on its grid) in, 8-bit alpha
/// at full resolution out. Keeps the stabiliser's history, so use one per video, in frame order.
#[derive(Debug)]
pub struct Matter {
    mode: MatteMode,
    params: EdgeParams,
    stabiliser: TemporalStabiliser,
    resizer: Resizer,
}

impl Matter {
    /// A matter for `tier`'s edge parameters.
    pub fn new(tier: Tier, mode: MatteMode) -> Matter {
        Matter { mode, params: edge_params(tier), stabiliser: TemporalStabiliser::default(), resizer: Resizer::new() }
    }

    /// The same with a differently tuned stabiliser (for experiments; the pipeline uses the
    /// default).
    pub fn with_stabiliser(mut self, stabiliser: TemporalStabiliser) -> Matter {
        self.stabiliser = stabiliser;
        self
    }

    /// The same with other edge parameters (for experiments; the pipeline uses [`edge_params`]).
    pub fn with_edges(mut self, params: EdgeParams) -> Matter {
        self.params = params;
        self
    }

    /// The alpha plane (`frame.width` x `frame.height`) for `frame`, given the segmenter's mask
    /// and its Y plane on the mask's grid (as [`crate::Segmenter::segment_yuv`] returns them).
    pub fn alpha(&mut self, frame: &YuvFrame, mask: Mask, luma: Vec<u8>) -> Vec<u8> {
        self.alpha_of(frame, Segmented { mask, luma, motion: None, keyframe: Some(Reason::Always) })
    }

    /// [`Matter::alpha`] for a frame segmented by [`crate::keyframes::Keyframer`]: the motion it
    /// measured is reused by the stabiliser.
    pub fn alpha_of(&mut self, frame: &YuvFrame, segmented: Segmented) -> Vec<u8> {
        let Segmented { mut mask, luma, motion, .. } = segmented;
        if self.mode == MatteMode::Bilinear {
            let full = resize_plane(&mut self.resizer, &mask.data, mask.width, mask.height, frame.width, frame.height);
            return full.iter().map(|&a| unit_to_byte(a)).collect();
        }
        // The segmenter's resized Y plane is on the mask's grid whenever the model's output is as
        // large as its input (all models here); otherwise resize the frame's own.
        let luma = if luma.len() == mask.data.len() {
            luma
        } else {
            resize_bytes(&mut self.resizer, frame.y(), frame.width, frame.height, mask.width, mask.height)
        };
        let guide_lo = unit_floats(&luma);
        if self.mode == MatteMode::Stabilised {
            self.stabiliser.apply_moved(&mut mask, &guide_lo, motion.as_ref());
        }
        guided_upsample(&mask, &guide_lo, frame.y(), frame.width, frame.height, self.params)
    }
}

/// `pro` fusion: ISNet decides what the subject is; near its outline, MODNet's finer portrait
/// matte may add detail (hair) that ISNet cut off. Returns a mask on ISNet's grid.
pub fn fuse_detail(isnet: &Mask, modnet: &Mask) -> Mask {
    let mut resizer = Resizer::new();
    let (w, h) = (isnet.width as usize, isnet.height as usize);
    let detail = resize_plane(&mut resizer, &modnet.data, modnet.width, modnet.height, isnet.width, isnet.height);
    let subject: Vec<f32> = isnet.data.iter().map(|&a| if a >= 0.5 { 1.0 } else { 0.0 }).collect();
    // Any subject pixel within ~2% of the frame: MODNet may contribute there, nowhere else.
    let near = box_mean(&subject, w, h, (w.max(h) / 50).max(1));
    let data =
        isnet.data.iter().zip(&detail).zip(&near).map(|((&i, &m), &n)| if n > 0.0 { i.max(m) } else { i }).collect();
    Mask { width: isnet.width, height: isnet.height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`x`h` luma plane of a smooth texture (spatial frequencies `fx`, `fy`) moved `shift`
    /// pixels to the right.
    fn panned_texture(w: usize, h: usize, (fx, fy): (f32, f32), shift: f32) -> Vec<f32> {
        (0..w * h).map(|k| 0.5 + 0.3 * (((k % w) as f32 - shift) * fx).sin() * ((k / w) as f32 * fy).cos()).collect()
    }

    /// `m` pixel by pixel, row by row, as [`Motion::fill_row`] gives it.
    fn pixels(m: &Motion) -> Vec<(f32, (f32, f32))> {
        let mut all = Vec::new();
        m.for_each_row(|_, residual, source| all.extend(residual.iter().copied().zip(source.iter().copied())));
        all
    }

    #[test]
    fn box_mean_matches_a_direct_sum() {
        // Wider than two strips of the vertical pass with a part strip at the end, rows in fours
        // and one over, windows wider than the picture, and no window at all.
        for (w, h, r) in [(2 * STRIP + 7, 5usize, 2usize), (3, 9, 2), (5, 4, 3), (1, 1, 1), (6, 7, 0)] {
            let src: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32).collect();
            let fast = box_mean(&src, w, h, r);
            for y in 0..h {
                for x in 0..w {
                    let (mut s, mut n) = (0.0, 0.0);
                    for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            s += src[yy * w + xx];
                            n += 1.0;
                        }
                    }
                    assert!((fast[y * w + x] - s / n).abs() < 1e-4, "{w}x{h} r={r}: ({x},{y})");
                }
            }
        }
    }

    /// The guided filter's one-pass upsampling gives what resizing `a` and `b` with
    /// fast_image_resize and combining them after gives, but for the order of the sums.
    #[test]
    fn upsampling_in_one_pass_resamples_as_the_resizer_does() {
        let mut resizer = Resizer::new();
        // Growing, shrinking, one axis each way, same size, and light's and ISNet's grids to 720p.
        for (w, h, width, height) in [
            (16, 16, 128, 128),
            (37, 23, 29, 11),
            (20, 30, 50, 7),
            (9, 9, 9, 9),
            (256, 256, 1280, 720),
            (1024, 1024, 1280, 720),
        ] {
            let a: Vec<f32> = (0..w * h).map(|k| ((k * 37) % 101) as f32 / 50.0 - 1.0).collect();
            let b: Vec<f32> = (0..w * h).map(|k| ((k * 53) % 97) as f32 / 96.0).collect();
            let guide: Vec<u8> = (0..width * height).map(|k| ((k * 7919) % 251) as u8).collect();
            let fused = apply_upsampled(&a, &b, w, h, &guide, width, height);
            let (wu, hu, widthu, heightu) = (w as u32, h as u32, width as u32, height as u32);
            let big_a = resize_plane(&mut resizer, &a, wu, hu, widthu, heightu);
            let big_b = resize_plane(&mut resizer, &b, wu, hu, widthu, heightu);
            let mut differing = 0;
            for (k, &alpha) in fused.iter().enumerate() {
                let i = guide[k] as f32 * (1.0 / 255.0);
                let expected = ((big_a[k] * i + big_b[k]).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                // Sums in another order may round a value that sits on .5 the other way.
                assert!(alpha.abs_diff(expected) <= 1, "{w}x{h} -> {width}x{height} at {k}: {alpha} vs {expected}");
                differing += (alpha != expected) as usize;
            }
            assert!(
                differing * 1000 <= fused.len(),
                "{w}x{h} -> {width}x{height}: {differing} of {} differ",
                fused.len()
            );
        }
    }

    /// A blocky low-res mask of a bright square becomes a sharp edge where the frame's edge is.
    #[test]
    fn guided_upsampling_snaps_to_the_frames_edge() {
        let (fw, fh) = (128u32, 128u32);
        // Full-res frame: bright square from x=45 to x=83 (not aligned to the 8x grid).
        let guide: Vec<u8> = (0..fw * fh)
            .map(|i| {
                let (x, y) = (i % fw, i / fw);
                if (45..83).contains(&x) && (45..83).contains(&y) {
                    230
                } else {
                    25
                }
            })
            .collect();
        let mut resizer = Resizer::new();
        let guide_lo: Vec<f32> =
            resize_bytes(&mut resizer, &guide, fw, fh, 16, 16).iter().map(|&v| v as f32 / 255.0).collect();
        let mask =
            Mask { width: 16, height: 16, data: guide_lo.iter().map(|&g| ((g - 0.1) / 0.8).clamp(0.0, 1.0)).collect() };
        let alpha = guided_upsample(&mask, &guide_lo, &guide, fw, fh, EdgeParams::default());
        let at = |x: u32, y: u32| alpha[(y * fw + x) as usize] as f32 / 255.0;
        assert!(at(64, 64) > 0.95, "inside {}", at(64, 64));
        assert!(at(10, 10) < 0.05, "outside {}", at(10, 10));
        // One pixel either side of the true edge: a hard step, not a ramp over 8 pixels.
        assert!(at(45, 64) - at(43, 64) > 0.6, "edge {} -> {}", at(43, 64), at(45, 64));
    }

    #[test]
    fn still_pixels_are_steadied_and_moving_pixels_follow() {
        let mut stab = TemporalStabiliser::default();
        let guide = vec![0.5f32; 16];
        let mut first = Mask { width: 4, height: 4, data: vec![1.0; 16] };
        stab.apply(&mut first, &guide);
        // Same picture, the model flickers to 0: the matte barely moves.
        let mut flicker = Mask { width: 4, height: 4, data: vec![0.0; 16] };
        stab.apply(&mut flicker, &guide);
        assert!((flicker.data[5] - 0.7).abs() < 1e-5, "{}", flicker.data[5]);
        // The picture changes everywhere a little (motion): the new mask is taken as is.
        let moved = vec![0.6f32; 16];
        let mut follow = Mask { width: 4, height: 4, data: vec![0.0; 16] };
        stab.apply(&mut follow, &moved);
        assert_eq!(follow.data[5], 0.0);
    }

    /// The camera pans 2 px a frame over textured content and the model glitches to 0: the
    /// matte is carried along with the picture and barely moves, which comparing each pixel
    /// with the same pixel of the last frame (the content there changed) could not do.
    #[test]
    fn a_panning_picture_carries_its_matte_along() {
        let (w, h) = (64usize, 64usize);
        let guide = |shift: f32| panned_texture(w, h, (0.4, 0.3), shift);
        let mut stab = TemporalStabiliser::default();
        let mut first =
            Mask { width: w as u32, height: h as u32, data: (0..w * h).map(|k| (k % w < 32) as u8 as f32).collect() };
        stab.apply(&mut first, &guide(0.0));
        let mut glitch = Mask { width: w as u32, height: h as u32, data: vec![0.0; w * h] };
        stab.apply(&mut glitch, &guide(2.0));
        let at = |x: usize, y: usize| glitch.data[y * w + x];
        assert!((at(20, 32) - 0.7).abs() < 0.05, "inside the subject: {}", at(20, 32));
        assert!(at(50, 32) < 0.05, "background: {}", at(50, 32));
        // Without motion compensation the same pixel's luma changed, so the glitch went through.
        let diff = guide(0.0).iter().zip(guide(2.0)).map(|(a, b)| (a - b).abs()).sum::<f32>() / (w * h) as f32;
        assert!(diff > 0.08, "the pan must change the picture: {diff}");
    }

    /// The matte's passes are split over cores; the result must not depend on how many: the same
    /// stabilised, upsampled alpha on one thread as on several, to the bit.
    #[test]
    fn the_matte_is_the_same_on_one_core_as_on_several() {
        let (w, h) = (200usize, 120usize);
        let guide = |shift: f32| panned_texture(w, h, (0.23, 0.19), shift);
        let subject = |shift: f32| -> Vec<f32> {
            (0..w * h).map(|k| ((k % w) as f32 - shift - 80.0).abs().min(40.0) / 40.0).map(|d| 1.0 - d).collect()
        };
        let full_luma: Vec<u8> = (0..(2 * w) * (2 * h)).map(|k| ((k * 7919) % 251) as u8).collect();
        let matte = || {
            let mut stab = TemporalStabiliser::default();
            let mut alphas = Vec::new();
            for (i, shift) in [0.0f32, 1.5, 3.25, 6.0].into_iter().enumerate() {
                let mut mask = Mask { width: w as u32, height: h as u32, data: subject(shift + i as f32 * 0.1) };
                stab.apply(&mut mask, &guide(shift));
                let params = EdgeParams::default();
                alphas.push(guided_upsample(&mask, &guide(shift), &full_luma, 2 * w as u32, 2 * h as u32, params));
            }
            alphas
        };
        let on = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(matte);
        let one = on(1);
        assert_eq!(one, on(4));
        // The keyframe planner's motion, chosen on a smaller copy and spread back over the grid.
        let planned = || {
            let m = Motion::measure_within(&guide(0.0), &guide(2.5), w, h, 6, 64);
            pixels(&m)
        };
        let on =
            |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(planned);
        assert_eq!(on(1), on(4));
        assert!(one[3].iter().any(|&a| a > 200) && one[3].iter().any(|&a| a < 50), "a real matte, not a flat one");
    }

    /// On a coarser copy, the motion found is the full-grid one: a texture that moved 4 px right
    /// is explained (small residual) and its pixels point 4 px back.
    #[test]
    fn motion_measured_on_a_smaller_copy_matches_the_full_grid() {
        let (w, h) = (192usize, 128usize);
        let frame = |shift: f32| panned_texture(w, h, (0.21, 0.17), shift);
        let (prev, cur) = (frame(0.0), frame(4.0));
        let full = Motion::measure(&prev, &cur, w, h, 6);
        let fast = Motion::measure_within(&prev, &cur, w, h, 6, 96);
        assert_eq!((fast.width, fast.height, pixels(&fast).len()), (w, h, w * h));
        let inner = |m: &Motion| {
            let ks: Vec<usize> =
                (0..w * h).filter(|k| (24..w - 24).contains(&(k % w)) && (24..h - 24).contains(&(k / w))).collect();
            let at = |k: usize| m.at(k % w, k / w);
            let shift = ks.iter().map(|&k| (k % w) as f32 - at(k).1 .0).sum::<f32>() / ks.len() as f32;
            let residual = ks.iter().map(|&k| at(k).0).sum::<f32>() / ks.len() as f32;
            (shift, residual)
        };
        let (full_shift, full_residual) = inner(&full);
        let (fast_shift, fast_residual) = inner(&fast);
        assert!((full_shift - 4.0).abs() < 0.5, "full grid: {full_shift}");
        assert!((fast_shift - 4.0).abs() < 0.5, "smaller copy: {fast_shift}");
        assert!(full_residual < 0.02 && fast_residual < 0.02, "{full_residual} {fast_residual}");
    }

    /// Motion measured on a copy 4x smaller of a grid that is not a multiple of 4: read row by
    /// row (counting columns) it is what it is pixel by pixel (dividing), the columns and rows
    /// the copy dropped included.
    #[test]
    fn motion_kept_on_a_smaller_copy_reads_the_same_row_by_row() {
        let (w, h) = (203usize, 131usize);
        let frame = |shift: f32| panned_texture(w, h, (0.21, 0.17), shift);
        let m = Motion::measure_within(&frame(0.0), &frame(3.0), w, h, 6, 64);
        assert_eq!(m.scale, 4);
        let by_pixel: Vec<_> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| m.at(x, y)).collect();
        assert_eq!(pixels(&m), by_pixel);
        let (_, (sx, _)) = m.at(100, 60);
        assert!((100.0 - sx - 3.0).abs() < 1.0, "the texture moved 3 px right: {sx}");
    }

    /// A texture moved by a fraction of a pixel: the block motion finds the fraction, not a
    /// value pulled towards the whole pixel (a parabola through the costs found 0.19, 1.14 and
    /// -0.28 here).
    #[test]
    fn sub_pixel_motion_is_measured_without_bias_towards_whole_pixels() {
        let (w, h) = (128usize, 96usize);
        let frame = |shift: f32| panned_texture(w, h, (0.21, 0.17), shift);
        for shift in [0.3f32, 1.3, -0.4] {
            let (vectors, bw, bh) = block_motion(&frame(0.0), &frame(shift), w, h, 6);
            let inner: Vec<f32> = (0..bw * bh)
                .filter(|&b| (1..bw - 1).contains(&(b % bw)) && (1..bh - 1).contains(&(b / bw)))
                .map(|b| vectors[b].0)
                .collect();
            let found = inner.iter().sum::<f32>() / inner.len() as f32;
            assert!((found - shift).abs() < 0.03, "moved {shift}, found {found}");
        }
    }

    #[test]
    fn pro_fusion_adds_detail_only_near_the_subject() {
        let (w, h) = (100u32, 100u32);
        let isnet =
            Mask { width: w, height: h, data: (0..w * h).map(|i| if i % w < 50 { 1.0 } else { 0.0 }).collect() };
        let modnet = Mask { width: w, height: h, data: vec![0.4; (w * h) as usize] };
        let fused = fuse_detail(&isnet, &modnet);
        assert_eq!(fused.data[(50 * w + 10) as usize], 1.0); // inside: ISNet
        assert_eq!(fused.data[(50 * w + 51) as usize], 0.4); // just outside: MODNet's detail
        assert_eq!(fused.data[(50 * w + 99) as usize], 0.0); // far away: ISNet's background
    }
}
