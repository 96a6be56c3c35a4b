//! Instants parsed from every vendor timestamp form, shown in Hong Kong time.

use std::fmt;
use std::sync::OnceLock;

use jiff::civil;
use jiff::tz::{self, Offset, TimeZone};
use jiff::Timestamp;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ParseError;

/// Hong Kong has kept +08:00 without daylight saving since 1979, so this is the offset of the
/// canonical wire form. It is a compile-time constant, so building it cannot fail.
const HK_OFFSET: Offset = tz::offset(8);

/// The zone every human-facing time is shown in.
const HK_ZONE_NAME: &str = "Asia/Hong_Kong";

/// Asia/Hong_Kong from jiff's bundled tzdb (feature `tzdb-bundle-always`, so it resolves on
/// hosts without tzdata). Looked up once because every display needs it.
fn hong_kong() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| {
        // The bundled database always has this zone; the fixed offset is only a last resort so
        // that display can never fail, and is exact for every instant since 1979.
        TimeZone::get(HK_ZONE_NAME).unwrap_or_else(|_| TimeZone::fixed(HK_OFFSET))
    })
}

/// The accepted textual forms, for error messages.
const TIME_FORMS: &str = "expected RFC 3339 with an offset such as 2024-03-01T09:30:00+08:00 \
     or ...Z, 2024-03-01T09:30:00.000+0000, or /Date(1709285400000)/";

/// An instant in time. Vendors send many forms; all are reduced to one exact instant here.
///
/// The instant carries no zone: zones are a matter of display, and display is always
/// Asia/Hong_Kong (`2024-03-01 17:30:00 HKT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZonedTime(pub Timestamp);

impl ZonedTime {
    /// Parses a timestamp that names its own offset:
    /// - RFC 3339 / ISO 8601 with any offset: `2024-03-01T09:30:00Z`, `...+08:00`, fractions;
    /// - Salesforce's offset without colon: `2024-03-01T09:30:00.000+0000`;
    /// - SAP OData v2 `/Date(1709285400000)/` and `/Date(1709285400000+0480)/`, where the
    ///   number is milliseconds since the Unix epoch in UTC and the optional suffix is an offset
    ///   in minutes that only says how the sender would display it (so it does not move the
    ///   instant).
    ///
    /// A timestamp without an offset (`2024-03-01T09:30:00`) is refused: it could be any of
    /// ~26 instants. Use [`ZonedTime::parse_local_hk`] when the source is known to send Hong
    /// Kong local time.
    pub fn parse(field: &str, text: &str) -> Result<ZonedTime, ParseError> {
        if let Some(inner) = text.strip_prefix("/Date(").and_then(|rest| rest.strip_suffix(")/")) {
            return parse_odata_date(field, text, inner);
        }
        if let Ok(timestamp) = text.parse::<Timestamp>() {
            return Ok(ZonedTime(timestamp));
        }
        if looks_like_local_datetime(text) {
            return Err(ParseError::new(
                field,
                text,
                "has no UTC offset, so the instant is ambiguous (add Z or +08:00, or \
                 declare the source as Hong Kong local time)",
            ));
        }
        Err(ParseError::new(field, text, format!("is not a timestamp ({TIME_FORMS})")))
    }

    /// Like [`ZonedTime::parse`], but a date and time without offset is read as Hong Kong local
    /// time. For sources documented to send local time (many ERP exports do).
    pub fn parse_local_hk(field: &str, text: &str) -> Result<ZonedTime, ParseError> {
        ZonedTime::parse_local(field, text, hong_kong())
    }

    /// Like [`ZonedTime::parse`], but a date and time without offset is read as local time of
    /// `zone`. Where a local time is skipped or repeated by a DST change, the earlier offset
    /// wins (jiff's "compatible" rule, as in RFC 5545).
    pub fn parse_local(field: &str, text: &str, zone: &TimeZone) -> Result<ZonedTime, ParseError> {
        if let Ok(time) = ZonedTime::parse(field, text) {
            return Ok(time);
        }
        if !looks_like_local_datetime(text) {
            return Err(ParseError::new(
                field,
                text,
                format!("is not a timestamp (expected 2024-03-01T09:30:00 as local time, or {TIME_FORMS})"),
            ));
        }
        let local = text
            .parse::<civil::DateTime>()
            .map_err(|e| ParseError::new(field, text, format!("is not a valid local date and time ({e})")))?;
        let zoned = zone
            .to_zoned(local)
            .map_err(|e| ParseError::new(field, text, format!("cannot be placed in the time zone ({e})")))?;
        Ok(ZonedTime(zoned.timestamp()))
    }

