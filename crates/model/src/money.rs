//! Money: an exact decimal amount in an ISO 4217 currency.

use std::fmt;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decimal::{decimal_from_json_number, DecimalFormat};
use crate::ParseError;

/// ISO 4217 codes and minor units of the currencies a Hong Kong trading firm meets.
///
/// Minor units follow ISO 4217 itself, not local cash practice (IDR, TWD and HUF have 2 in the
/// standard even though cash has none); an ERP that sends more decimals than ISO allows is sending
/// something we must not round.
const CURRENCIES: &[(&str, u32)] = &[
    // Hong Kong, mainland China, Macau, Taiwan.
    ("HKD", 2),
    ("CNY", 2),
    ("MOP", 2),
    ("TWD", 2),
    // Major trading currencies.
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("JPY", 0),
    ("CHF", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("NZD", 2),
    // Asia.
    ("SGD", 2),
    ("KRW", 0),
    ("THB", 2),
    ("MYR", 2),
    ("INR", 2),
    ("PHP", 2),
    ("IDR", 2),
    ("VND", 0),
    ("BND", 2),
    ("KHR", 2),
    ("LAK", 2),
    ("MMK", 2),
    ("PKR", 2),
    ("BDT", 2),
    ("LKR", 2),
    ("NPR", 2),
    // Middle East (several with 3 minor units).
    ("AED", 2),
    ("SAR", 2),
    ("QAR", 2),
    ("ILS", 2),
    ("KWD", 3),
    ("BHD", 3),
    ("OMR", 3),
    ("JOD", 3),
    ("IQD", 3),
    ("TND", 3),
    ("LYD", 3),
    // Europe outside the euro.
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("CZK", 2),
    ("HUF", 2),
    ("ISK", 0),
    ("TRY", 2),
    // Americas and Africa.
    ("MXN", 2),
    ("BRL", 2),
    ("CLP", 0),
    ("ZAR", 2),
];

/// An ISO 4217 alphabetic currency code from the built-in table, with its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    /// Hong Kong dollar.
    pub const HKD: Currency = Currency { code: "HKD", minor_units: 2 };
    /// US dollar.
    pub const USD: Currency = Currency { code: "USD", minor_units: 2 };
    /// Chinese yuan renminbi.
    pub const CNY: Currency = Currency { code: "CNY", minor_units: 2 };

    /// Parses an upper-case ISO 4217 code such as "HKD".
    ///
    /// Case-sensitive on purpose: the canonical form is upper case, and a lower-case code is a
    /// sign that the value was typed by hand or came from the wrong field.
    pub fn parse(field: &str, code: &str) -> Result<Currency, ParseError> {
        if let Some(currency) = Currency::lookup(code) {
            return Ok(currency);
        }
        let upper = code.to_ascii_uppercase();
        let reason = if Currency::lookup(&upper).is_some() {
            format!("is not a currency code as written (expected upper case: \"{upper}\")")
        } else {
            "is not a supported ISO 4217 currency code (expected an upper-case code such as \
             HKD, USD or CNY)"
                .to_string()
        };
        Err(ParseError::new(field, code, reason))
    }

    /// The upper-case ISO 4217 code, e.g. "HKD".
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal places the currency has per ISO 4217 (HKD 2, JPY 0, KWD 3).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Every currency in the built-in table.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(|&(code, minor_units)| Currency { code, minor_units })
    }

    fn lookup(code: &str) -> Option<Currency> {
        Currency::all().find(|c| c.code == code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse("currency", &code).map_err(D::Error::custom)
    }
}

/// An exact amount of money. Never touched by floating point.
///
/// Construct it with [`Money::new`], [`Money::parse`] or [`Money::from_json`], which check that
/// the amount has no more decimals than the currency allows and pad it to exactly that many
/// (so HKD 12.5 is stored and serialized as 12.50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// The amount, with the currency's minor units as its scale when built by a constructor.
    pub amount: Decimal,
    /// The currency.
    pub currency: Currency,
}

/// What the JSON forms look like, for error messages.
const MONEY_FORMS: &str = "expected {\"amount\":\"12.50\",\"currency\":\"HKD\"} or \"HKD 12.50\"";

impl Money {
    /// Builds money from a computed decimal, e.g. price times quantity.
    ///
    /// The value (trailing zeros ignored, since arithmetic adds them) must fit the currency's
    /// minor units; it is never rounded.
    pub fn new(field: &str, amount: Decimal, currency: Currency) -> Result<Money, ParseError> {
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_units {
            return Err(too_many_decimals(field, &amount.to_string(), currency));
        }
        Ok(Money { amount: pad_scale(normalized, currency.minor_units), currency })
    }

