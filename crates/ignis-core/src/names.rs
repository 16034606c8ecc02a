//! Validation of the names users choose for namespaces and functions.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} name must not be empty")]
    Empty {
        /// "function" or "namespace"
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} name is longer than {max} characters")]
    TooLong {
        /// "function" or "namespace"
        what: &'static str,
        /// the limit
        max: usize,
    },
    /// The name has a character outside `[A-Za-z0-9_.-]` or starts with `.` or `-`.
    #[error(
        "{what} name {name:?} may only contain letters, digits, '_', '-' and '.', and must start with a letter, digit or '_'"
    )]
    BadChar {
        /// "function" or "namespace"
        what: &'static str,
        /// the refused name
        name: String,
    },
}

fn validate(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong { what, max });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !name.chars().all(ok_char) {
        return Err(NameError::BadChar {
            what,
            name: name.chars().take(max).collect(),
        });
    }
    Ok(())
}

/// Checks a function name: 1 to 128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    validate("function", name, 128)
}

/// Checks a topic name: 1 to 128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`
/// (dots separate levels, as in `orders.created`).
pub fn validate_topic_name(name: &str) -> Result<(), NameError> {
    validate("topic", name, 128)
}

/// Checks a namespace name: 1 to 64 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_namespace_name(name: &str) -> Result<(), NameError> {
    validate("namespace", name, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["hello", "a", "hello-world_2", "v1.2", "_x"] {
            validate_function_name(n).unwrap();
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert!(matches!(
            validate_function_name(""),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            validate_function_name(&"a".repeat(129)),
            Err(NameError::TooLong { .. })
        ));
        for n in ["a/b", "..", ".hidden", "-x", "a@1", "a b", "é"] {
            assert!(
                matches!(validate_function_name(n), Err(NameError::BadChar { .. })),
                "{n}"
            );
        }
        assert!(validate_namespace_name(&"a".repeat(65)).is_err());
    }
}
