//! A job's options, parsed and validated from the API's JSON.
//!
//! The API accepts the union of every documented form (`bg_type`/`bg_color`/`bg_image_url` and
//! the `background` object, see removebgvideo-api.md §1.2) and stores one normalised
//! [`JobSpec`]. Every problem is collected into one 422 that names each field and says why.

use clearbg_engine::{Composition, Keyframes, OutputFormat, Tier};
use serde_json::{Map, Value};

use super::{BackgroundSpec, CompositionSpec, InputRef, JobSpec};
use crate::error::{ApiError, FieldError};

/// Largest `metadata` object accepted, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest `text_prompt` accepted.
const MAX_PROMPT_CHARS: usize = 1000;
/// Longest URL accepted.
const MAX_URL_CHARS: usize = 4096;

/// Reads the fields of a JSON object, collecting a [`FieldError`] for each problem.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn string(&mut self, name: &str) -> Option<String> {
        match self.body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
        }
    }

    /// One of `values`, given by the name `name_of` gives it (the engine's own names).
    fn one_of<T: Copy>(&mut self, name: &str, values: &[T], name_of: fn(T) -> &'static str) -> Option<T> {
        let names: Vec<&str> = values.iter().map(|v| name_of(*v)).collect();
        let given = self.choice(name, &names)?;
        values.iter().copied().find(|v| name_of(*v) == given)
    }

    /// A string that must be one of `allowed`.
    fn choice(&mut self, name: &str, allowed: &[&str]) -> Option<String> {
        let value = self.string(name)?;
        if allowed.contains(&value.as_str()) {
            Some(value)
        } else {
            self.errors.push(FieldError::new(name, format!("{value:?} is not one of {}", allowed.join(", "))));
            None
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be true or false"));
                None
            }
        }
    }

    fn url(&mut self, name: &str) -> Option<String> {
        let value = self.string(name)?;
        match check_url(&value) {
            Ok(()) => Some(value),
            Err(message) => {
                self.errors.push(FieldError::new(name, message));
                None
            }
        }
    }
}

/// Model names the API accepts: RemoveBGVideo's four, and `video` (Robust Video Matting, an
/// opt-in install; a server without it refuses it, see `http::jobs`).
pub const MODELS: [Tier; 5] = [Tier::Original, Tier::Light, Tier::Pro, Tier::Human, Tier::Video];
const BG_TYPES: [&str; 8] = ["transparent", "green", "white", "black", "blue", "custom", "color", "image"];

/// A URL the service may be asked to fetch: http(s), with a host, not absurdly long.
pub fn check_url(value: &str) -> Result<(), String> {
    if value.len() > MAX_URL_CHARS {
        return Err(format!("is longer than {MAX_URL_CHARS} characters"));
    }
    match url::Url::parse(value) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!("must be an http or https URL, not {:?}", u.scheme())),
        Err(e) => Err(format!("is not a URL ({e})")),
    }
}

/// Which fields a body may set: creation needs `video_url`; `/start` may override the rest.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// `POST /v1/jobs`.
    Create,
    /// `POST /v1/jobs/{id}/start`.
    Start,
}

