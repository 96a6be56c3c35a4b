//! Friendly durations: `500ms`, `5s`, `2m`, `1h30m`, `3h`, `1d`.

use std::time::Duration;

/// Why a text is not a friendly duration; each message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{text}` contains a space; write it without one, e.g. `30s` or `1h30m`")]
    Space { text: String },
    #[error("empty duration; expected e.g. `5s`, `2m`, `1h30m`")]
    Empty,
    #[error("`{text}` is not a duration; expected a number followed by ms, s, m, h or d (e.g. `30s`)")]
    NotADuration { text: String },
    #[error("`{text}` has a number that is too large")]
    TooLarge { text: String },
    #[error("`{text}` has no unit; write e.g. `{number}s` (units: ms, s, m, h, d)")]
    NoUnit { text: String, number: u64 },
    #[error("`{text}` has an unknown unit `{unit}`; units: ms, s, m, h, d")]
    UnknownUnit { text: String, unit: String },
}

/// Parse a friendly duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.contains(char::is_whitespace) {
        return Err(DurationError::Space { text: text.to_owned() });
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::NotADuration { text: text.to_owned() });
        }
        let number: u64 = rest[..digits].parse().map_err(|_| DurationError::TooLarge { text: text.to_owned() })?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(DurationError::NoUnit { text: text.to_owned(), number }),
            other => return Err(DurationError::UnknownUnit { text: text.to_owned(), unit: other.to_owned() }),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("five seconds").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn messages_say_what_was_expected() {
        let message = |text: &str| parse_duration(text).map_err(|e| e.to_string()).expect_err("refused");
        assert_eq!(message("30"), "`30` has no unit; write e.g. `30s` (units: ms, s, m, h, d)");
        assert_eq!(message("5x"), "`5x` has an unknown unit `x`; units: ms, s, m, h, d");
        assert_eq!(message("5 s"), "`5 s` contains a space; write it without one, e.g. `30s` or `1h30m`");
    }
}
