//! [`ValueError`]: what went wrong converting between a serde type and a [`Value`](super::Value).

use std::fmt;

/// Converting a serde type to or from a [`Value`](super::Value) failed: `to_value` met a value
/// it cannot represent, or `from_value` met a value of the wrong shape.
///
/// The message says what is wrong and, below the top level, where:
/// `` field `address.zip`: invalid type: string "x", expected u32 ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", Where(.path))]
pub struct ValueError {
    /// Where, outermost first: `address.zip`, `items[2]`; empty at the top level.
    path: String,
    message: String,
}

impl ValueError {
    /// An error with this message at the top level.
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        ValueError { path: String::new(), message: message.to_string() }
    }

    /// Where the error is, outermost first (`address.zip`, `items[2]`); empty when it is in
    /// the value itself rather than inside it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error one level further out: inside the field (or string map key) `name`.
    pub(crate) fn in_field(mut self, name: &str) -> Self {
        self.path = if self.path.is_empty() {
            name.to_owned()
        } else if self.path.starts_with('[') {
            format!("{name}{}", self.path)
        } else {
            format!("{name}.{}", self.path)
        };
        self
    }

    /// The same error one level further out: inside the list item or map entry `[index]`.
    pub(crate) fn in_item(mut self, index: impl fmt::Display) -> Self {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("[{index}]{}", self.path)
        } else {
            format!("[{index}].{}", self.path)
        };
        self
    }
}

/// The start of an error message: `` field `address.zip`: ``, or nothing at the top level.
struct Where<'a>(&'a str);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "field `{}`: ", self.0) }
    }
}

impl serde::ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::new(msg)
    }
}

impl serde::de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::new(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_build_outward() {
        let e = ValueError::new("invalid type").in_field("zip").in_field("address");
        assert_eq!(e.to_string(), "field `address.zip`: invalid type");
        let e = ValueError::new("bad").in_field("name").in_item(2).in_field("items");
        assert_eq!(e.path(), "items[2].name");
        assert_eq!(ValueError::new("bad").in_item(1).in_item(0).path(), "[0][1]");
        assert_eq!(ValueError::new("top").to_string(), "top");
        assert_eq!(ValueError::new("top").message(), "top");
    }
}
