//! Quantities with UN/ECE Recommendation 20 units, SAP unit codes mapped, and exact conversion.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decimal::{decimal_from_json_number, parse_decimal};
use crate::ParseError;

/// A unit of measure, named by its UN/ECE Recommendation 20 code.
// The variants are the Rec 20 codes verbatim so that code and variant read the same.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Uom {
    /// One (unit, piece): the Rec 20 code for a dimensionless count.
    C62,
    /// Each.
    EA,
    /// Piece.
    PCE,
    /// Dozen (12).
    DZN,
    /// Gross (144).
    GRO,
    /// Pair (2).
    PR,
    /// Box: packaging, size depends on the item.
    BX,
    /// Carton: packaging, size depends on the item.
    CT,
    /// Pack: packaging, size depends on the item.
    PK,
    /// Set: packaging, size depends on the item.
    SET,
    /// Kilogram.
    KGM,
    /// Gram.
    GRM,
    /// Tonne (metric ton, 1000 kg).
    TNE,
    /// Pound (avoirdupois, exactly 0.45359237 kg).
    LBR,
    /// Litre.
    LTR,
    /// Millilitre.
    MLT,
    /// Cubic metre (1000 litres).
    MTQ,
    /// Metre.
    MTR,
    /// Centimetre.
    CMT,
    /// Millimetre.
    MMT,
    /// Square metre.
    MTK,
}

/// The kind of quantity a unit measures. Only units of the same dimension convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Counted items; base unit one/each/piece.
    Count,
    /// Base unit kilogram.
    Mass,
    /// Base unit litre.
    Volume,
    /// Base unit metre.
    Length,
    /// Base unit square metre.
    Area,
    /// Boxes, cartons, packs, sets: how many items they hold differs per item.
    Packaging,
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dimension::Count => "count",
            Dimension::Mass => "mass",
            Dimension::Volume => "volume",
            Dimension::Length => "length",
            Dimension::Area => "area",
            Dimension::Packaging => "packaging",
        })
    }
}

/// One row of the unit table. `ratio` is (p, q): one unit equals p/q of the dimension's base
/// unit. Kept as an integer fraction so conversion is exact rational arithmetic.
struct UnitDef {
    uom: Uom,
    code: &'static str,
    dimension: Dimension,
    ratio: Option<(u128, u128)>,
}

const fn unit(uom: Uom, code: &'static str, dimension: Dimension, ratio: Option<(u128, u128)>) -> UnitDef {
    UnitDef { uom, code, dimension, ratio }
}

const UNITS: &[UnitDef] = &[
    // C62, EA and PCE are the same unit under different names.
    unit(Uom::C62, "C62", Dimension::Count, Some((1, 1))),
    unit(Uom::EA, "EA", Dimension::Count, Some((1, 1))),
    unit(Uom::PCE, "PCE", Dimension::Count, Some((1, 1))),
    unit(Uom::DZN, "DZN", Dimension::Count, Some((12, 1))),
    unit(Uom::GRO, "GRO", Dimension::Count, Some((144, 1))),
    unit(Uom::PR, "PR", Dimension::Count, Some((2, 1))),
    unit(Uom::BX, "BX", Dimension::Packaging, None),
    unit(Uom::CT, "CT", Dimension::Packaging, None),
    unit(Uom::PK, "PK", Dimension::Packaging, None),
    unit(Uom::SET, "SET", Dimension::Packaging, None),
    unit(Uom::KGM, "KGM", Dimension::Mass, Some((1, 1))),
    unit(Uom::GRM, "GRM", Dimension::Mass, Some((1, 1_000))),
    unit(Uom::TNE, "TNE", Dimension::Mass, Some((1_000, 1))),
    // The international avoirdupois pound is defined as exactly 0.45359237 kg.
    unit(Uom::LBR, "LBR", Dimension::Mass, Some((45_359_237, 100_000_000))),
    unit(Uom::LTR, "LTR", Dimension::Volume, Some((1, 1))),
    unit(Uom::MLT, "MLT", Dimension::Volume, Some((1, 1_000))),
    unit(Uom::MTQ, "MTQ", Dimension::Volume, Some((1_000, 1))),
    unit(Uom::MTR, "MTR", Dimension::Length, Some((1, 1))),
    unit(Uom::CMT, "CMT", Dimension::Length, Some((1, 100))),
    unit(Uom::MMT, "MMT", Dimension::Length, Some((1, 1_000))),
    unit(Uom::MTK, "MTK", Dimension::Area, Some((1, 1))),
];

