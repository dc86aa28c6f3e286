//! What the user asked for: the output format, the background and the composition.
//!
//! Parsing lives here so that the CLI and the HTTP service accept exactly the same values.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{EngineError, Result};

/// The output container/codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// WebM, VP9 with alpha, Opus audio.
    Webm,
    /// QuickTime, ProRes 4444 with alpha, AAC audio.
    Mov,
    /// MP4, H.264 over an opaque background, AAC audio.
    Mp4,
    /// Animated GIF with 1-bit transparency, at most 15 fps and 480 px wide.
    Gif,
    /// Animated WebP with alpha.
    Webp,
    /// A zip of RGBA PNG frames.
    PngSequence,
    /// The alpha matte alone, as a greyscale H.264 MP4.
    Matte,
}

impl OutputFormat {
    /// Every format, in the API's order.
    pub const ALL: [OutputFormat; 7] = [
        OutputFormat::Webm,
        OutputFormat::Mov,
        OutputFormat::Mp4,
        OutputFormat::Gif,
        OutputFormat::Webp,
        OutputFormat::PngSequence,
        OutputFormat::Matte,
    ];

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Webm => "webm",
            OutputFormat::Mov => "mov",
            OutputFormat::Mp4 => "mp4",
            OutputFormat::Gif => "gif",
            OutputFormat::Webp => "webp",
            OutputFormat::PngSequence => "png_sequence",
            OutputFormat::Matte => "matte",
        }
    }

    /// The file extension outputs of this format get.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::PngSequence => "zip",
            OutputFormat::Matte => "mp4",
            other => other.name(),
        }
    }

    /// True when the format can carry transparency.
    pub fn supports_alpha(self) -> bool {
        !matches!(self, OutputFormat::Mp4 | OutputFormat::Matte)
    }

    /// True when the format keeps the input's audio.
    pub fn carries_audio(self) -> bool {
        matches!(self, OutputFormat::Webm | OutputFormat::Mov | OutputFormat::Mp4)
    }

    /// The format an output path implies (`.zip` means a PNG sequence).
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "webm" => Ok(OutputFormat::Webm),
            "mov" => Ok(OutputFormat::Mov),
            "mp4" | "m4v" => Ok(OutputFormat::Mp4),
            "gif" => Ok(OutputFormat::Gif),
            "webp" => Ok(OutputFormat::Webp),
            "zip" => Ok(OutputFormat::PngSequence),
            _ => Err(EngineError::InvalidOptions(format!(
                "cannot tell the output format from {:?}: use a .webm, .mov, .mp4, .gif, .webp or .zip name, or pass --format",
                path.display().to_string()
            ))),
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputFormat {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<OutputFormat> {
        OutputFormat::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            EngineError::InvalidOptions(format!(
                "unknown output format {s:?}: expected webm, mov, mp4, gif, webp, png_sequence or matte"
            ))
        })
    }
}

/// What the subject is put in front of.
#[derive(Debug, Clone, PartialEq)]
pub enum Background {
    /// Nothing: the output keeps an alpha channel.
    Transparent,
    /// A solid colour (RGB, 8 bits).
    Color([u8; 3]),
    /// A picture file, scaled to cover the canvas.
    Image(PathBuf),
}

impl Background {
    /// True for [`Background::Transparent`].
    pub fn is_transparent(&self) -> bool {
        matches!(self, Background::Transparent)
    }

    /// Parses the API's colour forms: 3 floats in [0,1] (as `bg_color` sends them).
    pub fn from_unit_rgb(rgb: &[f64]) -> Result<Background> {
        let [r, g, b] = rgb else {
            return Err(EngineError::InvalidOptions(format!("a colour needs 3 components, got {}", rgb.len())));
        };
        let mut out = [0u8; 3];
        for (o, v) in out.iter_mut().zip([r, g, b]) {
            if !(0.0..=1.0).contains(v) {
                return Err(EngineError::InvalidOptions(format!(
                    "colour component {v} is outside 0-1 (colours are RGB floats from 0 to 1)"
                )));
            }
            *o = (v * 255.0).round() as u8;
        }
        Ok(Background::Color(out))
    }
}

