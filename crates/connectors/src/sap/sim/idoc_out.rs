//! IDoc-XML the simulator pushes to a configured URL, as an ECC XML-HTTP port would: ORDERS05
//! for a purchase order (ISO units) and DESADV/DELVRY07 for an outbound delivery (SAP units,
//! E1EDT13 `006` goods issue with the actual ISDD/ISDZ once goods issue is complete, `007`
//! delivery).

use crate::sap::uom::UomTable;
use serde_json::Value;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn s<'a>(row: &'a Value, field: &str) -> &'a str {
    row.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// `YYYYMMDD` of a stored `/Date(ms)/` (UTC calendar date).
fn idoc_date(text: &str) -> String {
    sim::odata::date_millis(text)
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y%m%d").to_string())
        .unwrap_or_else(|| "00000000".to_owned())
}

/// `HHMMSS` of an `Edm.Time` such as `PT15H40M00S`; `000000` when unreadable.
fn idoc_time(text: &str) -> String {
    crate::sap::wire::parse_edm_time("time", text)
        .map(|t| t.strftime("%H%M%S").to_string())
        .unwrap_or_else(|_| "000000".to_owned())
}

fn control(docnum: u64, idoctyp: &str, mestyp: &str, now: jiff::Timestamp) -> String {
    let hk = now.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
    format!(
        "<EDI_DC40 SEGMENT=\"1\"><TABNAM>EDI_DC40</TABNAM><MANDT>100</MANDT><DOCNUM>{docnum:016}</DOCNUM>\
<DOCREL>740</DOCREL><STATUS>30</STATUS><DIRECT>1</DIRECT><OUTMOD>2</OUTMOD><IDOCTYP>{idoctyp}</IDOCTYP>\
<MESTYP>{mestyp}</MESTYP><SNDPOR>SAPSIM</SNDPOR><SNDPRT>LS</SNDPRT><SNDPRN>SIMCLNT100</SNDPRN>\
<RCVPOR>DINGBRIDGE</RCVPOR><RCVPRT>LS</RCVPRT><RCVPRN>DINGBRIDGE</RCVPRN><CREDAT>{}</CREDAT>\
<CRETIM>{}</CRETIM></EDI_DC40>",
        hk.strftime("%Y%m%d"),
        hk.strftime("%H%M%S")
    )
}

/// ORDERS05 for `po` and its `items`.
pub fn orders05(docnum: u64, po: &Value, items: &[&Value], now: jiff::Timestamp) -> String {
    let uoms = UomTable::default();
    let currency = s(po, "DocumentCurrency");
    let mut body = control(docnum, "ORDERS05", "ORDERS", now);
    body.push_str(&format!(
        "<E1EDK01 SEGMENT=\"1\"><CURCY>{}</CURCY><BSART>{}</BSART><BELNR>{}</BELNR></E1EDK01>",
        esc(currency),
        esc(s(po, "PurchaseOrderType")),
        esc(s(po, "PurchaseOrder"))
    ));
    for (qualf, field) in [("014", "PurchasingOrganization"), ("009", "PurchasingGroup"), ("011", "CompanyCode")] {
        body.push_str(&format!(
            "<E1EDK14 SEGMENT=\"1\"><QUALF>{qualf}</QUALF><ORGID>{}</ORGID></E1EDK14>",
            esc(s(po, field))
        ));
    }
    body.push_str(&format!(
        "<E1EDK03 SEGMENT=\"1\"><IDDAT>012</IDDAT><DATUM>{}</DATUM></E1EDK03>",
        idoc_date(s(po, "PurchaseOrderDate"))
    ));
    body.push_str(&format!(
        "<E1EDKA1 SEGMENT=\"1\"><PARVW>LF</PARVW><PARTN>{:0>10}</PARTN></E1EDKA1>",
        esc(s(po, "Supplier"))
    ));
    let mut total = model::Decimal::ZERO;
    for item in items {
        let unit = s(item, "PurchaseOrderQuantityUnit");
        let iso = uoms.to_iso(unit).unwrap_or(unit);
        let qty: model::Decimal = s(item, "OrderQuantity").parse().unwrap_or_default();
        let price: model::Decimal = s(item, "NetPriceAmount").parse().unwrap_or_default();
        let per: model::Decimal = s(item, "NetPriceQuantity").parse().unwrap_or(model::Decimal::ONE);
        let net = if per.is_zero() { model::Decimal::ZERO } else { (qty * price / per).round_dp(2) };
        total += net;
        body.push_str(&format!(
            "<E1EDP01 SEGMENT=\"1\"><POSEX>{:0>5}</POSEX><ACTION>001</ACTION><MENGE>{qty}</MENGE><MENEE>{iso}</MENEE>\
<VPREI>{price}</VPREI><PEINH>{per}</PEINH><NETWR>{net:.2}</NETWR><WERKS>{}</WERKS><LGORT>{}</LGORT>\
<E1EDP20 SEGMENT=\"1\"><WMENG>{qty}</WMENG></E1EDP20>\
<E1EDP19 SEGMENT=\"1\"><QUALF>001</QUALF><IDTNR>{}</IDTNR><KTEXT>{}</KTEXT></E1EDP19></E1EDP01>",
            esc(s(item, "PurchaseOrderItem")),
            esc(s(item, "Plant")),
            esc(s(item, "StorageLocation")),
            esc(s(item, "Material")),
            esc(s(item, "PurchaseOrderItemText")),
        ));
    }
    body.push_str(&format!(
        "<E1EDS01 SEGMENT=\"1\"><SUMID>002</SUMID><SUMME>{total:.2}</SUMME><SUNIT>{}</SUNIT></E1EDS01>",
        esc(currency)
    ));
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ORDERS05><IDOC BEGIN=\"1\">{body}</IDOC></ORDERS05>")
}