/// SAP internal (T006) and commercial unit codes that differ from the Rec 20 code.
///
/// `ST` is Rec 20's code for "sheet", but SAP systems use it for piece (German "Stück"), and
/// SAP is where it reaches us from; sheets are not a unit this gateway handles.
const SAP_CODES: &[(&str, Uom)] = &[
    ("ST", Uom::PCE),
    ("PC", Uom::PCE),
    ("KG", Uom::KGM),
    ("G", Uom::GRM),
    ("TO", Uom::TNE),
    ("LB", Uom::LBR),
    ("L", Uom::LTR),
    ("ML", Uom::MLT),
    ("M3", Uom::MTQ),
    ("M", Uom::MTR),
    ("CM", Uom::CMT),
    ("MM", Uom::MMT),
    ("M2", Uom::MTK),
    ("DZ", Uom::DZN),
    ("PAA", Uom::PR),
    ("PAK", Uom::PK),
    ("KAR", Uom::CT),
    ("BOX", Uom::BX),
];

const UOM_FORMS: &str =
    "expected a UN/ECE Rec 20 code such as PCE, EA, DZN or KGM, or an SAP unit such as ST, PC or KG";

impl Uom {
    /// Parses a Rec 20 code ("PCE", "KGM") or an SAP unit code ("ST", "KG", "KAR").
    ///
    /// Case-sensitive, and anything else ("units", "pcs", "") is an error: a guessed unit is a
    /// wrong stock figure.
    pub fn parse(field: &str, code: &str) -> Result<Uom, ParseError> {
        if let Some(uom) = Uom::lookup(code) {
            return Ok(uom);
        }
        let upper = code.to_ascii_uppercase();
        let reason = if Uom::lookup(&upper).is_some() {
            format!("is not a unit of measure as written (expected upper case: \"{upper}\")")
        } else {
            format!("is not a known unit of measure ({UOM_FORMS})")
        };
        Err(ParseError::new(field, code, reason))
    }

    /// The Rec 20 code, e.g. "PCE" (also for units parsed from SAP codes).
    pub fn code(&self) -> &'static str {
        self.def().code
    }

    /// What kind of quantity this unit measures.
    pub fn dimension(&self) -> Dimension {
        self.def().dimension
    }

    /// True for box, carton, pack and set, whose size depends on the item.
    pub fn is_packaging(&self) -> bool {
        self.def().ratio.is_none()
    }

    /// How many of the dimension's base unit one of this unit is (1 DZN = 12, 1 GRM = 0.001);
    /// `None` for packaging units.
    pub fn factor(&self) -> Option<Decimal> {
        let (p, q) = self.def().ratio?;
        exact_ratio(Decimal::ONE, p, q).ok()
    }

    /// Every unit, in table order.
    pub fn all() -> impl Iterator<Item = Uom> {
        UNITS.iter().map(|d| d.uom)
    }

    fn lookup(code: &str) -> Option<Uom> {
        UNITS
            .iter()
            .find(|d| d.code == code)
            .map(|d| d.uom)
            .or_else(|| SAP_CODES.iter().find(|(sap, _)| *sap == code).map(|(_, uom)| *uom))
    }

    fn def(&self) -> &'static UnitDef {
        // The table has one row per variant (checked by a test); the fallback row only keeps
        // this total without a panic path.
        UNITS.iter().find(|d| d.uom == *self).unwrap_or(&UNITS[0])
    }
}

impl fmt::Display for Uom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Uom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Uom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Uom, D::Error> {
        let code = String::deserialize(deserializer)?;
        Uom::parse("unit", &code).map_err(D::Error::custom)
    }
}