impl FromStr for Background {
    type Err = EngineError;
    /// `transparent`, `green`, `white`, `black`, `blue`, `#RRGGBB`, `r,g,b` floats in [0,1], or a
    /// path to an image file.
    fn from_str(s: &str) -> Result<Background> {
        let s = s.trim();
        let named = match s.to_ascii_lowercase().as_str() {
            "transparent" | "none" => Some(Background::Transparent),
            "green" => Some(Background::Color([0, 255, 0])),
            "white" => Some(Background::Color([255, 255, 255])),
            "black" => Some(Background::Color([0, 0, 0])),
            "blue" => Some(Background::Color([0, 0, 255])),
            _ => None,
        };
        if let Some(bg) = named {
            return Ok(bg);
        }
        if let Some(hex) = s.strip_prefix('#') {
            let bytes = (hex.len() == 6).then(|| hex::decode(hex).ok()).flatten();
            return match bytes {
                Some(b) => Ok(Background::Color([b[0], b[1], b[2]])),
                None => Err(EngineError::InvalidOptions(format!("{s:?} is not a #RRGGBB colour"))),
            };
        }
        if s.contains(',') {
            let parts: std::result::Result<Vec<f64>, _> = s.split(',').map(|p| p.trim().parse::<f64>()).collect();
            return match parts {
                Ok(v) => Background::from_unit_rgb(&v),
                Err(_) => Err(EngineError::InvalidOptions(format!("{s:?} is not an r,g,b colour of floats in 0-1"))),
            };
        }
        let path = PathBuf::from(s);
        if path.is_file() {
            return Ok(Background::Image(path));
        }
        Err(EngineError::InvalidOptions(format!(
            "background {s:?} is neither a colour (transparent, green, white, black, blue, #RRGGBB, r,g,b) nor an image file"
        )))
    }
}

/// Where the subject sits on the canvas: a 9-point grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anchor {
    /// Top-left corner.
    TopLeft,
    /// Middle of the top edge.
    TopCenter,
    /// Top-right corner.
    TopRight,
    /// Middle of the left edge.
    CenterLeft,
    /// Centre.
    #[default]
    Center,
    /// Middle of the right edge.
    CenterRight,
    /// Bottom-left corner.
    BottomLeft,
    /// Middle of the bottom edge.
    BottomCenter,
    /// Bottom-right corner.
    BottomRight,
}

impl Anchor {
    const NAMES: [(&'static str, Anchor); 9] = [
        ("top-left", Anchor::TopLeft),
        ("top-center", Anchor::TopCenter),
        ("top-right", Anchor::TopRight),
        ("center-left", Anchor::CenterLeft),
        ("center", Anchor::Center),
        ("center-right", Anchor::CenterRight),
        ("bottom-left", Anchor::BottomLeft),
        ("bottom-center", Anchor::BottomCenter),
        ("bottom-right", Anchor::BottomRight),
    ];

    /// Horizontal and vertical position as fractions of the free space (0, 0.5 or 1).
    fn fractions(self) -> (f64, f64) {
        let index = Anchor::NAMES.iter().position(|(_, a)| *a == self).expect("every anchor is named");
        ((index % 3) as f64 / 2.0, (index / 3) as f64 / 2.0)
    }
}

impl FromStr for Anchor {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Anchor> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        let canonical = match s.as_str() {
            "top" => "top-center",
            "bottom" => "bottom-center",
            "left" | "left-center" => "center-left",
            "right" | "right-center" => "center-right",
            "middle" | "center-center" | "centre" => "center",
            other => other,
        };
        Anchor::NAMES.iter().find(|(n, _)| *n == canonical).map(|(_, a)| *a).ok_or_else(|| {
            EngineError::InvalidOptions(format!(
                "unknown anchor {s:?}: expected one of top-left, top-center, top-right, center-left, center, center-right, bottom-left, bottom-center, bottom-right"
            ))
        })
    }
}

/// How the cut-out subject is placed: the API's `composition`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Composition {
    /// Output size; `None` keeps the input's size.
    pub canvas: Option<(u32, u32)>,
    /// Where the subject sits.
    pub anchor: Anchor,
    /// Scale of the subject (1 = input size).
    pub scale: f64,
    /// Offset from the anchor, in output pixels (x right, y down).
    pub offset: (i32, i32),
}

impl Default for Composition {
    fn default() -> Self {
        Composition { canvas: None, anchor: Anchor::Center, scale: 1.0, offset: (0, 0) }
    }
}

/// Largest canvas side we accept.
const MAX_CANVAS_SIDE: u32 = 8192;

