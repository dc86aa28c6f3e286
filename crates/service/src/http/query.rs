//! Query strings: read by hand (every value arrives as text), so that every bad value gets a
//! 422 naming it, all of them in one answer, rather than axum's plain-text 400 for the first.

use std::ops::RangeInclusive;

use crate::error::{ApiError, ApiResult, FieldError};

/// Collects the problems of one query string.
#[derive(Default)]
pub(crate) struct QueryFields {
    errors: Vec<FieldError>,
}

impl QueryFields {
    /// `value` as an integer in `range` (spaces around it allowed), `default` when absent or
    /// empty; a problem naming `name` otherwise.
    pub(crate) fn integer(&mut self, name: &str, value: Option<&str>, default: i64, range: RangeInclusive<i64>) -> i64 {
        let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else { return default };
        match text.parse::<i64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let (min, max) = (range.start(), range.end());
                let message = if *max == i64::MAX {
                    format!("must be an integer from {min}")
                } else {
                    format!("must be an integer from {min} to {max}")
                };
                self.errors.push(FieldError::new(name, message));
                default
            }
        }
    }

    /// `value` read with `parse` (`None` when absent or empty), or a problem naming `name`
    /// with `parse`'s message.
    pub(crate) fn parsed<T>(
        &mut self,
        name: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = value.map(str::trim).filter(|v| !v.is_empty())?;
        parse(text).map_err(|message| self.errors.push(FieldError::new(name, message))).ok()
    }

    /// A required value, or a problem naming `name`.
    pub(crate) fn required<'a>(&mut self, name: &str, value: Option<&'a str>) -> Option<&'a str> {
        let value = value.filter(|v| !v.is_empty());
        if value.is_none() {
            self.errors.push(FieldError::new(name, "is required"));
        }
        value
    }

    /// Ok when every value read well, else one 422 naming each bad one.
    pub(crate) fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_named_once() {
        let mut q = QueryFields::default();
        assert_eq!(q.integer("limit", Some(" 5 "), 20, 1..=100), 5);
        assert_eq!(q.integer("limit", None, 20, 1..=100), 20);
        assert_eq!(q.integer("limit", Some(""), 20, 1..=100), 20);
        assert_eq!(q.integer("limit", Some("0"), 20, 1..=100), 20);
        assert_eq!(q.integer("offset", Some("-1"), 0, 0..=i64::MAX), 0);
        assert_eq!(
            q.parsed("status", Some("done"), |s| s.parse::<u8>().map_err(|_| format!("{s:?} is no status"))),
            None
        );
        assert_eq!(q.required("key", None), None);
        let e = q.finish().unwrap_err();
        let named: Vec<(&str, &str)> = e.details.iter().map(|d| (d.field.as_str(), d.message.as_str())).collect();
        assert_eq!(
            named,
            [
                ("limit", "must be an integer from 1 to 100"),
                ("offset", "must be an integer from 0"),
                ("status", "\"done\" is no status"),
                ("key", "is required")
            ]
        );
        assert!(QueryFields::default().finish().is_ok());
    }
}