/// Why a quantity could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// The units measure different things (mass vs count).
    #[error("cannot convert {from} to {to}: {} and {} are different kinds of quantity", .from.dimension(), .to.dimension())]
    Incompatible {
        /// Unit converted from.
        from: Uom,
        /// Unit converted to.
        to: Uom,
    },
    /// A packaging unit is involved and no per-item size was given for it.
    #[error(
        "cannot convert {from} to {to}: {unit} has no fixed size; give its content for this item (e.g. 1 CT = 24 PCE)"
    )]
    NoPackagingFactor {
        /// Unit converted from.
        from: Uom,
        /// Unit converted to.
        to: Uom,
        /// The packaging unit without a factor.
        unit: Uom,
    },
    /// The result has no exact decimal form (13 EA in DZN) or needs more than 28 decimals.
    #[error("cannot convert {value} {from} to {to} exactly: the result is not a finite decimal within 28 places")]
    Inexact {
        /// Value converted.
        value: Decimal,
        /// Unit converted from.
        from: Uom,
        /// Unit converted to.
        to: Uom,
    },
    /// The result does not fit in a decimal.
    #[error("converting {value} {from} to {to} exceeds the decimal range")]
    Overflow {
        /// Value converted.
        value: Decimal,
        /// Unit converted from.
        from: Uom,
        /// Unit converted to.
        to: Uom,
    },
    /// A packaging factor that cannot be used.
    #[error("invalid packaging factor for {unit}: {reason}")]
    InvalidFactor {
        /// The packaging unit.
        unit: Uom,
        /// What is wrong with it.
        reason: String,
    },
}

/// Per-item sizes of packaging units, e.g. for one material 1 CT = 24 PCE and 1 BX = 6 PCE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagingFactors {
    factors: BTreeMap<Uom, (Decimal, Uom)>,
}

impl PackagingFactors {
    /// No factors.
    pub fn new() -> PackagingFactors {
        PackagingFactors::default()
    }

    /// Declares that one `unit` (a packaging unit) holds `per_unit` of `base` (a unit with a
    /// fixed size, e.g. PCE or KGM). Replaces an earlier factor for the same unit.
    pub fn insert(&mut self, unit: Uom, per_unit: Decimal, base: Uom) -> Result<(), ConversionError> {
        let invalid = |reason: &str| ConversionError::InvalidFactor { unit, reason: reason.to_string() };
        if !unit.is_packaging() {
            return Err(invalid("only box, carton, pack and set take per-item factors"));
        }
        if base.is_packaging() {
            return Err(invalid("the content must be in a unit with a fixed size, e.g. PCE"));
        }
        if per_unit <= Decimal::ZERO {
            return Err(invalid("the content must be greater than zero"));
        }
        self.factors.insert(unit, (per_unit, base));
        Ok(())
    }

    /// Builder form of [`PackagingFactors::insert`].
    pub fn with(mut self, unit: Uom, per_unit: Decimal, base: Uom) -> Result<PackagingFactors, ConversionError> {
        self.insert(unit, per_unit, base)?;
        Ok(self)
    }

    /// The content of one `unit`, if declared.
    pub fn get(&self, unit: Uom) -> Option<(Decimal, Uom)> {
        self.factors.get(&unit).copied()
    }
}

/// A measured or counted amount with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    /// The amount.
    pub value: Decimal,
    /// The unit.
    pub unit: Uom,
}

const QUANTITY_FORMS: &str = "expected \"<number> <unit>\" such as \"144 EA\", or \
     {\"value\":\"144\",\"unit\":\"EA\"}";

impl Quantity {
    /// A quantity from already-typed parts.
    pub fn new(value: Decimal, unit: Uom) -> Quantity {
        Quantity { value, unit }
    }

    /// Parses a plain decimal value ("12.5") and a unit code ("DZN", or SAP "ST").
    pub fn parse(field: &str, value: &str, unit: &str) -> Result<Quantity, ParseError> {
        Ok(Quantity { value: parse_decimal(field, value)?, unit: Uom::parse(field, unit)? })
    }

    /// Parses `"<decimal> <code>"` with exactly one space, e.g. "144 EA". Words ("one hundred"),
    /// unknown units ("100 units") and a missing unit ("100") are errors.
    pub fn parse_text(field: &str, text: &str) -> Result<Quantity, ParseError> {
        let Some((value, unit)) = text.split_once(' ') else {
            let reason = if parse_decimal(field, text).is_ok() {
                format!("has no unit of measure ({QUANTITY_FORMS})")
            } else {
                format!("is not a quantity ({QUANTITY_FORMS})")
            };
            return Err(ParseError::new(field, text, reason));
        };
        let value = parse_decimal(field, value).map_err(|_| {
            ParseError::new(field, text, format!("is not a quantity: {value:?} is not a number ({QUANTITY_FORMS})"))
        })?;
        let unit = Uom::parse(field, unit).map_err(|_| {
            ParseError::new(field, text, format!("has an unknown unit of measure {unit:?} ({UOM_FORMS})"))
        })?;
        Ok(Quantity { value, unit })
    }