    /// Parses a plain decimal amount ("1234.50") and a currency code ("HKD").
    ///
    /// The amount as written may not have more decimals than the currency allows: "12.345" HKD
    /// and even "12.340" HKD are refused, because a third decimal in a two-decimal currency more
    /// likely means the text used '.' for thousands than that the sender padded with a zero.
    pub fn parse(field: &str, amount: &str, currency: &str) -> Result<Money, ParseError> {
        Money::parse_with_format(field, amount, currency, &DecimalFormat::PLAIN)
    }

    /// Like [`Money::parse`], for amounts written in a known local format ("1.234,50").
    pub fn parse_with_format(
        field: &str,
        amount: &str,
        currency: &str,
        format: &DecimalFormat,
    ) -> Result<Money, ParseError> {
        let currency = Currency::parse(field, currency)?;
        let value = format.parse_decimal(field, amount)?;
        if value.scale() > currency.minor_units {
            return Err(too_many_decimals(field, amount, currency));
        }
        Ok(Money { amount: pad_scale(value, currency.minor_units), currency })
    }

    /// Parses the text form "HKD 1,234.50": code, one space, amount with optional ',' grouping
    /// and '.' decimals. This is also what [`Money`]'s `Display` writes.
    pub fn parse_text(field: &str, text: &str) -> Result<Money, ParseError> {
        let Some((code, amount)) = text.split_once(' ') else {
            return Err(ParseError::new(field, text, format!("is not money ({MONEY_FORMS})")));
        };
        Money::parse_with_format(field, amount, code, &DecimalFormat::DOT_DECIMAL_COMMA_GROUPING).map_err(|e| {
            ParseError {
                // Report the whole input, not just the half that failed.
                value: text.to_string(),
                ..e
            }
        })
    }

    /// Reads money from JSON: `{"amount":"12.50","currency":"HKD"}` (the amount may also be a
    /// JSON number when it can be read exactly) or the string `"HKD 12.50"`.
    pub fn from_json(field: &str, value: &serde_json::Value) -> Result<Money, ParseError> {
        use serde_json::Value;
        let shown = || value.to_string();
        match value {
            Value::String(text) => Money::parse_text(field, text),
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|k| *k != "amount" && *k != "currency") {
                    return Err(ParseError::new(
                        field,
                        &shown(),
                        format!("has unexpected key `{key}` ({MONEY_FORMS})"),
                    ));
                }
                let currency = match map.get("currency") {
                    Some(Value::String(code)) => Currency::parse(field, code)?,
                    Some(_) => {
                        return Err(ParseError::new(
                            field,
                            &shown(),
                            format!("has a currency that is not a string ({MONEY_FORMS})"),
                        ))
                    }
                    None => return Err(ParseError::new(field, &shown(), format!("has no currency ({MONEY_FORMS})"))),
                };
                match map.get("amount") {
                    Some(Value::String(amount)) => Money::parse(field, amount, currency.code),
                    Some(Value::Number(number)) => {
                        let amount = decimal_from_json_number(field, number, "send amounts as strings")?;
                        Money::new(field, amount, currency)
                    }
                    Some(_) => Err(ParseError::new(
                        field,
                        &shown(),
                        format!("has an amount that is neither a string nor a number ({MONEY_FORMS})"),
                    )),
                    None => Err(ParseError::new(field, &shown(), format!("has no amount ({MONEY_FORMS})"))),
                }
            }
            Value::Number(_) => {
                Err(ParseError::new(field, &shown(), format!("is a bare number without a currency ({MONEY_FORMS})")))
            }
            _ => Err(ParseError::new(field, &shown(), format!("is not money ({MONEY_FORMS})"))),
        }
    }

    /// The amount as plain text padded to the currency's minor units, e.g. "1234.50".
    pub fn amount_string(&self) -> String {
        DecimalFormat::PLAIN.format_with_scale(self.amount, self.currency.minor_units)
    }
}

fn too_many_decimals(field: &str, amount: &str, currency: Currency) -> ParseError {
    let places = match currency.minor_units {
        0 => "no decimal places".to_string(),
        1 => "at most 1 decimal place".to_string(),
        n => format!("at most {n} decimal places"),
    };
    ParseError::new(field, amount, format!("has too many decimal places ({} allows {places})", currency.code))
}

