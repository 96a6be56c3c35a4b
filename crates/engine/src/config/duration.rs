//! Friendly durations: `500ms`, `5s`, `2m`, `1h30m`, `3h`, `1d`.

use std::time::Duration;

/// Parse a friendly duration; the error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.contains(char::is_whitespace) {
        return Err(format!("`{text}` contains a space; write it without one, e.g. `30s` or `1h30m`"));
    }
    if s.is_empty() {
        return Err("empty duration; expected e.g. `5s`, `2m`, `1h30m`".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; expected a number followed by ms, s, m, h or d (e.g. `30s`)"
            ));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("`{text}` has a number that is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("`{text}` has no unit; write e.g. `{n}s` (units: ms, s, m, h, d)")),
            other => return Err(format!("`{text}` has an unknown unit `{other}`; units: ms, s, m, h, d")),
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
}