/// Parses a create body, or a start body over the job's stored `base` spec. The `input` of a
/// new spec is [`InputRef::Url`]; the caller resolves upload URLs.
pub fn parse_spec(body: &Value, base: Option<&JobSpec>, mode: Mode) -> Result<JobSpec, ApiError> {
    let Some(body) = body.as_object() else {
        return Err(ApiError::invalid(vec![FieldError::new("body", "must be a JSON object")]));
    };
    let mut f = Fields { body, errors: Vec::new() };

    let video_url = match mode {
        Mode::Create => {
            let url = f.url("video_url");
            if !body.contains_key("video_url") {
                f.errors.push(FieldError::new("video_url", "is required"));
            }
            url
        }
        Mode::Start => None,
    };
    let model = f.one_of("model", &MODELS, Tier::name);
    let output_format = f.one_of("output_format", &OutputFormat::ALL, OutputFormat::name);
    let background = parse_background(&mut f);
    let composition = match body.get("composition") {
        None | Some(Value::Null) => None,
        Some(v) => match parse_composition(v) {
            Ok(parsed) => Some(CompositionSpec { given: v.clone(), parsed }),
            Err(e) => {
                f.errors.push(e);
                None
            }
        },
    };
    let text_prompt = f.string("text_prompt");
    if text_prompt.as_ref().is_some_and(|p| p.chars().count() > MAX_PROMPT_CHARS) {
        f.errors.push(FieldError::new("text_prompt", format!("is longer than {MAX_PROMPT_CHARS} characters")));
    }
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) if v.to_string().len() <= MAX_METADATA_BYTES => Some(v.clone()),
        Some(Value::Object(_)) => {
            f.errors.push(FieldError::new("metadata", format!("is larger than {MAX_METADATA_BYTES} bytes")));
            None
        }
        Some(_) => {
            f.errors.push(FieldError::new("metadata", "must be an object"));
            None
        }
    };
    let webhook_url = f.url("webhook_url");
    let auto_start = f.boolean("auto_start");
    let keyframes = f.one_of("keyframes", &Keyframes::ALL, Keyframes::name);
    let preview_duration = match body.get("preview_duration") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s.is_finite() => Some(s),
            _ => {
                f.errors.push(FieldError::new("preview_duration", "must be a number of seconds above 0"));
                None
            }
        },
    };

    let default = JobSpec {
        video_url: String::new(),
        input: InputRef::Url,
        model: Tier::Original,
        output_format: OutputFormat::Webm,
        background: BackgroundSpec::transparent(),
        composition: None,
        text_prompt: None,
        metadata: None,
        webhook_url: None,
        preview_duration: None,
        auto_start: true,
        keyframes: None,
    };
    let base = base.unwrap_or(&default);
    let spec = JobSpec {
        video_url: video_url.unwrap_or_else(|| base.video_url.clone()),
        input: base.input.clone(),
        model: model.unwrap_or(base.model),
        output_format: output_format.unwrap_or(base.output_format),
        background: background.unwrap_or_else(|| base.background.clone()),
        composition: composition.or_else(|| base.composition.clone()),
        text_prompt: text_prompt.or_else(|| base.text_prompt.clone()),
        metadata: metadata.or_else(|| base.metadata.clone()),
        webhook_url: webhook_url.or_else(|| base.webhook_url.clone()),
        preview_duration: preview_duration.or(base.preview_duration),
        auto_start: auto_start.unwrap_or(base.auto_start),
        keyframes: keyframes.or(base.keyframes),
    };
    if f.errors.is_empty() && spec.output_format == OutputFormat::Mp4 && spec.background.is_transparent() {
        f.errors.push(FieldError::new(
            "output_format",
            "mp4 cannot carry transparency: choose a background (bg_type green, white, black, blue, custom with bg_color, or image) or a format with alpha (webm, mov, gif, webp, png_sequence)",
        ));
    }
    if f.errors.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::invalid(f.errors))
    }
}

/// The `background` object wins over `bg_type`/`bg_color`/`bg_image_url` when both are sent.
fn parse_background(f: &mut Fields) -> Option<BackgroundSpec> {
    let (prefix, name, color_value, image_url) = match f.body.get("background") {
        None | Some(Value::Null) => {
            let name = f.choice("bg_type", &BG_TYPES);
            let color = f.body.get("bg_color").filter(|v| !v.is_null()).cloned();
            let image = f.url("bg_image_url");
            if name.is_none() && color.is_none() && image.is_none() {
                return None;
            }
            // A colour or image alone implies its type.
            let name = name.unwrap_or_else(|| if image.is_some() { "image".into() } else { "custom".into() });
            ("bg_", name, color, image)
        }
        Some(Value::Object(bg)) => {
            let mut inner = Fields { body: bg, errors: Vec::new() };
            let name = inner.choice("type", &BG_TYPES);
            let image = inner.url("image_url");
            let color = bg.get("color").filter(|v| !v.is_null()).cloned();
            f.errors.extend(
                inner.errors.into_iter().map(|e| FieldError::new(format!("background.{}", e.field), e.message)),
            );
            let name = name.unwrap_or_else(|| {
                if image.is_some() {
                    "image".into()
                } else if color.is_some() {
                    "color".into()
                } else {
                    "transparent".into()
                }
            });
            ("background.", name, color, image)
        }
        Some(_) => {
            f.errors.push(FieldError::new("background", "must be an object {type, color, image_url}"));
            return None;
        }
    };
    let color_field = if prefix == "bg_" { "bg_color".to_string() } else { "background.color".to_string() };
    let color = match color_value {
        None => None,
        Some(v) => match parse_color(&v) {
            Ok(c) => Some(c),
            Err(message) => {
                f.errors.push(FieldError::new(color_field.clone(), message));
                return None;
            }
        },
    };
    let fixed = |rgb: [f64; 3]| Some(rgb);
    let (kind, color) = match name.as_str() {
        "transparent" => ("transparent", None),
        "green" => ("color", fixed([0.0, 1.0, 0.0])),
        "white" => ("color", fixed([1.0, 1.0, 1.0])),
        "black" => ("color", fixed([0.0, 0.0, 0.0])),
        "blue" => ("color", fixed([0.0, 0.0, 1.0])),
        "image" => {
            if image_url.is_none() {
                let field = if prefix == "bg_" { "bg_image_url" } else { "background.image_url" };
                f.errors.push(FieldError::new(field, "is required for an image background"));
                return None;
            }
            ("image", None)
        }
        _ => {
            if color.is_none() {
                f.errors.push(FieldError::new(color_field, format!("is required when the background type is {name}")));
                return None;
            }
            ("color", color)
        }
    };
    Some(BackgroundSpec {
        kind: kind.into(),
        name,
        color,
        image_url: if kind == "image" { image_url } else { None },
        image_object_key: None,
    })
}