    /// Reads a quantity from JSON: `{"value":"12","unit":"DZN"}` (the value may also be a JSON
    /// number when it can be read exactly) or the string `"12 DZN"`.
    pub fn from_json(field: &str, json: &serde_json::Value) -> Result<Quantity, ParseError> {
        use serde_json::Value;
        let shown = || json.to_string();
        match json {
            Value::String(text) => Quantity::parse_text(field, text),
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|k| *k != "value" && *k != "unit") {
                    return Err(ParseError::new(
                        field,
                        &shown(),
                        format!("has unexpected key `{key}` ({QUANTITY_FORMS})"),
                    ));
                }
                let unit = match map.get("unit") {
                    Some(Value::String(code)) => Uom::parse(field, code)?,
                    Some(_) => {
                        return Err(ParseError::new(
                            field,
                            &shown(),
                            format!("has a unit that is not a string ({QUANTITY_FORMS})"),
                        ))
                    }
                    None => {
                        return Err(ParseError::new(
                            field,
                            &shown(),
                            format!("has no unit of measure ({QUANTITY_FORMS})"),
                        ))
                    }
                };
                let value = match map.get("value") {
                    Some(Value::String(text)) => parse_decimal(field, text)?,
                    Some(Value::Number(number)) => {
                        decimal_from_json_number(field, number, "send quantities as strings")?
                    }
                    Some(_) => {
                        return Err(ParseError::new(
                            field,
                            &shown(),
                            format!("has a value that is neither a string nor a number ({QUANTITY_FORMS})"),
                        ))
                    }
                    None => return Err(ParseError::new(field, &shown(), format!("has no value ({QUANTITY_FORMS})"))),
                };
                Ok(Quantity { value, unit })
            }
            Value::Number(_) => Err(ParseError::new(
                field,
                &shown(),
                format!("is a bare number without a unit of measure ({QUANTITY_FORMS})"),
            )),
            _ => Err(ParseError::new(field, &shown(), format!("is not a quantity ({QUANTITY_FORMS})"))),
        }
    }

    /// Converts to `to` exactly (12 DZN = 144 EA, 1 LBR = 0.45359237 KGM).
    ///
    /// Errors rather than rounds: across dimensions, from or to packaging units (their size
    /// depends on the item; use [`Quantity::convert_with`]), and when the result has no exact
    /// decimal form (13 EA is not a whole number of a finite-decimal count of DZN).
    pub fn convert_to(&self, to: Uom) -> Result<Quantity, ConversionError> {
        self.convert_impl(to, None)
    }

    /// Like [`Quantity::convert_to`], with per-item sizes for packaging units (1 CT = 24 PCE).
    pub fn convert_with(&self, to: Uom, factors: &PackagingFactors) -> Result<Quantity, ConversionError> {
        self.convert_impl(to, Some(factors))
    }

    fn convert_impl(&self, to: Uom, factors: Option<&PackagingFactors>) -> Result<Quantity, ConversionError> {
        let from = self.unit;
        if from == to {
            return Ok(*self);
        }
        let overflow = || ConversionError::Overflow { value: self.value, from, to };
        let (from_dim, from_p, from_q) = base_ratio(from, factors, from, to, &overflow)?;
        let (to_dim, to_p, to_q) = base_ratio(to, factors, from, to, &overflow)?;
        if from_dim != to_dim {
            return Err(ConversionError::Incompatible { from, to });
        }
        // value * (from_p / from_q) / (to_p / to_q)
        let p = from_p.checked_mul(to_q).ok_or_else(overflow)?;
        let q = from_q.checked_mul(to_p).ok_or_else(overflow)?;
        let value = exact_ratio(self.value, p, q).map_err(|failure| match failure {
            RatioFailure::Inexact => ConversionError::Inexact { value: self.value, from, to },
            RatioFailure::Overflow => overflow(),
        })?;
        Ok(Quantity { value, unit: to })
    }
}

