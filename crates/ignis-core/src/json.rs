//! Checking JSON events before any instance sees them: valid, and not nested deeper than
//! [`MAX_JSON_DEPTH`] (runtimes parse recursively; a payload of a million `[` would only make the
//! function fail, after costing an instance).

/// Deepest nesting of arrays and objects accepted in an event.
pub const MAX_JSON_DEPTH: usize = 100;

/// Why an event is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("the payload is not valid JSON ({0})")]
    Invalid(String),
    /// Nested too deep.
    #[error("the payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

/// Checks that `bytes` is one JSON value nested at most [`MAX_JSON_DEPTH`] deep.
pub fn check_json(bytes: &[u8]) -> Result<(), JsonError> {
    // The depth first: one pass without allocation, and it keeps the parser below off deep input.
    if depth_exceeds(bytes, MAX_JSON_DEPTH) {
        return Err(JsonError::TooDeep);
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(drop)
        .map_err(|e| JsonError::Invalid(e.to_string()))
}

/// Whether brackets outside strings nest deeper than `max` (the text need not be valid JSON).
fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(check_json(nested(MAX_JSON_DEPTH).as_bytes()), Ok(()));
        assert_eq!(
            check_json(nested(MAX_JSON_DEPTH + 1).as_bytes()),
            Err(JsonError::TooDeep)
        );
        let in_string = format!(r#"{{"a":"{}\"["}}"#, "[".repeat(10_000));
        assert_eq!(check_json(in_string.as_bytes()), Ok(()));
        assert!(matches!(check_json(b"{\"a\":"), Err(JsonError::Invalid(_))));
        assert!(matches!(check_json(b"[1] [2]"), Err(JsonError::Invalid(_))));
    }
}