/// `[r, g, b]` floats in 0-1 (as the SDKs send them), or `"#RRGGBB"`.
fn parse_color(v: &Value) -> Result<[f64; 3], String> {
    if let Some(s) = v.as_str() {
        let hex = s.strip_prefix('#').unwrap_or(s);
        let bytes = (hex.len() == 6).then(|| hex::decode(hex).ok()).flatten();
        return match bytes {
            Some(b) => Ok([b[0] as f64 / 255.0, b[1] as f64 / 255.0, b[2] as f64 / 255.0]),
            None => Err(format!("{s:?} is not a #RRGGBB colour")),
        };
    }
    let Some(items) = v.as_array() else {
        return Err("must be [r, g, b] with floats from 0 to 1, or \"#RRGGBB\"".into());
    };
    let values: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
    match values.as_deref() {
        Some([r, g, b]) if [r, g, b].iter().all(|c| (0.0..=1.0).contains(*c)) => Ok([*r, *g, *b]),
        Some([_, _, _]) => Err(
            "components must be floats from 0 to 1 (for example [0.035, 0.635, 0.274]); divide 0-255 values by 255, or send \"#RRGGBB\""
                .into(),
        ),
        _ => Err("must be [r, g, b]: exactly three numbers from 0 to 1".into()),
    }
}

