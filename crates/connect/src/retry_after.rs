//! The `Retry-After` header (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
//!
//! Most vendors send seconds; Dataverse sends an IMF-fixdate. RFC 9110 §5.6.7 requires recipients to
//! accept the two obsolete date forms too (RFC 850 and asctime), so they are parsed as well.

use jiff::civil::DateTime;
use jiff::tz::Offset;
use jiff::Timestamp;
use std::time::Duration;

/// IMF-fixdate, `Wed, 21 Oct 2015 07:28:00 GMT`.
const IMF_FIXDATE: &str = "%a, %d %b %Y %H:%M:%S GMT";
/// Obsolete RFC 850 form, `Wednesday, 21-Oct-15 07:28:00 GMT` (two-digit year).
const RFC_850: &str = "%A, %d-%b-%y %H:%M:%S GMT";
/// Obsolete asctime form, `Wed Oct 21 07:28:00 2015` (day may be space-padded).
const ASCTIME: &str = "%a %b %e %H:%M:%S %Y";

/// How long to wait according to a `Retry-After` value, measured from `now`.
///
/// Returns `None` for anything that is neither form (the caller then falls back to its own
/// schedule). A date in the past means "now": `Some(Duration::ZERO)`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A delta too large for u64 is not a real answer; treat it as unparseable.
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    if at <= now {
        return Some(Duration::ZERO);
    }
    Duration::try_from(at.duration_since(now)).ok()
}

/// Parses an HTTP-date in any of the three forms RFC 9110 allows; all are in UTC.
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    [IMF_FIXDATE, RFC_850, ASCTIME]
        .iter()
        .find_map(|format| DateTime::strptime(format, value).ok())
        .and_then(|dt| Offset::UTC.to_timestamp(dt).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2015-10-21T07:27:30Z".parse().unwrap()
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_retry_after("30", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
    }

    #[test]
    fn imf_fixdate_as_dataverse_sends_it() {
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now()), Some(Duration::from_secs(30)));
    }

    #[test]
    fn obsolete_date_forms() {
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", now()), Some(Duration::from_secs(30)));
        let early = "2015-10-02T07:27:30Z".parse().unwrap();
        assert_eq!(parse_retry_after("Fri Oct  2 07:28:00 2015", early), Some(Duration::from_secs(30)));
    }

    #[test]
    fn date_in_the_past_is_zero() {
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()), Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "soon",
            "-5",
            "1.5",
            "+30",
            "30s",
            "99999999999999999999999",
            "Wed, 21 Oct 2015 07:28:00 +0800",
            "2015-10-21T07:28:00Z",
            "Thu, 21 Oct 2015 07:28:00 GMT", // wrong weekday for the date
        ] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }
}
