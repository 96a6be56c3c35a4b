//! The single parse error of this crate.

/// A value that could not be turned into a canonical type.
///
/// Always carries the field name and the offending value, because the person reading the error
/// (an operator looking at a dead letter, or a user told why a DingTalk action was refused) needs
/// both to fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// The value is Debug-quoted so that control characters and quotes in hostile input cannot
// forge log lines or make the message unreadable.
#[error("field `{field}`: {value:?} {reason}")]
pub struct ParseError {
    /// Name of the field (or path) the value came from.
    pub field: String,
    /// The offending input, as received.
    pub value: String,
    /// Why it was refused, phrased to follow the quoted value, e.g. "is not a valid decimal".
    pub reason: String,
}

impl ParseError {
    /// Builds an error for `field` holding `value`.
    pub fn new(field: &str, value: &str, reason: impl Into<String>) -> ParseError {
        ParseError { field: field.to_string(), value: value.to_string(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_field_and_value() {
        let e =
            ParseError::new("amount", "1,000.5", "is not a valid decimal (expected '.' grouping with ',' decimals)");
        assert_eq!(
            e.to_string(),
            "field `amount`: \"1,000.5\" is not a valid decimal (expected '.' grouping with ',' decimals)"
        );
    }

    #[test]
    fn display_escapes_control_characters() {
        let e = ParseError::new("note", "a\nb\"", "is bad");
        assert_eq!(e.to_string(), "field `note`: \"a\\nb\\\"\" is bad");
    }
}