/// `{canvas:{width,height}, foreground:{anchor, scale, offset:{x,y}}}`, every part optional.
pub fn parse_composition(v: &Value) -> Result<Composition, FieldError> {
    let err = |field: &str, message: String| FieldError::new(format!("composition{field}"), message);
    let Some(obj) = v.as_object() else {
        return Err(err("", "must be an object {canvas, foreground}".into()));
    };
    let mut c = Composition::default();
    if let Some(canvas) = obj.get("canvas").filter(|v| !v.is_null()) {
        let dim = |name: &str| canvas.get(name).and_then(Value::as_u64).filter(|&d| d <= u32::MAX as u64);
        match (dim("width"), dim("height")) {
            (Some(w), Some(h)) => c.canvas = Some((w as u32, h as u32)),
            _ => return Err(err(".canvas", "needs integer width and height in pixels".into())),
        }
    }
    if let Some(fg) = obj.get("foreground").filter(|v| !v.is_null()) {
        // Anything but an object would read as "no fields" and silently mean the defaults.
        if !fg.is_object() {
            return Err(err(".foreground", "must be an object {anchor, scale, offset}".into()));
        }
        if let Some(anchor) = fg.get("anchor").filter(|v| !v.is_null()) {
            let name = anchor.as_str().ok_or_else(|| err(".foreground.anchor", "must be a string".into()))?;
            c.anchor =
                name.parse().map_err(|e: clearbg_engine::EngineError| err(".foreground.anchor", e.to_string()))?;
        }
        if let Some(scale) = fg.get("scale").filter(|v| !v.is_null()) {
            c.scale = scale.as_f64().ok_or_else(|| err(".foreground.scale", "must be a number".into()))?;
        }
        if let Some(offset) = fg.get("offset").filter(|v| !v.is_null()) {
            if !offset.is_object() {
                return Err(err(".foreground.offset", "must be an object {x, y} in pixels".into()));
            }
            let axis =
                |name: &str| offset.get(name).map_or(Some(0), |v| v.as_i64().filter(|x| x.unsigned_abs() <= 100_000));
            match (axis("x"), axis("y")) {
                (Some(x), Some(y)) => c.offset = (x as i32, y as i32),
                _ => return Err(err(".foreground.offset", "needs integer x and y in pixels".into())),
            }
        }
    }
    c.validate().map_err(|e| err("", e.to_string()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn create(body: Value) -> Result<JobSpec, ApiError> {
        parse_spec(&body, None, Mode::Create)
    }

    #[test]
    fn composition_parts_must_be_objects() {
        for composition in [
            json!({"foreground": []}),
            json!({"foreground": {"offset": [1, 2]}}),
            json!({"foreground": {"offset": "10,10"}}),
        ] {
            let e = create(json!({"video_url": "https://example.com/a.mp4", "composition": composition})).unwrap_err();
            assert!(e.details[0].field.starts_with("composition.foreground"), "{e}");
        }
        let ok = json!({"foreground": {"anchor": "center", "offset": {"x": 3}}});
        assert!(create(json!({"video_url": "https://example.com/a.mp4", "composition": ok})).is_ok());
    }

    #[test]
    fn sdk_body_parses_with_defaults() {
        let spec = create(json!({"video_url": "https://example.com/a.mp4", "model": "light", "bg_type": "green",
            "output_format": "mp4", "auto_start": true}))
        .unwrap();
        assert_eq!(spec.background.kind, "color");
        assert_eq!(spec.background.color, Some([0.0, 1.0, 0.0]));
        let spec = create(json!({"video_url": "https://example.com/a.mp4"})).unwrap();
        assert_eq!((spec.model, spec.output_format), (Tier::Original, OutputFormat::Webm));
        assert!(spec.background.is_transparent() && spec.auto_start);
    }

    #[test]
    fn background_object_wins_and_accepts_hex() {
        let spec = create(json!({"video_url": "http://h/a.mp4", "bg_type": "green",
            "background": {"type": "color", "color": "#ff0000"}}))
        .unwrap();
        assert_eq!(spec.background.color, Some([1.0, 0.0, 0.0]));
    }

    #[test]
    fn every_problem_is_named() {
        let err =
            create(json!({"model": "huge", "output_format": "avi", "bg_type": "custom", "bg_color": [0, 128, 255],
            "composition": {"foreground": {"anchor": "middle-ish"}}}))
            .unwrap_err();
        let fields: Vec<&str> = err.details.iter().map(|d| d.field.as_str()).collect();
        for f in ["video_url", "model", "output_format", "bg_color", "composition.foreground.anchor"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert_eq!(err.status.as_u16(), 422);
    }

    #[test]
    fn transparent_mp4_is_refused() {
        let err = create(json!({"video_url": "http://h/a.mp4", "output_format": "mp4"})).unwrap_err();
        assert_eq!(err.details[0].field, "output_format");
        assert!(create(json!({"video_url": "http://h/a.mp4", "output_format": "mp4", "bg_type": "white"})).is_ok());
    }

    #[test]
    fn start_overrides_keep_the_rest() {
        let base = create(json!({"video_url": "http://h/a.mp4", "model": "light", "auto_start": false})).unwrap();
        let spec = parse_spec(&json!({"output_format": "gif"}), Some(&base), Mode::Start).unwrap();
        assert_eq!((spec.model, spec.output_format), (Tier::Light, OutputFormat::Gif));
        assert!(!spec.auto_start);
        assert!(parse_spec(&json!({"output_format": "mp4"}), Some(&base), Mode::Start).is_err());
    }

    #[test]
    fn urls_must_be_http() {
        let err = create(json!({"video_url": "file:///etc/passwd"})).unwrap_err();
        assert_eq!(err.details[0].field, "video_url");
    }

    #[test]
    fn text_prompt_is_never_dropped_silently() {
        let spec = create(json!({"video_url": "http://h/a.mp4", "model": "pro", "text_prompt": "person"})).unwrap();
        assert_eq!(spec.warnings().len(), 1);
    }
}