/// Raises the scale to `scale` without changing the value; if the mantissa cannot hold the
/// extra zeros (amounts near the decimal's limit) the value is kept as it is.
fn pad_scale(value: Decimal, scale: u32) -> Decimal {
    if value.is_zero() {
        // "-0" is a valid input but "HKD -0.00" would only confuse a reader.
        return Decimal::new(0, scale);
    }
    if value.scale() >= scale {
        return value;
    }
    let mut padded = value;
    padded.rescale(scale);
    if padded == value && padded.scale() == scale {
        padded
    } else {
        value
    }
}

impl fmt::Display for Money {
    /// "HKD 1,234.50": grouped with ',' and padded to the currency's minor units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let amount =
            DecimalFormat::DOT_DECIMAL_COMMA_GROUPING.format_with_scale(self.amount, self.currency.minor_units);
        write!(f, "{} {amount}", self.currency.code)
    }
}

impl Serialize for Money {
    /// `{"amount":"1234.50","currency":"HKD"}`: the amount is a string so that no JSON reader
    /// turns it into a float.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Money", 2)?;
        s.serialize_field("amount", &self.amount_string())?;
        s.serialize_field("currency", self.currency.code)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Money::from_json("money", &value).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn currency_table_minor_units() {
        for (code, minor) in [
            ("HKD", 2),
            ("USD", 2),
            ("CNY", 2),
            ("EUR", 2),
            ("GBP", 2),
            ("JPY", 0),
            ("SGD", 2),
            ("AUD", 2),
            ("CAD", 2),
            ("CHF", 2),
            ("TWD", 2),
            ("MOP", 2),
            ("KRW", 0),
            ("THB", 2),
            ("MYR", 2),
            ("INR", 2),
            ("NZD", 2),
            ("PHP", 2),
            ("IDR", 2),
            ("VND", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("OMR", 3),
            ("JOD", 3),
        ] {
            let c = Currency::parse("currency", code).unwrap();
            assert_eq!(c.code(), code);
            assert_eq!(c.minor_units(), minor, "{code}");
        }
        assert_eq!(Currency::parse("c", "HKD").unwrap(), Currency::HKD);
        assert_eq!(Currency::parse("c", "USD").unwrap(), Currency::USD);
        assert_eq!(Currency::parse("c", "CNY").unwrap(), Currency::CNY);
    }

    #[test]
    fn currency_table_has_no_duplicates() {
        let mut codes: Vec<&str> = Currency::all().map(|c| c.code()).collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }

    #[test]
    fn lower_case_currency_is_an_error_naming_the_form() {
        let err = Currency::parse("currency", "hkd").unwrap_err();
        assert_eq!(err.field, "currency");
        assert_eq!(err.value, "hkd");
        assert!(err.reason.contains("upper case"), "{err}");
        assert!(err.reason.contains("\"HKD\""), "{err}");
    }

    #[test]
    fn unknown_currency_is_an_error() {
        for bad in ["XXX", "HK$", "", "HKD ", "RMB", "CNH"] {
            let err = Currency::parse("cur", bad).unwrap_err();
            assert!(err.reason.contains("ISO 4217"), "{bad}: {err}");
        }
    }

    #[test]
    fn parse_pads_to_minor_units() {
        let m = Money::parse("amount", "12.5", "HKD").unwrap();
        assert_eq!(m.amount, dec("12.50"));
        assert_eq!(m.amount.scale(), 2);
        assert_eq!(m.amount_string(), "12.50");
        let m = Money::parse("amount", "1000", "JPY").unwrap();
        assert_eq!(m.amount_string(), "1000");
        let m = Money::parse("amount", "-1.5", "KWD").unwrap();
        assert_eq!(m.amount_string(), "-1.500");
    }

    #[test]
    fn three_decimals_in_hkd_is_an_error() {
        let err = Money::parse("amount", "12.345", "HKD").unwrap_err();
        assert_eq!(err.field, "amount");
        assert_eq!(err.value, "12.345");
        assert!(err.reason.contains("HKD allows at most 2 decimal places"), "{err}");
        assert!(Money::parse("amount", "12.340", "HKD").is_err());
        let err = Money::parse("amount", "1.5", "JPY").unwrap_err();
        assert!(err.reason.contains("JPY allows no decimal places"), "{err}");
        assert!(Money::parse("amount", "1.234", "KWD").is_ok());
    }

    #[test]
    fn text_form_with_three_decimals_is_an_error() {
        let err = Money::parse_text("price", "HKD 12.345").unwrap_err();
        assert_eq!(err.field, "price");
        assert_eq!(err.value, "HKD 12.345");
        assert!(err.to_string().contains("HKD allows at most 2 decimal places"));
        let err = Money::from_json("price", &json!("HKD 12.345")).unwrap_err();
        assert!(err.to_string().contains("\"HKD 12.345\""));
    }

    #[test]
    fn parse_rejects_non_decimal_amounts() {
        for bad in ["1e3", "12,50", " 12", "twelve", "12 HKD", "+12", ""] {
            let err = Money::parse("amount", bad, "HKD").unwrap_err();
            assert_eq!(err.value, bad);
        }
        assert!(Money::parse("amount", "12", "hkd").is_err());
    }

    #[test]
    fn parse_with_format() {
        let m =
            Money::parse_with_format("amount", "1.234,50", "EUR", &DecimalFormat::COMMA_DECIMAL_DOT_GROUPING).unwrap();
        assert_eq!(m.amount, dec("1234.50"));
    }

    #[test]
    fn new_checks_value_scale_not_written_scale() {
        let m = Money::new("total", dec("1020.00000"), Currency::HKD).unwrap();
        assert_eq!(m.amount_string(), "1020.00");
        assert!(Money::new("total", dec("0.125"), Currency::HKD).is_err());
    }

    #[test]
    fn display_groups_and_pads() {
        assert_eq!(Money::parse("a", "1234.5", "HKD").unwrap().to_string(), "HKD 1,234.50");
        assert_eq!(Money::parse("a", "-1234567", "JPY").unwrap().to_string(), "JPY -1,234,567");
        assert_eq!(Money::parse("a", "0", "USD").unwrap().to_string(), "USD 0.00");
    }

    #[test]
    fn negative_zero_is_zero() {
        let m = Money::parse("a", "-0", "USD").unwrap();
        assert_eq!(m.to_string(), "USD 0.00");
        assert_eq!(m.amount_string(), "0.00");
    }

    #[test]
    fn from_json_object_and_string() {
        let want = Money::parse("a", "12.50", "HKD").unwrap();
        assert_eq!(Money::from_json("a", &json!({"amount": "12.50", "currency": "HKD"})).unwrap(), want);
        assert_eq!(Money::from_json("a", &json!({"amount": 12.5, "currency": "HKD"})).unwrap(), want);
        assert_eq!(Money::from_json("a", &json!("HKD 12.50")).unwrap(), want);
        assert_eq!(Money::from_json("a", &json!("HKD 1,234.50")).unwrap().amount, dec("1234.50"));
        assert_eq!(
            Money::from_json("a", &json!({"amount": 1250000, "currency": "HKD"})).unwrap().amount_string(),
            "1250000.00"
        );
    }

    #[test]
    fn from_json_rejects_inexact_numbers_and_bad_shapes() {
        let err = Money::from_json("a", &json!({"amount": 0.30000000000000004_f64, "currency": "HKD"})).unwrap_err();
        assert!(err.reason.contains("send amounts as strings"), "{err}");
        let err = Money::from_json("a", &json!({"amount": 12.345, "currency": "HKD"})).unwrap_err();
        assert!(err.reason.contains("HKD allows at most 2"), "{err}");
        for bad in [
            json!(12.5),
            json!(null),
            json!(true),
            json!("12.50"),
            json!("HKD  12.50"),
            json!("12.50 HKD"),
            json!({"amount": "12.50"}),
            json!({"currency": "HKD"}),
            json!({"amount": "12.50", "currency": "HKD", "extra": 1}),
            json!({"amount": "12.50", "currency": 344}),
            json!({"amount": ["12.50"], "currency": "HKD"}),
        ] {
            let err = Money::from_json("price", &bad).unwrap_err();
            assert_eq!(err.field, "price", "{bad}");
        }
    }

    #[test]
    fn serde_uses_string_amounts() {
        let m = Money::parse("a", "1234.5", "HKD").unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"amount":"1234.50","currency":"HKD"}"#);
        let back: Money = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.amount.scale(), 2);
        let err = serde_json::from_str::<Money>(r#"{"amount":"1.234","currency":"HKD"}"#).unwrap_err();
        assert!(err.to_string().contains("HKD allows at most 2"), "{err}");
        assert!(serde_json::from_str::<Currency>(r#""hkd""#).is_err());
        assert_eq!(serde_json::from_str::<Currency>(r#""JPY""#).unwrap().minor_units(), 0);
    }
}
