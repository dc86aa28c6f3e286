//! Which files ffmpeg may read, and as what, decided from their bytes before ffmpeg sees them.
//!
//! ffmpeg guesses a file's format from its contents, and some of the formats it knows are
//! programs rather than media: an HLS playlist or an `ffconcat` list names other files (local
//! ones included) for the demuxer to open, and a live playlist can keep a reader waiting
//! forever. So nothing reaches ffmpeg unrecognised: the first bytes must be one of a short list
//! of real video containers, and every ffmpeg and ffprobe command then forces that very demuxer
//! (`-f`) and allows only the `file` protocol. Anything else is refused with a reason.

use std::io::Read;
use std::path::Path;

use crate::error::{EngineError, Result};

/// How many leading bytes [`sniff`] looks at (and callers should offer, when they have them).
pub const SNIFF_BYTES: usize = 4096;

/// A video container we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media (MP4, M4V, 3GP) — ffmpeg's `mov` demuxer.
    Mp4,
    /// QuickTime (MOV) — the same demuxer.
    QuickTime,
    /// WebM — ffmpeg's `matroska` demuxer.
    WebM,
    /// Matroska (MKV).
    Matroska,
    /// AVI (RIFF).
    Avi,
    /// MPEG transport stream (TS, M2TS).
    MpegTs,
}

/// A still picture we read (background images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// WebP (still; ffmpeg cannot decode animated WebP).
    Webp,
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A video container on the allow-list.
    Video(Container),
    /// A still picture.
    Picture(Picture),
    /// Anything else (text, a playlist, an unknown or unsupported format).
    Unknown,
}

impl Container {
    /// The ffmpeg demuxer forced with `-f`.
    pub fn demuxer(self) -> &'static str {
        match self {
            Container::Mp4 | Container::QuickTime => "mov",
            Container::WebM | Container::Matroska => "matroska",
            Container::Avi => "avi",
            Container::MpegTs => "mpegts",
        }
    }

    /// The media type a file of this container is served and stored as.
    pub fn media_type(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
            Container::QuickTime => "video/quicktime",
            Container::WebM => "video/webm",
            Container::Matroska => "video/x-matroska",
            Container::Avi => "video/x-msvideo",
            Container::MpegTs => "video/mp2t",
        }
    }

    /// The file extension a stored file of this container gets.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::QuickTime => "mov",
            Container::WebM => "webm",
            Container::Matroska => "mkv",
            Container::Avi => "avi",
            Container::MpegTs => "ts",
        }
    }

    /// The container of the file at `path`, or the reason it is refused.
    pub fn of_file(path: &Path) -> Result<Container> {
        match sniff_file(path)? {
            Sniffed::Video(container) => Ok(container),
            Sniffed::Picture(Picture::Webp) => Err(EngineError::UnsupportedInput(
                "WebP input is not supported (ffmpeg cannot decode animated WebP); convert it to MP4 or WebM first"
                    .into(),
            )),
            Sniffed::Picture(picture) => {
                Err(EngineError::InvalidInput(format!("this is a still image ({}), not a video", picture.name())))
            }
            Sniffed::Unknown => Err(not_a_video()),
        }
    }
}

impl Picture {
    /// The ffmpeg decoder forced with `-c:v` (pictures are read with the `image2` demuxer and
    /// `-pattern_type none`: exactly the one file, no sequence or glob patterns).
    pub fn decoder(self) -> &'static str {
        match self {
            Picture::Png => "png",
            Picture::Jpeg => "mjpeg",
            Picture::Webp => "webp",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Picture::Png => "PNG",
            Picture::Jpeg => "JPEG",
            Picture::Webp => "WebP",
        }
    }

    /// The picture format of the file at `path`, or the reason it is refused.
    pub fn of_file(path: &Path) -> Result<Picture> {
        match sniff_file(path)? {
            Sniffed::Picture(picture) => Ok(picture),
            _ => Err(EngineError::InvalidOptions(
                "the background image is not a readable picture: its bytes are not PNG, JPEG or WebP".into(),
            )),
        }
    }
}

