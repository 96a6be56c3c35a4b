//! Strict decimal parsing and formatting.
//!
//! Decimals arrive as text in many local conventions ("1,234.50" in Hong Kong, "1.234,50" from a
//! German ERP tenant). Reading one convention as the other silently changes a value by a factor
//! of a thousand, so every parser here accepts exactly one convention and rejects the rest.

use rust_decimal::Decimal;

use crate::ParseError;

/// How a decimal is written: which character separates the fraction and which (if any) groups
/// the thousands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecimalFormat {
    /// Separates the integer part from the fraction, e.g. '.'.
    pub decimal_separator: char,
    /// Separates groups of three integer digits, e.g. ','; `None` forbids grouping.
    pub grouping_separator: Option<char>,
}

impl DecimalFormat {
    /// `1234.50`: '.' decimals, no grouping. The canonical form of this crate and of JSON APIs.
    pub const PLAIN: DecimalFormat = DecimalFormat { decimal_separator: '.', grouping_separator: None };

    /// `1,234.50`: '.' decimals, ',' grouping, as written in Hong Kong, the UK and the US.
    pub const DOT_DECIMAL_COMMA_GROUPING: DecimalFormat =
        DecimalFormat { decimal_separator: '.', grouping_separator: Some(',') };

    /// `1.234,50`: ',' decimals, '.' grouping, as written in much of continental Europe.
    pub const COMMA_DECIMAL_DOT_GROUPING: DecimalFormat =
        DecimalFormat { decimal_separator: ',', grouping_separator: Some('.') };

    /// Parses `text` written in this format.
    ///
    /// Grammar: an optional leading '-', integer digits (either ungrouped, or grouped as 1 to 3
    /// digits followed by groups of exactly 3), then optionally the decimal separator followed by
    /// at least one digit. No '+', no exponent, no spaces, no currency signs, no words.
    pub fn parse_decimal(&self, field: &str, text: &str) -> Result<Decimal, ParseError> {
        if !self.is_usable() {
            return Err(ParseError::new(
                field,
                text,
                format!(
                    "cannot be parsed: the decimal format {self:?} needs two different \
                     separators that are neither digits nor '-'"
                ),
            ));
        }
        let invalid = || ParseError::new(field, text, format!("is not a valid decimal (expected {})", self.expected()));

        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once(self.decimal_separator) {
            Some((int_part, frac_part)) => (int_part, Some(frac_part)),
            None => (body, None),
        };

        let int_digits = self.integer_digits(int_part).ok_or_else(invalid)?;
        let mut canonical = String::with_capacity(text.len() + 1);
        if negative {
            canonical.push('-');
        }
        canonical.push_str(&int_digits);
        if let Some(frac) = frac_part {
            if !all_digits(frac) {
                return Err(invalid());
            }
            canonical.push('.');
            canonical.push_str(frac);
        }

        // from_str_exact refuses to round, so a value that does not fit is an error rather than
        // a silently different number.
        Decimal::from_str_exact(&canonical).map_err(|_| {
            ParseError::new(field, text, "is out of range for a decimal (at most 28 digits, magnitude below 7.9e28)")
        })
    }

    /// Formats `value` in this format, keeping its scale ("12.50" stays "12.50").
    pub fn format(&self, value: Decimal) -> String {
        self.format_with_scale(value, 0)
    }

