//! Property tests: round trips and conversion laws, 1024 cases each.

use dingbridge_model::{Currency, Decimal, DecimalFormat, Money, Quantity, Uom, ZonedTime};
use jiff::Timestamp;
use proptest::prelude::*;

/// Currencies with their minor units, from the built-in table.
fn currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

/// Any amount the currency can hold: up to 24 significant digits, scale within minor units.
fn money() -> impl Strategy<Value = Money> {
    currency().prop_flat_map(|currency| {
        let max = 10i128.pow(24);
        (-max..max, 0..=currency.minor_units()).prop_map(move |(mantissa, scale)| Money {
            amount: Decimal::from_i128_with_scale(mantissa, scale),
            currency,
        })
    })
}

/// Decimals over the whole 96-bit mantissa and every scale.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    let max = (1i128 << 96) - 1;
    (-max..=max, 0u32..=28).prop_map(|(m, s)| Decimal::from_i128_with_scale(m, s))
}

fn format() -> impl Strategy<Value = DecimalFormat> {
    proptest::sample::select(vec![
        DecimalFormat::PLAIN,
        DecimalFormat::DOT_DECIMAL_COMMA_GROUPING,
        DecimalFormat::COMMA_DECIMAL_DOT_GROUPING,
        DecimalFormat { decimal_separator: '.', grouping_separator: Some('\'') },
        DecimalFormat { decimal_separator: ',', grouping_separator: Some(' ') },
        DecimalFormat { decimal_separator: ',', grouping_separator: None },
    ])
}

/// Units with a fixed factor, grouped by dimension.
const FIXED: &[&[Uom]] = &[
    &[Uom::C62, Uom::EA, Uom::PCE, Uom::DZN, Uom::GRO, Uom::PR],
    &[Uom::KGM, Uom::GRM, Uom::TNE, Uom::LBR],
    &[Uom::LTR, Uom::MLT, Uom::MTQ],
    &[Uom::MTR, Uom::CMT, Uom::MMT],
    &[Uom::MTK],
];

/// Three units of one dimension.
fn unit_triple() -> impl Strategy<Value = (Uom, Uom, Uom)> {
    (0..FIXED.len()).prop_flat_map(|d| {
        let units = FIXED[d].to_vec();
        (
            proptest::sample::select(units.clone()),
            proptest::sample::select(units.clone()),
            proptest::sample::select(units),
        )
    })
}

/// Quantities such as real stock figures: up to 15 digits, up to 6 decimals.
fn quantity_value() -> impl Strategy<Value = Decimal> {
    (-999_999_999_999_999i64..=999_999_999_999_999, 0u32..=6).prop_map(|(m, s)| Decimal::new(m, s))
}

/// Any instant jiff can represent, to the nanosecond.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.as_second() + 1..Timestamp::MAX.as_second(), 0i32..1_000_000_000)
        .prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn money_display_and_serde_round_trip(m in money()) {
        let json = serde_json::to_string(&m).unwrap();
        let back: Money = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, m);
        prop_assert_eq!(back.amount.scale(), m.currency.minor_units());

        let shown = m.to_string();
        let parsed = Money::parse_text("amount", &shown).unwrap();
        prop_assert_eq!(parsed, m);
        prop_assert_eq!(parsed.to_string(), shown);

        let plain = Money::parse("amount", &m.amount_string(), m.currency.code()).unwrap();
        prop_assert_eq!(plain, m);
        let from_value =
            Money::from_json("amount", &serde_json::to_value(m).unwrap()).unwrap();
        prop_assert_eq!(from_value, m);
    }

    #[test]
    fn money_refuses_extra_decimals(currency in currency(), m in 1i64..1_000_000_000, extra in 1u32..4) {
        // Last digit non-zero, so the amount really has minor_units + extra decimals.
        let mantissa = m * 10 + 7;
        let amount = Decimal::new(mantissa, currency.minor_units() + extra);
        let err = Money::parse("amount", &amount.to_string(), currency.code()).unwrap_err();
        prop_assert!(err.reason.contains(currency.code()));
    }

    #[test]
    fn decimal_format_round_trip(d in any_decimal(), f in format()) {
        let text = f.format(d);
        let back = f.parse_decimal("value", &text).unwrap();
        prop_assert_eq!(back, d);
        prop_assert_eq!(back.scale(), d.scale());
    }

    #[test]
    fn conversion_round_trips_and_composes(v in quantity_value(), (a, b, c) in unit_triple()) {
        let q = Quantity::new(v, a);
        let base = FIXED.iter().find(|units| units.contains(&a)).unwrap()[0];
        // To the base unit of count, metric units and the pound is always exact.
        let in_base = q.convert_to(base).unwrap();
        prop_assert_eq!(in_base.convert_to(a).unwrap().value, v);

        if let Ok(qb) = q.convert_to(b) {
            // a -> b -> a returns the original exactly.
            prop_assert_eq!(qb.convert_to(a).unwrap().value, v);
            if let Ok(qbc) = qb.convert_to(c) {
                // a -> b -> c equals a -> c.
                let qc = q.convert_to(c).unwrap();
                prop_assert_eq!(qbc.value, qc.value);
                prop_assert_eq!(qbc.unit, c);
            }
        }
    }

    #[test]
    fn dozen_to_each_is_times_twelve(n in -1_000_000_000i64..1_000_000_000) {
        let each = Quantity::new(Decimal::from(n), Uom::DZN).convert_to(Uom::EA).unwrap();
        prop_assert_eq!(each.value, Decimal::from(n * 12));
    }

    #[test]
    fn rfc3339_round_trip(ts in timestamp()) {
        let t = ZonedTime(ts);
        let text = t.to_rfc3339();
        prop_assert!(text.contains("+08:00"), "{}", text);
        prop_assert_eq!(ZonedTime::parse("t", &text).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        prop_assert_eq!(serde_json::from_str::<ZonedTime>(&json).unwrap(), t);
    }

    #[test]
    fn odata_date_round_trip(ms in -10_000_000_000_000i64..=10_000_000_000_000, offset in -1439i32..=1439) {
        let text = format!("/Date({ms})/");
        let t = ZonedTime::parse("d", &text).unwrap();
        prop_assert_eq!(t.as_millis(), ms);
        prop_assert_eq!(t.to_odata_date(), text);
        prop_assert_eq!(ZonedTime::from_millis("d", ms).unwrap(), t);
        // The minutes suffix never moves the instant.
        let sign = if offset < 0 { '-' } else { '+' };
        let with_offset = format!("/Date({ms}{sign}{:04})/", offset.abs());
        prop_assert_eq!(ZonedTime::parse("d", &with_offset).unwrap(), t);
    }
}