/// Internal SAP code for a commercial one (DELVRY carries internal codes: piece is `ST`).
fn internal_unit(commercial: &str) -> &str {
    match commercial {
        "PC" => "ST",
        other => other,
    }
}

/// DESADV on DELVRY07 for `delivery` and its `items`.
pub fn desadv(docnum: u64, delivery: &Value, items: &[&Value], now: jiff::Timestamp) -> String {
    let mut body = control(docnum, "DELVRY07", "DESADV", now);
    body.push_str(&format!(
        "<E1EDL20 SEGMENT=\"1\"><VBELN>{:0>10}</VBELN><VSTEL>{}</VSTEL><VKORG>{}</VKORG><INCO1>{}</INCO1>\
<BTGEW>{}</BTGEW><NTGEW>{}</NTGEW><GEWEI>{}</GEWEI><ANZPK>{:0>5}</ANZPK><BOLNR>{}</BOLNR>",
        esc(s(delivery, "DeliveryDocument")),
        esc(s(delivery, "ShippingPoint")),
        esc(s(delivery, "SalesOrganization")),
        esc(s(delivery, "IncotermsClassification")),
        esc(s(delivery, "HeaderGrossWeight")),
        esc(s(delivery, "HeaderNetWeight")),
        esc(internal_unit(s(delivery, "HeaderWeightUnit"))),
        esc(s(delivery, "TotalNumberOfPackage")),
        esc(s(delivery, "BillOfLading")),
    ));
    // Goods issue: planned date, and once goods issue is complete the actual date/time, so a
    // receiver can tell when the status was reached.
    let actual = match (s(delivery, "OverallGoodsMovementStatus"), s(delivery, "ActualGoodsMovementDate")) {
        ("C", date) if !date.is_empty() => format!(
            "<ISDD>{}</ISDD><ISDZ>{}</ISDZ>",
            idoc_date(date),
            idoc_time(s(delivery, "ActualGoodsMovementTime"))
        ),
        _ => String::new(),
    };
    body.push_str(&format!(
        "<E1EDT13 SEGMENT=\"1\"><QUALF>006</QUALF><NTANF>{}</NTANF><NTANZ>000000</NTANZ>{actual}</E1EDT13>",
        idoc_date(s(delivery, "PlannedGoodsIssueDate"))
    ));
    body.push_str(&format!(
        "<E1EDT13 SEGMENT=\"1\"><QUALF>007</QUALF><NTANF>{}</NTANF><NTANZ>000000</NTANZ></E1EDT13>",
        idoc_date(s(delivery, "DeliveryDate"))
    ));
    body.push_str(&format!(
        "<E1ADRM1 SEGMENT=\"1\"><PARTNER_Q>WE</PARTNER_Q><PARTNER_ID>{:0>10}</PARTNER_ID><NAME1>{}</NAME1></E1ADRM1>",
        esc(s(delivery, "ShipToParty")),
        esc(s(delivery, "ShipToName"))
    ));
    for item in items {
        let batch = s(item, "Batch");
        let batch = if batch.is_empty() { String::new() } else { format!("<CHARG>{}</CHARG>", esc(batch)) };
        body.push_str(&format!(
            "<E1EDL24 SEGMENT=\"1\"><POSNR>{:0>6}</POSNR><MATNR>{}</MATNR><ARKTX>{}</ARKTX><WERKS>{}</WERKS>\
<LGORT>{}</LGORT>{batch}<LFIMG>{}</LFIMG><VRKME>{}</VRKME><LGMNG>{}</LGMNG><MEINS>{}</MEINS>\
<UMVKZ>{}</UMVKZ><UMVKN>{}</UMVKN><VGBEL>{:0>10}</VGBEL><VGPOS>{:0>6}</VGPOS></E1EDL24>",
            esc(s(item, "DeliveryDocumentItem")),
            esc(s(item, "Material")),
            esc(s(item, "DeliveryDocumentItemText")),
            esc(s(item, "Plant")),
            esc(s(item, "StorageLocation")),
            esc(s(item, "ActualDeliveryQuantity")),
            esc(internal_unit(s(item, "DeliveryQuantityUnit"))),
            esc(s(item, "ActualDeliveredQtyInBaseUnit")),
            esc(internal_unit(s(item, "BaseUnit"))),
            esc(s(item, "DeliveryToBaseQuantityNmrtr")),
            esc(s(item, "DeliveryToBaseQuantityDnmntr")),
            esc(s(item, "ReferenceSDDocument")),
            esc(s(item, "ReferenceSDDocumentItem")),
        ));
    }
    body.push_str("</E1EDL20>");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DELVRY07><IDOC BEGIN=\"1\">{body}</IDOC></DELVRY07>")
}