    /// Formats `value` in this format with at least `min_scale` fraction digits (padded with
    /// zeros; never rounded).
    pub fn format_with_scale(&self, value: Decimal, min_scale: u32) -> String {
        let plain = value.to_string();
        let (negative, body) = match plain.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, plain.as_str()),
        };
        let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));

        let mut out = String::with_capacity(plain.len() + plain.len() / 3 + 4);
        if negative {
            out.push('-');
        }
        match self.grouping_separator {
            Some(sep) => {
                let len = int_part.len();
                for (i, c) in int_part.chars().enumerate() {
                    if i > 0 && (len - i) % 3 == 0 {
                        out.push(sep);
                    }
                    out.push(c);
                }
            }
            None => out.push_str(int_part),
        }

        let mut frac = frac_part.to_string();
        while (frac.len() as u64) < u64::from(min_scale) {
            frac.push('0');
        }
        if !frac.is_empty() {
            out.push(self.decimal_separator);
            out.push_str(&frac);
        }
        out
    }

    /// Describes the accepted form, for error messages.
    fn expected(&self) -> String {
        let decimal = self.decimal_separator;
        match self.grouping_separator {
            Some(grouping) => format!("'{grouping}' grouping with '{decimal}' decimals"),
            None => format!("'{decimal}' decimals and no grouping"),
        }
    }

    /// A format whose separators collide with each other, with digits or with the sign could
    /// not be parsed unambiguously.
    fn is_usable(&self) -> bool {
        let bad = |c: char| c.is_ascii_digit() || c == '-';
        match self.grouping_separator {
            Some(g) => !bad(self.decimal_separator) && !bad(g) && g != self.decimal_separator,
            None => !bad(self.decimal_separator),
        }
    }

    /// Returns the bare digits of an integer part, checking the grouping rule.
    fn integer_digits(&self, int_part: &str) -> Option<String> {
        let grouping = match self.grouping_separator {
            Some(g) if int_part.contains(g) => g,
            _ => {
                return if all_digits(int_part) { Some(int_part.to_string()) } else { None };
            }
        };
        let mut digits = String::with_capacity(int_part.len());
        for (i, group) in int_part.split(grouping).enumerate() {
            let ok = if i == 0 {
                (1..=3).contains(&group.len()) && all_digits(group)
            } else {
                group.len() == 3 && all_digits(group)
            };
            if !ok {
                return None;
            }
            digits.push_str(group);
        }
        Some(digits)
    }
}

impl Default for DecimalFormat {
    fn default() -> DecimalFormat {
        DecimalFormat::PLAIN
    }
}

/// Parses a plain decimal: optional '-', digits, optionally '.' and digits. No grouping.
pub fn parse_decimal(field: &str, text: &str) -> Result<Decimal, ParseError> {
    DecimalFormat::PLAIN.parse_decimal(field, text)
}

/// True when `s` is non-empty and only ASCII digits (other scripts' digits are refused).
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A binary double carries about 15 significant decimal digits reliably: any decimal with at
/// most 15 of them survives text -> f64 -> shortest text unchanged. Beyond that the sender's
/// digits may already be lost.
const F64_EXACT_DIGITS: usize = 15;

/// Reads a JSON number as a decimal without guessing.
///
/// serde_json is used without `arbitrary_precision`, so a non-integer number has already been
/// rounded to an f64 and its original text is gone. It is accepted only when its shortest text
/// form has at most 15 significant digits, i.e. when that text is certainly what was sent;
/// otherwise the error tells the sender to `hint` (e.g. "send amounts as strings").
pub(crate) fn decimal_from_json_number(
    field: &str,
    number: &serde_json::Number,
    hint: &str,
) -> Result<Decimal, ParseError> {
    let shown = number.to_string();
    if let Some(i) = number.as_i64() {
        return Ok(Decimal::from(i));
    }
    if let Some(u) = number.as_u64() {
        return Ok(Decimal::from(u));
    }
    let lossy = || ParseError::new(field, &shown, format!("is a JSON number that cannot be read exactly; {hint}"));
    let float = number.as_f64().ok_or_else(lossy)?;
    if !float.is_finite() {
        return Err(lossy());
    }
    // Rust's float Display is the shortest text that reads back as the same f64, and never uses
    // an exponent, so it is the best available witness of what the sender wrote.
    let text = format!("{float}");
    if significant_digits(&text) > F64_EXACT_DIGITS || text.parse::<f64>() != Ok(float) {
        return Err(lossy());
    }
    Decimal::from_str_exact(&text).map_err(|_| lossy())
}

