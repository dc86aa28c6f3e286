//! Plain pixel buffers: the YUV frames passed between the pipeline's stages, RGB frames for
//! callers that have RGB, and masks.

/// An RGB frame, 8 bits per channel, rows packed without padding.
#[derive(Debug, Clone)]
pub struct RgbFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// A single-channel float image in [0,1]: a model's foreground probability or an alpha matte.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` values, row-major.
    pub data: Vec<f32>,
}

impl Mask {
    /// Fraction of the mask that is foreground (alpha ≥ 0.5).
    pub fn coverage(&self) -> f64 {
        self.data.iter().filter(|&&a| a >= 0.5).count() as f64 / self.data.len().max(1) as f64
    }

    /// How far two masks of the same grid agree on what is foreground (alpha ≥ 0.5): the size of
    /// their intersection over that of their union, 1 when neither has any.
    pub fn agreement(&self, other: &Mask) -> f64 {
        let (inter, union) = self.data.iter().zip(&other.data).fold((0u64, 0u64), |(i, u), (&a, &b)| {
            let (a, b) = (a >= 0.5, b >= 0.5);
            (i + (a && b) as u64, u + (a || b) as u64)
        });
        if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        }
    }
}

/// How a YUV frame's numbers map to RGB: the matrix and the range of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColorSpace {
    /// BT.709 (HD) rather than BT.601 (SD, and ffmpeg's default for untagged video).
    pub bt709: bool,
    /// Full range (0-255) rather than limited (16-235).
    pub full_range: bool,
}

impl ColorSpace {
    /// ffmpeg's names, for tagging the raw frames we hand the encoder.
    pub fn ffmpeg_names(self) -> (&'static str, &'static str) {
        (if self.bt709 { "bt709" } else { "smpte170m" }, if self.full_range { "pc" } else { "tv" })
    }

    /// RGB in [0,255] from Y, U, V samples.
    #[inline]
    pub fn to_rgb(self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (kr, kb) = if self.bt709 { (0.2126, 0.0722) } else { (0.299, 0.114) };
        let kg = 1.0 - kr - kb;
        let (y, cb, cr) = if self.full_range {
            (y, u - 128.0, v - 128.0)
        } else {
            ((y - 16.0) * (255.0 / 219.0), (u - 128.0) * (255.0 / 224.0), (v - 128.0) * (255.0 / 224.0))
        };
        let r = y + 2.0 * (1.0 - kr) * cr;
        let b = y + 2.0 * (1.0 - kb) * cb;
        let g = (y - kr * r - kb * b) / kg;
        [r.clamp(0.0, 255.0), g.clamp(0.0, 255.0), b.clamp(0.0, 255.0)]
    }
}

/// A planar 4:2:0 frame as the decoder delivers it: full-resolution Y, then U and V at half
/// resolution (rounded up). The pipeline moves frames in this form end to end: the encoder gets
/// the same planes back plus an alpha plane, so no stage converts the whole picture to RGB.
#[derive(Debug, Clone)]
pub struct YuvFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The source's colour space.
    pub color: ColorSpace,
    /// Y, U and V planes, packed.
    pub data: Vec<u8>,
}

impl YuvFrame {
    /// Size of each chroma plane.
    pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
        (width.div_ceil(2), height.div_ceil(2))
    }

    /// Bytes in one frame of this size.
    pub fn byte_len(width: u32, height: u32) -> usize {
        let (cw, ch) = Self::chroma_size(width, height);
        width as usize * height as usize + 2 * cw as usize * ch as usize
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }

    /// The two chroma planes.
    pub fn uv(&self) -> (&[u8], &[u8]) {
        let luma = self.width as usize * self.height as usize;
        let (cw, ch) = Self::chroma_size(self.width, self.height);
        let plane = cw as usize * ch as usize;
        (&self.data[luma..luma + plane], &self.data[luma + plane..luma + 2 * plane])
    }

    /// Converts an RGB frame (BT.601, limited range), for tests and callers that have RGB.
    pub fn from_rgb(rgb: &RgbFrame) -> YuvFrame {
        let (w, h) = (rgb.width as usize, rgb.height as usize);
        let (cw, ch) = Self::chroma_size(rgb.width, rgb.height);
        let (cw, ch) = (cw as usize, ch as usize);
        let mut data = vec![0u8; Self::byte_len(rgb.width, rgb.height)];
        let px = |x: usize, y: usize| {
            let p = &rgb.data[(y.min(h - 1) * w + x.min(w - 1)) * 3..][..3];
            (p[0] as f32, p[1] as f32, p[2] as f32)
        };
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = px(x, y);
                data[y * w + x] = (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round() as u8;
            }
        }
        for y in 0..ch {
            for x in 0..cw {
                let mut sum = (0.0, 0.0, 0.0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (r, g, b) = px(2 * x + dx, 2 * y + dy);
                    sum = (sum.0 + r / 4.0, sum.1 + g / 4.0, sum.2 + b / 4.0);
                }
                let (r, g, b) = sum;
                data[w * h + y * cw + x] = (128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0).round() as u8;
                data[w * h + cw * ch + y * cw + x] =
                    (128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0).round() as u8;
            }
        }
        YuvFrame { width: rgb.width, height: rgb.height, color: ColorSpace::default(), data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuv_round_trips_to_rgb_within_rounding() {
        let rgb = RgbFrame { width: 3, height: 1, data: vec![255, 0, 0, 0, 255, 0, 30, 60, 90] };
        let yuv = YuvFrame::from_rgb(&RgbFrame { width: 1, height: 1, data: rgb.data[6..9].to_vec() });
        let (u, v) = yuv.uv();
        let back = ColorSpace::default().to_rgb(yuv.y()[0] as f32, u[0] as f32, v[0] as f32);
        for (b, o) in back.iter().zip([30.0, 60.0, 90.0]) {
            assert!((b - o).abs() < 2.0, "{back:?}");
        }
        assert_eq!(YuvFrame::byte_len(65, 49), 65 * 49 + 2 * 33 * 25);
    }
}
