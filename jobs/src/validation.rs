//! Field errors that name where in the request a rule was broken, as a JSON pointer.
//!
//! Also compiled into the producers' Rust client (`clients/rust/src/lib.rs`, `#[path]`), without
//! the rest of this crate: use only `crate::Kind`, `crate::payload` and `crate::validation` here,
//! and the dependencies `clients/rust/Cargo.toml` lists (`cargo build -p jobplane-client` checks).

use serde::{Deserialize, Serialize};

/// One broken rule: `field` is a JSON pointer into the request body (`/payload/to`). The Rust
/// client reads it back from a problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    #[cfg_attr(feature = "openapi", schema(example = "/payload/to"))]
    pub field: String,
    #[cfg_attr(feature = "openapi", schema(example = "must be a phone number in E.164 form, such as +14155550100"))]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Collects the errors found under one JSON pointer.
#[derive(Debug)]
pub struct Checker<'a> {
    base: &'a str,
    pub errors: Vec<FieldError>,
}

impl<'a> Checker<'a> {
    pub fn new(base: &'a str) -> Self {
        Self { base, errors: Vec::new() }
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        let pointer = if field.is_empty() { self.base.to_owned() } else { format!("{}/{field}", self.base) };
        self.errors.push(FieldError::new(pointer, message));
    }

    /// A required single-line text: not blank, at most `max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.fail(field, "must not be empty");
        } else {
            self.optional_text(field, Some(value), max);
        }
    }

    pub fn optional_text(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(value) = value {
            if value.chars().count() > max {
                self.fail(field, format!("must be at most {max} characters"));
            }
            // One line: a CR or LF in a subject could inject a mail header, and PostgreSQL
            // refuses NUL in text.
            if value.chars().any(|c| c.is_control() && c != '\t') {
                self.fail(field, "must be one line without control characters");
            }
        }
    }

    /// A name made of letters, digits and `_ . : -`, as used for events and templates.
    pub fn name(&mut self, field: &str, value: &str, max: usize) {
        let valid = !value.is_empty()
            && value.len() <= max
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !valid {
            self.fail(field, format!("must be 1 to {max} letters, digits or _ . : -"));
        }
    }

    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(&mut self, field: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.fail(field, format!("must be between {min} and {max}"));
        }
    }

    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }
}

/// Turns a serde error met while reading `value` into a field error under `base`.
pub fn from_serde(base: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let mut pointer = base.to_owned();
    for segment in err.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                pointer.push('/');
                pointer.push_str(&index.to_string());
            }
            serde_path_to_error::Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&escape_pointer(key));
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let message = err.inner().to_string();
    // serde names a missing field in its message, not in the path: move it there.
    if let Some(field) = backticked(&message, "missing field `") {
        pointer.push('/');
        pointer.push_str(&escape_pointer(field));
    }
    FieldError::new(pointer, strip_position(&message))
}

fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.find('`').map(|end| &rest[..end])
}

/// serde_json ends messages with " at line 1 column 42", which means nothing for a value.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// RFC 6901: `~` becomes `~0`, `/` becomes `~1`.
pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Sample {
        to: Vec<String>,
        n: u32,
    }

    fn error_for(value: serde_json::Value) -> FieldError {
        let err = serde_path_to_error::deserialize::<_, Sample>(value).unwrap_err();
        from_serde("/payload", &err)
    }

    #[test]
    fn serde_errors_point_at_the_field() {
        let e = error_for(serde_json::json!({"to": ["a", 5], "n": 1}));
        assert_eq!(e.field, "/payload/to/1");
        let e = error_for(serde_json::json!({"to": []}));
        assert_eq!(e.field, "/payload/n");
        assert_eq!(e.message, "missing field `n`");
        let e = error_for(serde_json::json!({"to": [], "n": 1, "x/y": 2}));
        assert_eq!(e.field, "/payload/x~1y");
        assert!(e.message.starts_with("unknown field `x/y`"), "{}", e.message);
        let e = error_for(serde_json::json!({"to": [], "n": -1}));
        assert_eq!(e.field, "/payload/n");
    }
}