/// Counts significant digits of a plain decimal text (no leading or trailing zeros).
fn significant_digits(text: &str) -> usize {
    let digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn plain_accepts_canonical_forms() {
        assert_eq!(parse_decimal("f", "0").unwrap(), dec("0"));
        assert_eq!(parse_decimal("f", "12.50").unwrap(), dec("12.50"));
        assert_eq!(parse_decimal("f", "12.50").unwrap().scale(), 2);
        assert_eq!(parse_decimal("f", "-7.125").unwrap(), dec("-7.125"));
        assert_eq!(parse_decimal("f", "1000").unwrap(), dec("1000"));
    }

    #[test]
    fn plain_rejects_everything_else() {
        for bad in [
            "",
            "-",
            "+1",
            "1e5",
            "1E5",
            " 1",
            "1 ",
            "1 000",
            "1,000",
            "1,000.5",
            ".5",
            "5.",
            "1..2",
            "1.2.3",
            "one hundred",
            "100 units",
            "NaN",
            "inf",
            "--1",
            "１２",
            "0x10",
            "1_000",
            "12.5%",
            "$12",
        ] {
            let err = parse_decimal("amount", bad).unwrap_err();
            assert_eq!(err.field, "amount");
            assert_eq!(err.value, bad);
            assert!(err.reason.contains("not a valid decimal"), "{bad}: {err}");
        }
    }

    #[test]
    fn dot_grouped_field_rejects_comma_grouping() {
        // "1,000.5" in a field written as 1.000,5: reading it would change the value 1000-fold.
        let err = DecimalFormat::COMMA_DECIMAL_DOT_GROUPING.parse_decimal("amount", "1,000.5").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `amount`: \"1,000.5\" is not a valid decimal (expected '.' grouping with ',' decimals)"
        );
    }

    #[test]
    fn comma_decimal_dot_grouping_parses() {
        let f = DecimalFormat { decimal_separator: ',', grouping_separator: Some('.') };
        assert_eq!(f.parse_decimal("f", "1.000,5").unwrap(), dec("1000.5"));
        assert_eq!(f.parse_decimal("f", "1000,5").unwrap(), dec("1000.5"));
        assert_eq!(f.parse_decimal("f", "-12.345.678").unwrap(), dec("-12345678"));
    }

    #[test]
    fn dot_decimal_comma_grouping_parses() {
        let f = DecimalFormat { decimal_separator: '.', grouping_separator: Some(',') };
        assert_eq!(f.parse_decimal("f", "1,000.5").unwrap(), dec("1000.5"));
        assert_eq!(f.parse_decimal("f", "1,234,567").unwrap(), dec("1234567"));
        for bad in ["1,00.5", "1,0000", "1234,567", ",123", "1,", "1,000.5,0", "1.000,5"] {
            assert!(f.parse_decimal("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_grouping_rejects_grouped_text() {
        let f = DecimalFormat { decimal_separator: '.', grouping_separator: None };
        let err = f.parse_decimal("qty", "1,000.5").unwrap_err();
        assert!(err.to_string().contains("qty"));
        assert!(err.to_string().contains("\"1,000.5\""));
        assert!(err.reason.contains("no grouping"));
    }

    #[test]
    fn unusable_format_is_an_error_not_a_guess() {
        let f = DecimalFormat { decimal_separator: '.', grouping_separator: Some('.') };
        assert!(f.parse_decimal("f", "1.000").is_err());
    }

    #[test]
    fn out_of_range_is_an_error() {
        let err = parse_decimal("f", "99999999999999999999999999999999").unwrap_err();
        assert!(err.reason.contains("out of range"));
        assert!(parse_decimal("f", "0.00000000000000000000000000001").is_err());
    }

    #[test]
    fn formats_with_grouping_and_padding() {
        let f = DecimalFormat::DOT_DECIMAL_COMMA_GROUPING;
        assert_eq!(f.format(dec("1234567.5")), "1,234,567.5");
        assert_eq!(f.format_with_scale(dec("1234.5"), 2), "1,234.50");
        assert_eq!(f.format_with_scale(dec("-999"), 2), "-999.00");
        assert_eq!(f.format(dec("100")), "100");
        assert_eq!(DecimalFormat::COMMA_DECIMAL_DOT_GROUPING.format(dec("1000.5")), "1.000,5");
        assert_eq!(DecimalFormat::PLAIN.format(dec("1000.5")), "1000.5");
    }

    #[test]
    fn json_numbers() {
        let n = |s: &str| serde_json::Number::from_str(s).unwrap();
        let hint = "send amounts as strings";
        assert_eq!(decimal_from_json_number("a", &n("12"), hint).unwrap(), dec("12"));
        assert_eq!(
            decimal_from_json_number("a", &n("18446744073709551615"), hint).unwrap(),
            dec("18446744073709551615")
        );
        assert_eq!(decimal_from_json_number("a", &n("12.5"), hint).unwrap(), dec("12.5"));
        assert_eq!(decimal_from_json_number("a", &n("1250000.0"), hint).unwrap(), dec("1250000"));
        let err = decimal_from_json_number("a", &n("0.30000000000000004"), hint).unwrap_err();
        assert!(err.reason.contains(hint));
        assert!(decimal_from_json_number("a", &n("1e300"), hint).is_err());
        assert!(decimal_from_json_number("a", &n("12345678.123456789"), hint).is_err());
    }
}