    /// Builds the instant from an SAP date (`YYYYMMDD`) and time (`HHMMSS`) field pair.
    ///
    /// SAP DATS/TIMS values carry no zone; they are local to the SAP system's configured zone,
    /// which the caller passes. `00000000` is SAP's initial (empty) date and is refused.
    pub fn from_sap(field: &str, date: &str, time: &str, zone: TimeZone) -> Result<ZonedTime, ParseError> {
        let shown = format!("{date} {time}");
        if date == "00000000" || date.trim().is_empty() {
            return Err(ParseError::new(field, &shown, "is an empty SAP date"));
        }
        let invalid =
            || ParseError::new(field, &shown, "is not a valid SAP date and time (expected YYYYMMDD and HHMMSS)");
        if date.len() != 8 || time.len() != 6 || !all_digits(date) || !all_digits(time) {
            return Err(invalid());
        }
        // The slices are in range and on character boundaries: both strings were just checked
        // to be exactly 8 and 6 ASCII digits.
        let number = |s: &str| s.parse::<i16>().map_err(|_| invalid());
        let year = number(&date[0..4])?;
        let month = number(&date[4..6])?;
        let day = number(&date[6..8])?;
        let hour = number(&time[0..2])?;
        let minute = number(&time[2..4])?;
        let second = number(&time[4..6])?;
        let narrow = |v: i16| i8::try_from(v).map_err(|_| invalid());
        let local = civil::DateTime::new(
            year,
            narrow(month)?,
            narrow(day)?,
            narrow(hour)?,
            narrow(minute)?,
            narrow(second)?,
            0,
        )
        .map_err(|_| invalid())?;
        let zoned = zone
            .to_zoned(local)
            .map_err(|e| ParseError::new(field, &shown, format!("cannot be placed in the time zone ({e})")))?;
        Ok(ZonedTime(zoned.timestamp()))
    }

    /// Wraps an instant.
    pub fn from_timestamp(timestamp: Timestamp) -> ZonedTime {
        ZonedTime(timestamp)
    }

    /// Builds the instant `ms` milliseconds after the Unix epoch (negative: before). Fails only
    /// outside jiff's range (years -9999 to 9999).
    pub fn from_millis(field: &str, ms: i64) -> Result<ZonedTime, ParseError> {
        Timestamp::from_millisecond(ms)
            .map(ZonedTime)
            .map_err(|_| ParseError::new(field, &ms.to_string(), "is out of range for a timestamp in milliseconds"))
    }

    /// Milliseconds since the Unix epoch; sub-millisecond digits are truncated toward zero.
    pub fn as_millis(&self) -> i64 {
        self.0.as_millisecond()
    }

    /// The instant.
    pub fn timestamp(&self) -> Timestamp {
        self.0
    }

    /// RFC 3339 at +08:00, e.g. `2024-03-01T17:30:00+08:00` (fraction only when non-zero).
    ///
    /// Always +08:00 rather than the tzdb offset of the day: a fixed offset keeps the wire form
    /// stable and strictly RFC 3339 even for historical instants whose HK offset had seconds.
    pub fn to_rfc3339(&self) -> String {
        self.0.display_with_offset(HK_OFFSET).to_string()
    }