/// Dimension and size (p/q base units) of one `unit`, using `factors` for packaging units.
fn base_ratio(
    unit: Uom,
    factors: Option<&PackagingFactors>,
    from: Uom,
    to: Uom,
    overflow: &dyn Fn() -> ConversionError,
) -> Result<(Dimension, u128, u128), ConversionError> {
    if let Some((p, q)) = unit.def().ratio {
        return Ok((unit.dimension(), p, q));
    }
    let Some((per_unit, base)) = factors.and_then(|f| f.get(unit)) else {
        return Err(ConversionError::NoPackagingFactor { from, to, unit });
    };
    let Some((base_p, base_q)) = base.def().ratio else {
        // insert() refuses packaging bases, so this is unreachable in practice.
        return Err(ConversionError::NoPackagingFactor { from, to, unit });
    };
    // per_unit = mantissa / 10^scale, and insert() made it positive.
    let mantissa = u128::try_from(per_unit.mantissa()).map_err(|_| overflow())?;
    let p = mantissa.checked_mul(base_p).ok_or_else(overflow)?;
    let q = 10u128.checked_pow(per_unit.scale()).and_then(|ten| ten.checked_mul(base_q)).ok_or_else(overflow)?;
    Ok((base.dimension(), p, q))
}

/// Why [`exact_ratio`] has no answer.
enum RatioFailure {
    Inexact,
    Overflow,
}

/// The largest scale a `Decimal` holds.
const MAX_SCALE: u32 = 28;

/// Computes `value * p / q` exactly, on integers: a decimal is mantissa / 10^scale, so the result
/// is (mantissa * p) / (q * 10^scale); it has a finite decimal form exactly when the reduced
/// denominator has no prime factors but 2 and 5. Decimal's own division would round silently.
fn exact_ratio(value: Decimal, p: u128, q: u128) -> Result<Decimal, RatioFailure> {
    if q == 0 {
        return Err(RatioFailure::Overflow);
    }
    let p = i128::try_from(p).map_err(|_| RatioFailure::Overflow)?;
    let numerator = value.mantissa().checked_mul(p).ok_or(RatioFailure::Overflow)?;
    let denominator =
        10u128.checked_pow(value.scale()).and_then(|ten| ten.checked_mul(q)).ok_or(RatioFailure::Overflow)?;

    let divisor = gcd(numerator.unsigned_abs(), denominator);
    let denominator = denominator / divisor;
    let divisor = i128::try_from(divisor).map_err(|_| RatioFailure::Overflow)?;
    let numerator = numerator / divisor;

    let mut rest = denominator;
    let mut twos = 0u32;
    let mut fives = 0u32;
    while rest % 2 == 0 {
        rest /= 2;
        twos += 1;
    }
    while rest % 5 == 0 {
        rest /= 5;
        fives += 1;
    }
    if rest != 1 {
        return Err(RatioFailure::Inexact);
    }
    let mut scale = twos.max(fives);
    if scale > MAX_SCALE {
        return Err(RatioFailure::Inexact);
    }
    // denominator divides 10^scale, so this multiplication makes the division exact.
    let widen = 10u128.checked_pow(scale).map(|ten| ten / denominator).ok_or(RatioFailure::Overflow)?;
    let widen = i128::try_from(widen).map_err(|_| RatioFailure::Overflow)?;
    let mut mantissa = numerator.checked_mul(widen).ok_or(RatioFailure::Overflow)?;
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| RatioFailure::Overflow)
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

impl fmt::Display for Quantity {
    /// "144 EA": the value as held (scale kept) and the Rec 20 code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, self.unit.code())
    }
}

impl Serialize for Quantity {
    /// `{"value":"144","unit":"PCE"}`: the value is a string so no JSON reader floats it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Quantity", 2)?;
        s.serialize_field("value", &self.value.to_string())?;
        s.serialize_field("unit", self.unit.code())?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Quantity, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Quantity::from_json("quantity", &value).map_err(D::Error::custom)
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

    fn q(value: &str, unit: Uom) -> Quantity {
        Quantity::new(dec(value), unit)
    }

