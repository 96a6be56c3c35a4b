//! The parsers against real vendor payloads in ../shared/fixtures (read in place, never copied).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use dingbridge_model::{parse_decimal, Decimal, Money, Quantity, Uom, ZonedTime};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn read_json(relative: &str) -> Value {
    let path = fixtures_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (key, string) pair in a JSON document, depth first.
fn strings(value: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((key.to_string(), s.clone())),
        Value::Array(items) => items.iter().for_each(|v| strings(v, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| strings(v, k, out)),
        _ => {}
    }
}

fn all_strings(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    strings(value, "", &mut out);
    out
}

fn utc(s: &str) -> ZonedTime {
    ZonedTime(s.parse().unwrap())
}

fn is_plain_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    match body.split_once('.') {
        Some((i, f)) => {
            !i.is_empty()
                && !f.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[test]
fn sap_purchase_order_dates_and_decimals() {
    let doc = read_json("sap/purchaseorder_single_expanded.v2.json");
    let d = &doc["d"];

    let mut dates = 0;
    let mut decimals = 0;
    for (key, s) in all_strings(&doc) {
        if s.starts_with("/Date(") {
            ZonedTime::parse(&key, &s).unwrap_or_else(|e| panic!("{e}"));
            dates += 1;
        }
        if is_plain_decimal(&s) {
            let value = parse_decimal(&key, &s).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(value, Decimal::from_str(&s).unwrap());
            assert_eq!(value.to_string(), s, "scale kept for {key}");
            decimals += 1;
        }
    }
    assert!(dates >= 3, "found {dates} dates");
    assert!(decimals >= 8, "found {decimals} decimals");

    let created = ZonedTime::parse("CreationDate", d["CreationDate"].as_str().unwrap()).unwrap();
    assert_eq!(created, utc("2024-03-15T00:00:00Z"));
    assert_eq!(created.to_hk_string(), "2024-03-15 08:00:00 HKT");

    let changed = ZonedTime::parse("LastChangeDateTime", d["LastChangeDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(changed, utc("2024-03-15T02:31:07Z"));
    // The entity's etag carries the same instant as an ISO string: both forms must agree.
    let etag = d["__metadata"]["etag"].as_str().unwrap();
    let iso = etag.split('\'').nth(1).unwrap().replace("%3A", ":");
    assert_eq!(ZonedTime::parse("etag", &iso).unwrap(), changed);

    let rate = parse_decimal("ExchangeRate", d["ExchangeRate"].as_str().unwrap()).unwrap();
    assert_eq!(rate, Decimal::ONE);
    assert_eq!(rate.scale(), 5);

    let items = d["to_PurchaseOrderItem"]["results"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let qty = |item: &Value| {
        Quantity::parse(
            "OrderQuantity",
            item["OrderQuantity"].as_str().unwrap(),
            item["PurchaseOrderQuantityUnit"].as_str().unwrap(),
        )
        .unwrap()
    };
    let price = |item: &Value| {
        Money::parse(
            "NetPriceAmount",
            item["NetPriceAmount"].as_str().unwrap(),
            item["DocumentCurrency"].as_str().unwrap(),
        )
        .unwrap()
    };

    let bolts = qty(&items[0]);
    assert_eq!(bolts.unit, Uom::PCE, "SAP PC is piece");
    assert_eq!(bolts.to_string(), "1200 PCE");
    assert_eq!(bolts.convert_to(Uom::DZN).unwrap().value, Decimal::from(100));
    assert_eq!(price(&items[0]).to_string(), "HKD 0.85");

    let steel = qty(&items[1]);
    assert_eq!(steel.unit, Uom::KGM, "SAP KG is kilogram");
    assert_eq!(steel.to_string(), "37.500 KGM");
    assert_eq!(steel.convert_to(Uom::GRM).unwrap().value, Decimal::from(37_500));
    assert_eq!(price(&items[1]).to_string(), "HKD 18.40");
}

#[test]
fn salesforce_opportunity_timestamps_and_amount() {
    let doc = read_json("salesforce/rest/opportunity_get.json");
    let mut parsed = 0;
    for key in [
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "LastStageChangeDate",
        "LastViewedDate",
        "LastReferencedDate",
    ] {
        let text = doc[key].as_str().unwrap();
        assert!(text.ends_with(".000+0000"), "{key}: {text}");
        ZonedTime::parse(key, text).unwrap_or_else(|e| panic!("{e}"));
        parsed += 1;
    }
    assert_eq!(parsed, 6);

    let created = ZonedTime::parse("CreatedDate", doc["CreatedDate"].as_str().unwrap()).unwrap();
    assert_eq!(created, utc("2025-06-02T03:15:27Z"));
    assert_eq!(created.to_hk_string(), "2025-06-02 11:15:27 HKT");
    assert_eq!(created.to_rfc3339(), "2025-06-02T11:15:27+08:00");

    // A date-only field is not an instant and must not be read as one.
    let close = doc["CloseDate"].as_str().unwrap();
    assert!(ZonedTime::parse("CloseDate", close).is_err());

    // Salesforce sends currency fields as JSON numbers; 1250000.0 is read exactly.
    let amount =
        Money::from_json("Amount", &serde_json::json!({"amount": doc["Amount"], "currency": doc["CurrencyIsoCode"]}))
            .unwrap();
    assert_eq!(amount.to_string(), "HKD 1,250,000.00");
}

/// All JSON files under `dir`, recursively.
fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// Every OData date and every ISO timestamp with an offset in every vendor fixture parses.
#[test]
fn every_fixture_timestamp_parses() {
    let mut files = Vec::new();
    json_files(&fixtures_dir(), &mut files);
    assert!(files.len() > 20, "fixtures not found at {:?}", fixtures_dir());

    let mut odata = 0;
    let mut iso = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for (key, s) in all_strings(&doc) {
            let b = s.as_bytes();
            let iso_with_offset = b.len() >= 20
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[..4].iter().all(u8::is_ascii_digit)
                && (s.ends_with('Z') || s[19..].contains(['+', '-']));
            if s.starts_with("/Date(") {
                ZonedTime::parse(&key, &s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                odata += 1;
            } else if iso_with_offset {
                ZonedTime::parse(&key, &s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                iso += 1;
            }
        }
    }
    assert!(odata >= 20, "found {odata} OData dates");
    assert!(iso >= 40, "found {iso} ISO timestamps");
}