    /// Hong Kong wall-clock time for people: `2024-03-01 17:30:00 HKT`.
    pub fn to_hk_string(&self) -> String {
        self.0.to_zoned(hong_kong().clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
    }

    /// The SAP OData v2 form, `/Date(1709285400000)/` (UTC milliseconds, no offset suffix).
    pub fn to_odata_date(&self) -> String {
        format!("/Date({})/", self.as_millis())
    }
}

/// Parses the inside of `/Date(...)/`: optional '-', digits, optional [+-]HHMM-style offset in
/// minutes (four digits).
fn parse_odata_date(field: &str, text: &str, inner: &str) -> Result<ZonedTime, ParseError> {
    let invalid = || {
        ParseError::new(
            field,
            text,
            "is not a valid OData date (expected /Date(<milliseconds>)/ or \
             /Date(<milliseconds>+<minutes, 4 digits>)/)",
        )
    };
    // The first character may be the sign of the milliseconds; an offset sign comes later.
    let offset_at = inner.char_indices().skip(1).find(|&(_, c)| c == '+' || c == '-').map(|(i, _)| i);
    let (millis, offset) = match offset_at {
        Some(i) => (&inner[..i], Some(&inner[i + 1..])),
        None => (inner, None),
    };
    let digits = millis.strip_prefix('-').unwrap_or(millis);
    if !all_digits(digits) {
        return Err(invalid());
    }
    if let Some(minutes) = offset {
        if minutes.len() != 4 || !all_digits(minutes) {
            return Err(invalid());
        }
    }
    let ms = millis.parse::<i64>().map_err(|_| invalid())?;
    Timestamp::from_millisecond(ms)
        .map(ZonedTime)
        .map_err(|_| ParseError::new(field, text, "is out of range for a timestamp"))
}

/// True for `YYYY-MM-DD[T ]HH:MM...` with nothing that could be an offset: the shape that is a
/// local date-time. Dates alone are not instants and stay "not a timestamp".
fn looks_like_local_datetime(text: &str) -> bool {
    let bytes = text.as_bytes();
    let has_time =
        bytes.len() >= 16 && (bytes[10] == b'T' || bytes[10] == b' ' || bytes[10] == b't') && bytes[13] == b':';
    let time_part = text.get(11..).unwrap_or("");
    let has_offset = time_part.contains(['Z', 'z', '+', '-', '[']);
    has_time && !has_offset && text.parse::<civil::DateTime>().is_ok()
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl From<Timestamp> for ZonedTime {
    fn from(timestamp: Timestamp) -> ZonedTime {
        ZonedTime(timestamp)
    }
}

impl fmt::Display for ZonedTime {
    /// Hong Kong wall-clock time, as [`ZonedTime::to_hk_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hk_string())
    }
}

impl Serialize for ZonedTime {
    /// RFC 3339 at +08:00, as [`ZonedTime::to_rfc3339`].
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for ZonedTime {
    /// Any form [`ZonedTime::parse`] accepts.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ZonedTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        ZonedTime::parse("time", &text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn rfc3339_with_offsets() {
        let want = utc("2024-03-01T09:30:00Z");
        for s in [
            "2024-03-01T09:30:00Z",
            "2024-03-01T09:30:00+00:00",
            "2024-03-01T17:30:00+08:00",
            "2024-03-01T04:30:00-05:00",
            "2024-03-01T09:30:00.000Z",
            "2024-03-01T17:30:00.000+08:00",
        ] {
            assert_eq!(ZonedTime::parse("t", s).unwrap().timestamp(), want, "{s}");
        }
        let frac = ZonedTime::parse("t", "2024-03-01T09:30:00.123456789Z").unwrap();
        assert_eq!(frac.timestamp().subsec_nanosecond(), 123_456_789);
    }

    #[test]
    fn salesforce_offset_without_colon() {
        let t = ZonedTime::parse("CreatedDate", "2024-03-01T09:30:00.000+0000").unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
        let t = ZonedTime::parse("CreatedDate", "2024-03-01T17:30:00.000+0800").unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
    }