    #[test]
    fn table_has_one_row_per_variant() {
        let all: Vec<Uom> = Uom::all().collect();
        assert_eq!(all.len(), 21);
        for (i, u) in all.iter().enumerate() {
            assert_eq!(u.def().uom, *u);
            assert!(!all[i + 1..].contains(u));
            assert_eq!(Uom::parse("u", u.code()).unwrap(), *u);
        }
        // No SAP alias shadows a Rec 20 code.
        for (sap, _) in SAP_CODES {
            assert!(UNITS.iter().all(|d| d.code != *sap), "{sap}");
        }
    }

    #[test]
    fn rec20_codes_parse() {
        for code in [
            "C62", "EA", "PCE", "DZN", "GRO", "BX", "CT", "PK", "PR", "SET", "KGM", "GRM", "TNE", "LBR", "LTR", "MLT",
            "MTR", "CMT", "MMT", "MTK", "MTQ",
        ] {
            assert_eq!(Uom::parse("unit", code).unwrap().code(), code);
        }
    }

    #[test]
    fn sap_codes_map_to_rec20() {
        for (sap, rec20) in [
            ("ST", Uom::PCE),
            ("PC", Uom::PCE),
            ("KG", Uom::KGM),
            ("G", Uom::GRM),
            ("L", Uom::LTR),
            ("M", Uom::MTR),
            ("CM", Uom::CMT),
            ("MM", Uom::MMT),
            ("PAK", Uom::PK),
            ("KAR", Uom::CT),
            ("BOX", Uom::BX),
            ("DZ", Uom::DZN),
            ("TO", Uom::TNE),
            ("LB", Uom::LBR),
        ] {
            let u = Uom::parse("MEINS", sap).unwrap();
            assert_eq!(u, rec20, "{sap}");
        }
        assert_eq!(Uom::parse("MEINS", "ST").unwrap().code(), "PCE");
        assert_eq!(Uom::parse("MEINS", "KG").unwrap().code(), "KGM");
    }

    #[test]
    fn unknown_units_are_errors() {
        for bad in ["units", "pcs?", "pcs", "", " EA", "EA ", "dozen", "Kg", "ea"] {
            let err = Uom::parse("unit", bad).unwrap_err();
            assert_eq!(err.field, "unit");
            assert_eq!(err.value, bad);
        }
        let err = Uom::parse("unit", "kg").unwrap_err();
        assert!(err.reason.contains("\"KG\""), "{err}");
        let err = Uom::parse("unit", "units").unwrap_err();
        assert!(err.reason.contains("Rec 20"), "{err}");
    }

    #[test]
    fn dimensions_and_factors() {
        assert_eq!(Uom::EA.dimension(), Dimension::Count);
        assert_eq!(Uom::LBR.dimension(), Dimension::Mass);
        assert_eq!(Uom::MTQ.dimension(), Dimension::Volume);
        assert_eq!(Uom::CMT.dimension(), Dimension::Length);
        assert_eq!(Uom::MTK.dimension(), Dimension::Area);
        assert_eq!(Uom::CT.dimension(), Dimension::Packaging);
        assert!(Uom::SET.is_packaging());
        assert!(!Uom::PR.is_packaging());
        assert_eq!(Uom::DZN.factor(), Some(dec("12")));
        assert_eq!(Uom::GRO.factor(), Some(dec("144")));
        assert_eq!(Uom::PR.factor(), Some(dec("2")));
        assert_eq!(Uom::GRM.factor(), Some(dec("0.001")));
        assert_eq!(Uom::LBR.factor(), Some(dec("0.45359237")));
        assert_eq!(Uom::BX.factor(), None);
    }

    #[test]
    fn twelve_dozen_is_144_each_exactly() {
        let r = q("12", Uom::DZN).convert_to(Uom::EA).unwrap();
        assert_eq!(r.value, dec("144"));
        assert_eq!(r.value.scale(), 0);
        assert_eq!(r.unit, Uom::EA);
        assert_eq!(r.to_string(), "144 EA");
        assert_eq!(q("144", Uom::EA).convert_to(Uom::DZN).unwrap().value, dec("12"));
        assert_eq!(q("1", Uom::GRO).convert_to(Uom::DZN).unwrap().value, dec("12"));
        assert_eq!(q("3", Uom::PR).convert_to(Uom::PCE).unwrap().value, dec("6"));
        assert_eq!(q("5", Uom::C62).convert_to(Uom::PCE).unwrap().value, dec("5"));
    }