/// The error for bytes that are no video container we read.
fn not_a_video() -> EngineError {
    EngineError::InvalidInput(
        "not a readable video file: its bytes are not MP4/MOV, WebM/Matroska, AVI or MPEG-TS (playlists, lists of \
         files and other formats are refused)"
            .into(),
    )
}

/// Reads the first [`SNIFF_BYTES`] of `path` and sniffs them.
fn sniff_file(path: &Path) -> Result<Sniffed> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path).and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut head)).map_err(|e| {
        match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::InvalidInput(format!("{} does not exist", path.display())),
            _ => EngineError::Io { context: format!("reading {}", path.display()), source: e },
        }
    })?;
    Ok(sniff(&head))
}

/// Recognises a file from its first bytes (up to [`SNIFF_BYTES`] of them).
pub fn sniff(head: &[u8]) -> Sniffed {
    if let Some(container) = sniff_video(head) {
        return Sniffed::Video(container);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Sniffed::Picture(Picture::Png)
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Sniffed::Picture(Picture::Jpeg)
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Sniffed::Picture(Picture::Webp)
    } else {
        Sniffed::Unknown
    }
}

fn sniff_video(head: &[u8]) -> Option<Container> {
    // ISO BMFF / QuickTime: a box (32-bit size, 4-letter type) of a type that opens such files.
    // Old QuickTime files may start with `moov`, `mdat`, `wide` or `free` instead of `ftyp`.
    if head.len() >= 12 {
        let kind = &head[4..8];
        if kind == b"ftyp" {
            let brand = &head[8..12];
            return Some(if brand == b"qt  " { Container::QuickTime } else { Container::Mp4 });
        }
        if [b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"].iter().any(|k| kind == *k) {
            return Some(Container::QuickTime);
        }
    }
    // EBML: Matroska or WebM, told apart by the DocType in the header.
    if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        let header = &head[..head.len().min(64)];
        return Some(if header.windows(4).any(|w| w == b"webm") { Container::WebM } else { Container::Matroska });
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        return Some(Container::Avi);
    }
    // MPEG-TS: a sync byte every 188 bytes (M2TS: every 192, after a 4-byte timestamp).
    let synced = |offset: usize, packet: usize| (0..3).all(|i| head.get(offset + i * packet) == Some(&0x47));
    if synced(0, 188) || synced(4, 192) {
        return Some(Container::MpegTs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_containers_are_recognised() {
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\x02\0"), Sniffed::Video(Container::Mp4));
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  \0\0\x02\0"), Sniffed::Video(Container::QuickTime));
        assert_eq!(sniff(b"\0\0\0\x08wide\0\0\0\0mdat"), Sniffed::Video(Container::QuickTime));
        let mut webm = vec![0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01, 0x42, 0x82, 0x84];
        webm.extend_from_slice(b"webm");
        assert_eq!(sniff(&webm), Sniffed::Video(Container::WebM));
        webm.truncate(12);
        webm.extend_from_slice(b"matroska");
        assert_eq!(sniff(&webm), Sniffed::Video(Container::Matroska));
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Sniffed::Video(Container::Avi));
        let mut ts = vec![0u8; 188 * 3];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(sniff(&ts), Sniffed::Video(Container::MpegTs));
    }

    #[test]
    fn playlists_lists_and_text_are_unknown() {
        for text in [
            &b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nfile:///etc/passwd\n"[..],
            b"ffconcat version 1.0\nfile vid_x.mp4\n",
            b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n",
            b"<?xml version=\"1.0\"?><MPD>",
            b"",
            b"\0\0\0\x20ftyp",
        ] {
            assert_eq!(sniff(text), Sniffed::Unknown, "{:?}", String::from_utf8_lossy(text));
        }
        // One sync byte is chance, not a transport stream.
        assert_eq!(sniff(b"G hello"), Sniffed::Unknown);
    }

    #[test]
    fn pictures_are_told_apart_from_videos() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Sniffed::Picture(Picture::Png));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]), Sniffed::Picture(Picture::Jpeg));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Sniffed::Picture(Picture::Webp));
    }
}