    #[test]
    fn odata_dates() {
        let want = utc("2024-03-01T09:30:00Z");
        assert_eq!(ZonedTime::parse("d", "/Date(1709285400000)/").unwrap().timestamp(), want);
        // The offset suffix is in minutes and only describes the sender's display zone.
        assert_eq!(ZonedTime::parse("d", "/Date(1709285400000+0480)/").unwrap().timestamp(), want);
        assert_eq!(ZonedTime::parse("d", "/Date(1709285400000-0300)/").unwrap().timestamp(), want);
        assert_eq!(ZonedTime::parse("d", "/Date(-86400000)/").unwrap().timestamp(), utc("1969-12-31T00:00:00Z"));
        assert_eq!(ZonedTime::parse("d", "/Date(-86400000+0000)/").unwrap().as_millis(), -86_400_000);
        for bad in [
            "/Date()/",
            "/Date(abc)/",
            "/Date(+1709285400000)/",
            "/Date(1709285400000+480)/",
            "/Date(1709285400000+04800)/",
            "/Date(1709285400000+0480+0480)/",
            "/Date(--1)/",
            "/Date(1709285400000)",
            "\\/Date(1709285400000)\\/",
            "/Date(99999999999999999999)/",
            "/Date(9223372036854775807)/",
        ] {
            let err = ZonedTime::parse("d", bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert_eq!(err.field, "d");
        }
    }

    #[test]
    fn missing_offset_is_ambiguous() {
        let err = ZonedTime::parse("due", "2024-03-01T09:30:00").unwrap_err();
        assert_eq!(err.field, "due");
        assert_eq!(err.value, "2024-03-01T09:30:00");
        assert!(err.reason.contains("no UTC offset"), "{err}");
        let err = ZonedTime::parse("due", "2024-03-01 09:30:00").unwrap_err();
        assert!(err.reason.contains("no UTC offset"), "{err}");
    }

    #[test]
    fn non_timestamps_are_errors() {
        for bad in ["", "2024-03-01", "yesterday", "1709285400000", "2024-03-01T25:30:00Z", "01/03/2024 09:30"] {
            let err = ZonedTime::parse("t", bad).unwrap_err();
            assert_eq!(err.value, bad);
        }
    }

    #[test]
    fn local_hk() {
        let t = ZonedTime::parse_local_hk("t", "2024-03-01T17:30:00").unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
        let t = ZonedTime::parse_local_hk("t", "2024-03-01 17:30:00.5").unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00.5Z"));
        // An explicit offset still wins over the local assumption.
        let t = ZonedTime::parse_local_hk("t", "2024-03-01T09:30:00Z").unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
        assert!(ZonedTime::parse_local_hk("t", "2024-03-01").is_err());
        assert!(ZonedTime::parse_local_hk("t", "soon").is_err());
    }

    #[test]
    fn sap_date_and_time() {
        let hk = TimeZone::get("Asia/Hong_Kong").unwrap();
        let t = ZonedTime::from_sap("BUDAT", "20240301", "173000", hk.clone()).unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
        let t = ZonedTime::from_sap("BUDAT", "20240301", "173000", TimeZone::UTC).unwrap();
        assert_eq!(t.timestamp(), utc("2024-03-01T17:30:00Z"));
        let err = ZonedTime::from_sap("BUDAT", "00000000", "000000", hk.clone()).unwrap_err();
        assert_eq!(err.field, "BUDAT");
        assert!(err.reason.contains("empty SAP date"), "{err}");
        for (d, t) in [
            ("20240230", "000000"),
            ("2024031", "000000"),
            ("20240301", "1730"),
            ("20240301", "240000"),
            ("2024-03-", "000000"),
            ("20240301", "17:30:"),
            ("", "000000"),
        ] {
            assert!(ZonedTime::from_sap("BUDAT", d, t, hk.clone()).is_err(), "{d} {t}");
        }
    }

    #[test]
    fn display_in_hong_kong() {
        let t = ZonedTime::parse("t", "2024-03-01T09:30:00Z").unwrap();
        assert_eq!(t.to_string(), "2024-03-01 17:30:00 HKT");
        assert_eq!(t.to_hk_string(), "2024-03-01 17:30:00 HKT");
        assert_eq!(t.to_rfc3339(), "2024-03-01T17:30:00+08:00");
        assert_eq!(t.to_odata_date(), "/Date(1709285400000)/");
    }

    #[test]
    fn millis() {
        let t = ZonedTime::from_millis("ms", 1_709_285_400_000).unwrap();
        assert_eq!(t.as_millis(), 1_709_285_400_000);
        assert_eq!(t.timestamp(), utc("2024-03-01T09:30:00Z"));
        let err = ZonedTime::from_millis("ms", i64::MAX).unwrap_err();
        assert_eq!(err.field, "ms");
        assert_eq!(err.value, i64::MAX.to_string());
    }

    #[test]
    fn serde_round_trip() {
        let t = ZonedTime::parse("t", "2024-03-01T09:30:00.25Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-03-01T17:30:00.25+08:00\"");
        assert_eq!(serde_json::from_str::<ZonedTime>(&json).unwrap(), t);
        assert!(serde_json::from_str::<ZonedTime>("\"2024-03-01T09:30:00\"").is_err());
    }
}