    #[test]
    fn pound_is_exact() {
        assert_eq!(q("1", Uom::LBR).convert_to(Uom::KGM).unwrap().value, dec("0.45359237"));
        assert_eq!(q("1", Uom::LBR).convert_to(Uom::GRM).unwrap().value, dec("453.59237"));
        assert_eq!(q("0.45359237", Uom::KGM).convert_to(Uom::LBR).unwrap().value, dec("1"));
        // 1 kg in pounds has no finite decimal form: refused, not rounded.
        assert!(matches!(q("1", Uom::KGM).convert_to(Uom::LBR), Err(ConversionError::Inexact { .. })));
    }

    #[test]
    fn metric_conversions() {
        assert_eq!(q("1.5", Uom::KGM).convert_to(Uom::GRM).unwrap().value, dec("1500"));
        assert_eq!(q("250", Uom::GRM).convert_to(Uom::KGM).unwrap().value, dec("0.25"));
        assert_eq!(q("2", Uom::TNE).convert_to(Uom::KGM).unwrap().value, dec("2000"));
        assert_eq!(q("1", Uom::MTQ).convert_to(Uom::MLT).unwrap().value, dec("1000000"));
        assert_eq!(q("12.5", Uom::CMT).convert_to(Uom::MMT).unwrap().value, dec("125"));
        assert_eq!(q("-3", Uom::MTR).convert_to(Uom::CMT).unwrap().value, dec("-300"));
    }

    #[test]
    fn inexact_and_incompatible_conversions_are_errors() {
        let err = q("13", Uom::EA).convert_to(Uom::DZN).unwrap_err();
        assert!(matches!(err, ConversionError::Inexact { .. }));
        assert!(err.to_string().contains("13 EA"), "{err}");
        let err = q("1", Uom::KGM).convert_to(Uom::PCE).unwrap_err();
        assert_eq!(err, ConversionError::Incompatible { from: Uom::KGM, to: Uom::PCE });
        assert!(err.to_string().contains("mass and count"), "{err}");
        assert!(q("1", Uom::MTR).convert_to(Uom::MTK).is_err());
        assert!(matches!(
            Quantity::new(Decimal::MAX, Uom::TNE).convert_to(Uom::GRM),
            Err(ConversionError::Overflow { .. })
        ));
    }

    #[test]
    fn packaging_without_factor_is_an_error() {
        let err = q("2", Uom::CT).convert_to(Uom::PCE).unwrap_err();
        assert_eq!(err, ConversionError::NoPackagingFactor { from: Uom::CT, to: Uom::PCE, unit: Uom::CT });
        assert!(err.to_string().contains("no fixed size"), "{err}");
        assert!(q("24", Uom::PCE).convert_to(Uom::CT).is_err());
        assert!(q("1", Uom::BX).convert_with(Uom::PCE, &PackagingFactors::new()).is_err());
        // The same unit is always fine.
        assert_eq!(q("2", Uom::CT).convert_to(Uom::CT).unwrap(), q("2", Uom::CT));
    }

    #[test]
    fn packaging_with_factor() {
        let factors = PackagingFactors::new()
            .with(Uom::CT, dec("24"), Uom::PCE)
            .unwrap()
            .with(Uom::BX, dec("6"), Uom::EA)
            .unwrap()
            .with(Uom::PK, dec("2.5"), Uom::KGM)
            .unwrap();
        let f = &factors;
        assert_eq!(q("2", Uom::CT).convert_with(Uom::EA, f).unwrap().value, dec("48"));
        assert_eq!(q("2", Uom::CT).convert_with(Uom::DZN, f).unwrap().value, dec("4"));
        assert_eq!(q("48", Uom::PCE).convert_with(Uom::CT, f).unwrap().value, dec("2"));
        assert_eq!(q("1", Uom::CT).convert_with(Uom::BX, f).unwrap().value, dec("4"));
        assert_eq!(q("4", Uom::PK).convert_with(Uom::GRM, f).unwrap().value, dec("10000"));
        assert!(matches!(q("25", Uom::PCE).convert_with(Uom::CT, f), Err(ConversionError::Inexact { .. })));
        assert!(matches!(q("1", Uom::CT).convert_with(Uom::KGM, f), Err(ConversionError::Incompatible { .. })));
        assert!(q("1", Uom::SET).convert_with(Uom::PCE, f).is_err());
    }

