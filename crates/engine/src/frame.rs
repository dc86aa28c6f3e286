//! Plain pixel buffers passed between the pipeline's stages.

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

impl RgbFrame {
    /// Bytes in one frame of this size.
    pub fn byte_len(width: u32, height: u32) -> usize {
        width as usize * height as usize * 3
    }

    /// Luma in [0,1] (BT.601 weights): the guide for edge-aware upsampling and motion checks.
    pub fn luma(&self) -> Vec<f32> {
        self.data
            .chunks_exact(3)
            .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * (1.0 / 255.0))
            .collect()
    }
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
}