impl Composition {
    /// True when the subject stays exactly where it was.
    pub fn is_identity(&self) -> bool {
        self.canvas.is_none() && self.scale == 1.0 && self.offset == (0, 0)
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 10.0) {
            return Err(EngineError::InvalidOptions(format!("scale {} must be above 0 and at most 10", self.scale)));
        }
        if let Some((w, h)) = self.canvas {
            if w < 2 || h < 2 || w > MAX_CANVAS_SIDE || h > MAX_CANVAS_SIDE {
                return Err(EngineError::InvalidOptions(format!(
                    "canvas {w}x{h} must be between 2x2 and {MAX_CANVAS_SIDE}x{MAX_CANVAS_SIDE}"
                )));
            }
        }
        Ok(())
    }

    /// The output size for an input frame of `w`x`h`.
    pub fn canvas_size(&self, w: u32, h: u32) -> (u32, u32) {
        self.canvas.unwrap_or((w, h))
    }

    /// The scaled subject's size (even-rounded by ffmpeg's `scale`), for a frame of `w`x`h`.
    pub fn subject_size(&self, w: u32, h: u32) -> (u32, u32) {
        let s = |v: u32| ((v as f64 * self.scale).round() as u32).max(1);
        (s(w), s(h))
    }

    /// Top-left position of the scaled subject on the canvas.
    pub fn position(&self, w: u32, h: u32) -> (i64, i64) {
        let (cw, ch) = self.canvas_size(w, h);
        let (sw, sh) = self.subject_size(w, h);
        let (fx, fy) = self.anchor.fractions();
        let x = ((cw as f64 - sw as f64) * fx).round() as i64 + self.offset.0 as i64;
        let y = ((ch as f64 - sh as f64) * fy).round() as i64 + self.offset.1 as i64;
        (x, y)
    }
}

/// Parses `WxH` (as `--canvas` takes it).
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) =
        s.split_once(['x', 'X']).ok_or_else(|| EngineError::InvalidOptions(format!("{s:?} is not WIDTHxHEIGHT")))?;
    let parse = |v: &str| {
        v.trim().parse::<u32>().map_err(|_| EngineError::InvalidOptions(format!("{s:?} is not WIDTHxHEIGHT")))
    };
    Ok((parse(w)?, parse(h)?))
}

/// Parses `X,Y` pixel offsets (as `--offset` takes it).
pub fn parse_offset(s: &str) -> Result<(i32, i32)> {
    let (x, y) = s.split_once(',').ok_or_else(|| EngineError::InvalidOptions(format!("{s:?} is not X,Y")))?;
    let parse = |v: &str| v.trim().parse::<i32>().map_err(|_| EngineError::InvalidOptions(format!("{s:?} is not X,Y")));
    Ok((parse(x)?, parse(y)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backgrounds_parse_every_documented_form() {
        assert_eq!("transparent".parse::<Background>().unwrap(), Background::Transparent);
        assert_eq!("GREEN".parse::<Background>().unwrap(), Background::Color([0, 255, 0]));
        assert_eq!("#ff8000".parse::<Background>().unwrap(), Background::Color([255, 128, 0]));
        assert_eq!("0.035,0.635,0.274".parse::<Background>().unwrap(), Background::Color([9, 162, 70]));
        assert!("255,0,0".parse::<Background>().unwrap_err().to_string().contains("outside 0-1"));
        assert!("#12345".parse::<Background>().is_err());
        assert!("/no/such/picture.png".parse::<Background>().unwrap_err().to_string().contains("neither a colour"));
    }

    #[test]
    fn anchors_place_the_subject_on_a_nine_point_grid() {
        let comp = |anchor: &str, offset| Composition {
            canvas: Some((1920, 1080)),
            anchor: anchor.parse().unwrap(),
            scale: 0.5,
            offset,
        };
        assert_eq!(comp("top-left", (0, 0)).position(1280, 720), (0, 0));
        assert_eq!(comp("center", (0, 0)).position(1280, 720), (640, 360));
        assert_eq!(comp("bottom-right", (-10, 5)).position(1280, 720), (1270, 725));
        assert_eq!(comp("bottom", (0, 0)).position(1280, 720), (640, 720));
        assert!("upper-left".parse::<Anchor>().is_err());
    }

    #[test]
    fn formats_follow_extensions_and_names() {
        assert_eq!(OutputFormat::from_path(Path::new("a/b.WEBM")).unwrap(), OutputFormat::Webm);
        assert_eq!(OutputFormat::from_path(Path::new("frames.zip")).unwrap(), OutputFormat::PngSequence);
        assert!(OutputFormat::from_path(Path::new("out.avi")).is_err());
        for f in OutputFormat::ALL {
            assert_eq!(f.name().parse::<OutputFormat>().unwrap(), f);
        }
        assert!(Composition { scale: 0.0, ..Default::default() }.validate().is_err());
        assert_eq!(parse_size("640x360").unwrap(), (640, 360));
        assert_eq!(parse_offset("-4,7").unwrap(), (-4, 7));
    }
}