    #[test]
    fn invalid_packaging_factors() {
        let mut f = PackagingFactors::new();
        assert!(f.insert(Uom::PCE, dec("24"), Uom::EA).is_err());
        assert!(f.insert(Uom::CT, dec("2"), Uom::BX).is_err());
        assert!(f.insert(Uom::CT, dec("0"), Uom::PCE).is_err());
        assert!(f.insert(Uom::CT, dec("-24"), Uom::PCE).is_err());
        assert_eq!(f.get(Uom::CT), None);
    }

    #[test]
    fn parse_and_parse_text() {
        assert_eq!(Quantity::parse("qty", "12", "DZN").unwrap(), q("12", Uom::DZN));
        assert_eq!(Quantity::parse("qty", "1200", "ST").unwrap(), q("1200", Uom::PCE));
        assert_eq!(Quantity::parse_text("qty", "144 EA").unwrap(), q("144", Uom::EA));
        assert_eq!(Quantity::parse_text("qty", "-2.5 KG").unwrap(), q("-2.5", Uom::KGM));
        assert!(Quantity::parse("qty", "1,000", "EA").is_err());
        assert!(Quantity::parse("qty", "12", "units").is_err());
    }

    #[test]
    fn ambiguous_quantities_are_rejected() {
        let err = Quantity::parse_text("qty", "one hundred").unwrap_err();
        assert_eq!(err.field, "qty");
        assert_eq!(err.value, "one hundred");
        assert!(err.reason.contains("not a number"), "{err}");

        let err = Quantity::parse_text("qty", "100 units").unwrap_err();
        assert_eq!(err.value, "100 units");
        assert!(err.reason.contains("unknown unit of measure \"units\""), "{err}");

        let err = Quantity::parse_text("qty", "100").unwrap_err();
        assert_eq!(err.value, "100");
        assert!(err.reason.contains("no unit of measure"), "{err}");

        for bad in ["", "100  EA", "EA 100", "100 EA extra", "1,000 EA", "100 pcs?", "100EA", "hundred"] {
            let err = Quantity::parse_text("qty", bad).unwrap_err();
            assert_eq!(err.value, bad);
        }
    }

    #[test]
    fn from_json_forms() {
        assert_eq!(Quantity::from_json("q", &json!({"value": "12", "unit": "DZN"})).unwrap(), q("12", Uom::DZN));
        assert_eq!(Quantity::from_json("q", &json!({"value": 12, "unit": "DZN"})).unwrap(), q("12", Uom::DZN));
        assert_eq!(Quantity::from_json("q", &json!({"value": 37.5, "unit": "KG"})).unwrap(), q("37.5", Uom::KGM));
        assert_eq!(Quantity::from_json("q", &json!("144 EA")).unwrap(), q("144", Uom::EA));
        for bad in [
            json!(100),
            json!("100"),
            json!("100 units"),
            json!({"value": "12"}),
            json!({"unit": "EA"}),
            json!({"value": "12", "unit": "EA", "note": "x"}),
            // More digits than an f64 holds: the reader has already rounded it.
            serde_json::from_str(r#"{"value": 0.1234567890123456789, "unit": "EA"}"#).unwrap(),
            json!({"value": true, "unit": "EA"}),
            json!({"value": "12", "unit": 1}),
            json!(null),
        ] {
            let err = Quantity::from_json("stock", &bad).unwrap_err();
            assert_eq!(err.field, "stock", "{bad}");
        }
    }

    #[test]
    fn display_and_serde() {
        let x = q("144", Uom::PCE);
        assert_eq!(x.to_string(), "144 PCE");
        let text = serde_json::to_string(&x).unwrap();
        assert_eq!(text, r#"{"value":"144","unit":"PCE"}"#);
        assert_eq!(serde_json::from_str::<Quantity>(&text).unwrap(), x);
        assert_eq!(serde_json::from_str::<Quantity>(r#"{"value":"1200","unit":"ST"}"#).unwrap(), q("1200", Uom::PCE));
        assert!(serde_json::from_str::<Quantity>(r#"{"value":"1","unit":"units"}"#).is_err());
        assert_eq!(serde_json::to_string(&Uom::KGM).unwrap(), "\"KGM\"");
    }
}
