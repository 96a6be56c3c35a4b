//! Seed data of the simulated account: a Hong Kong trading company (subsidiary "Dingbridge Demo
//! (HK) Ltd", HKD, warehouse "HK - Kwai Chung DC"), consistent with the NetSuite fixtures
//! (purchase order 4711 / PO000812 is the fixture record, 4709 / PO000810 the approved one of
//! the SuiteQL page). For the shipment scenario: sales order 5140 / SO-001205 of customer "HK
//! Trading Ltd" with item fulfillment 5141 / IF000878 created from it, picked (shipStatus `A`)
//! with a tracked package; requisitions 4690 and 4691 wait for approval.

use crate::netsuite::client::RecordType;
use serde_json::{json, Value};

/// Account id (realm form).
pub const ACCOUNT: &str = "1234567";
/// TBA credentials (the fake ones of `tba_signature_vectors.json`).
pub const CONSUMER_KEY: &str = "ef40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4";
pub const CONSUMER_SECRET: &str = "d26ad321a4b2f23b0741c8d38392ce01c3e23e109df6c96eac6d099e9ab9a8b5";
pub const TOKEN_ID: &str = "2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc";
pub const TOKEN_SECRET: &str = "c29a677df7d5439a458c063654187e3d678d73aca8e3c9d8fea1478a0f0a6f5b";
/// OAuth 2.0 client credentials: the integration's client id and the certificate id (`kid`).
pub const CLIENT_ID: &str = "b5c7d0f1e2a34c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
pub const CERTIFICATE_ID: &str = "c.1234567.2024-03-15_02-30-00";
/// Shared secret the simulated user-event script signs webhook posts with.
pub const WEBHOOK_SECRET: &str = "whsec-netsuite-sim";

fn reference(id: &str, name: &str) -> Value {
    json!({"id": id, "refName": name})
}

fn po_line(line: u64, item: (&str, &str), quantity: f64, units: &str, rate: f64, amount: f64) -> Value {
    // Whole quantities are JSON integers on the wire (`"quantity": 1200`), like the fixture.
    let quantity = if quantity.fract() == 0.0 && quantity >= 0.0 { json!(quantity as u64) } else { json!(quantity) };
    json!({
        "line": line,
        "item": reference(item.0, item.1),
        "itemType": reference("InvtPart", "InvtPart"),
        "description": item.1,
        "quantity": quantity,
        "units": units,
        "rate": rate,
        "amount": amount,
        "quantityReceived": 0,
        "quantityBilled": 0,
        "isClosed": false,
        "isOpen": true,
        "location": reference("3", "HK - Kwai Chung DC"),
        "expectedReceiptDate": "2024-04-02"
    })
}

const BOLT: (&str, &str) = ("501", "TG-1001 Stainless bolt M8x40");
const RESIN: (&str, &str) = ("502", "RM-2040 PP resin (kg)");
/// The customer of sales order 5140 / SO-001205 and its fulfillment 5141 (S5 shipment scenario).
pub const HK_TRADING: (&str, &str) = ("2230", "HK Trading Ltd");

#[allow(clippy::too_many_arguments)]
fn purchase_order(
    id: &str,
    tran_id: &str,
    modified: &str,
    vendor: (&str, &str),
    approval: (&str, &str),
    order_status: &str,
    total: f64,
    lines: Vec<Value>,
) -> Value {
    let status = if order_status == "A" { "Pending Supervisor Approval" } else { "Pending Receipt" };
    json!({
        "id": id,
        "tranId": tran_id,
        "tranDate": &modified[..10],
        "createdDate": modified,
        "lastModifiedDate": modified,
        "entity": reference(vendor.0, vendor.1),
        "subsidiary": reference("2", "Dingbridge Demo (HK) Ltd"),
        "currency": reference("5", "Hong Kong Dollar"),
        "exchangeRate": 1.0,
        "location": reference("3", "HK - Kwai Chung DC"),
        "department": reference("7", "Operations"),
        "employee": reference("159", "Chan Tai Man"),
        "approvalStatus": reference(approval.0, approval.1),
        "nextApprover": reference("201", "Lee Po Yee"),
        "status": reference(status, status),
        "orderStatus": reference(order_status, order_status),
        "memo": "Restock Q2",
        "total": total,
        "subtotal": total,
        "taxTotal": 0.0,
        "customForm": reference("98", "Standard Purchase Order"),
        "item": {"items": lines},
        "expense": {"items": []}
    })
}

/// All seeded records, expanded form (sublists as `{"items": [...]}`).
pub fn records() -> Vec<(RecordType, Value)> {
    let kowloon = ("1335", "Kowloon Bay Trading Ltd");
    let tsuen_wan = ("1340", "Tsuen Wan Plastics Co");
    let pending = ("1", "Pending Approval");
    let approved = ("2", "Approved");
    vec![
        (
            RecordType::PurchaseOrder,
            purchase_order(
                "4705",
                "PO000806",
                "2024-03-11T06:12:00Z",
                kowloon,
                approved,
                "B",
                4250.0,
                vec![po_line(1, BOLT, 5000.0, "1", 0.85, 4250.0)],
            ),
        ),
        (
            RecordType::PurchaseOrder,
            purchase_order(
                "4709",
                "PO000810",
                "2024-03-14T09:05:00Z",
                tsuen_wan,
                approved,
                "B",
                8800.0,
                vec![po_line(1, RESIN, 478.0, "3", 18.4, 8795.2), po_line(2, BOLT, 5.0, "1", 0.96, 4.8)],
            ),
        ),
        (
            RecordType::PurchaseOrder,
            purchase_order(
                "4711",
                "PO000812",
                "2024-03-15T02:31:00Z",
                kowloon,
                pending,
                "A",
                1710.0,
                vec![po_line(1, BOLT, 1200.0, "1", 0.85, 1020.0), po_line(2, RESIN, 37.5, "3", 18.4, 690.0)],
            ),
        ),
        (
            RecordType::PurchaseOrder,
            purchase_order(
                "4712",
                "PO000813",
                "2024-03-15T02:31:00Z",
                tsuen_wan,
                pending,
                "A",
                920.0,
                vec![po_line(1, RESIN, 50.0, "3", 18.4, 920.0)],
            ),
        ),
        (
            RecordType::PurchaseRequisition,
            json!({
                "id": "4690",
                "tranId": "PR000231",
                "tranDate": "2024-03-13",
                "lastModifiedDate": "2024-03-13T03:20:00Z",
                "entity": reference("159", "Chan Tai Man"),
                "approvalStatus": reference("1", "Pending Approval"),
                "nextApprover": reference("201", "Lee Po Yee"),
                "status": reference("Pending Supervisor Approval", "Pending Supervisor Approval"),
                "subsidiary": reference("2", "Dingbridge Demo (HK) Ltd"),
                "currency": reference("5", "Hong Kong Dollar"),
                "total": 2550.0,
                "item": {"items": [{"line": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 3000.0, "units": "1", "rate": 0.85, "amount": 2550.0}]},
                "expense": {"items": []}
            }),
        ),
        (
            RecordType::SalesOrder,
            json!({
                "id": "5120",
                "tranId": "SO001204",
                "tranDate": "2024-03-12",
                "lastModifiedDate": "2024-03-14T08:45:00Z",
                "entity": reference("2210", "Sheung Wan Hardware Ltd"),
                "status": reference("Pending Billing", "Pending Billing"),
                "orderStatus": reference("F", "F"),
                "shipDate": "2024-03-14",
                "currency": reference("5", "Hong Kong Dollar"),
                "total": 3600.0,
                "item": {"items": [{"line": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 3000.0, "units": "1", "rate": 1.2, "amount": 3600.0, "quantityFulfilled": 3000.0, "quantityBilled": 0.0}]}
            }),
        ),
        (
            RecordType::ItemFulfillment,
            json!({
                "id": "5130",
                "tranId": "IF000877",
                "tranDate": "2024-03-14",
                "lastModifiedDate": "2024-03-14T08:45:00Z",
                "createdFrom": reference("5120", "Sales Order #SO001204"),
                "shipStatus": reference("C", "Shipped"),
                "item": {"items": [{"line": 1, "orderLine": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 3000.0, "itemReceive": true}]},
                "package": {"items": [{"line": 1, "packageTrackingNumber": "SF1402938475HK", "packageWeight": 12.5}]}
            }),
        ),
        (
            RecordType::PurchaseRequisition,
            json!({
                "id": "4691",
                "tranId": "PR000232",
                "tranDate": "2024-03-15",
                "lastModifiedDate": "2024-03-15T03:05:00Z",
                "entity": reference("159", "Chan Tai Man"),
                "requester": reference("159", "Chan Tai Man"),
                "approvalStatus": reference("1", "Pending Approval"),
                "nextApprover": reference("201", "Lee Po Yee"),
                "status": reference("Pending Supervisor Approval", "Pending Supervisor Approval"),
                "subsidiary": reference("2", "Dingbridge Demo (HK) Ltd"),
                "currency": reference("5", "Hong Kong Dollar"),
                "memo": "Restock for HK Trading Ltd order SO-001205",
                "total": 1531.2,
                "item": {"items": [
                    {"line": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 600.0, "units": "1", "rate": 0.85, "amount": 510.0},
                    {"line": 2, "item": reference(RESIN.0, RESIN.1), "quantity": 55.5, "units": "3", "rate": 18.4, "amount": 1021.2}
                ]},
                "expense": {"items": []}
            }),
        ),
        (
            RecordType::SalesOrder,
            json!({
                "id": "5140",
                "tranId": "SO-001205",
                "tranDate": "2024-03-15",
                "lastModifiedDate": "2024-03-15T03:10:00Z",
                "entity": reference(HK_TRADING.0, HK_TRADING.1),
                "status": reference("Pending Fulfillment", "Pending Fulfillment"),
                "orderStatus": reference("B", "B"),
                "shipDate": "2024-03-18",
                "currency": reference("5", "Hong Kong Dollar"),
                "total": 1388.0,
                "item": {"items": [
                    {"line": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 240.0, "units": "1", "rate": 1.2, "amount": 288.0, "quantityFulfilled": 0.0, "quantityBilled": 0.0},
                    {"line": 2, "item": reference(RESIN.0, RESIN.1), "quantity": 50.0, "units": "3", "rate": 22.0, "amount": 1100.0, "quantityFulfilled": 0.0, "quantityBilled": 0.0}
                ]}
            }),
        ),
        (
            RecordType::ItemFulfillment,
            json!({
                "id": "5141",
                "tranId": "IF000878",
                "tranDate": "2024-03-15",
                "lastModifiedDate": "2024-03-15T03:20:00Z",
                "entity": reference(HK_TRADING.0, HK_TRADING.1),
                "createdFrom": reference("5140", "Sales Order #SO-001205"),
                "shipStatus": reference("A", "Picked"),
                "item": {"items": [
                    {"line": 1, "orderLine": 1, "item": reference(BOLT.0, BOLT.1), "quantity": 240.0, "units": "1", "location": reference("3", "HK - Kwai Chung DC"), "itemReceive": true},
                    {"line": 2, "orderLine": 2, "item": reference(RESIN.0, RESIN.1), "quantity": 50.0, "units": "3", "location": reference("3", "HK - Kwai Chung DC"), "itemReceive": true}
                ]},
                "package": {"items": [{"line": 1, "packageTrackingNumber": "SF1403015566HK", "packageWeight": 52.4, "packageDescr": "2 cartons"}]}
            }),
        ),
        (
            RecordType::InventoryItem,
            json!({
                "id": BOLT.0,
                "itemId": "TG-1001",
                "displayName": BOLT.1,
                "lastModifiedDate": "2024-03-10T01:00:00Z",
                "unitsType": reference("1", "Each"),
                "stockUnit": reference("1", "Each"),
                "purchaseUnit": reference("1", "Each"),
                "saleUnit": reference("1", "Each"),
                "locations": {"items": [{"location": reference("3", "HK - Kwai Chung DC"), "quantityOnHand": 8200.0, "quantityAvailable": 5200.0, "quantityOnOrder": 6200.0, "quantityCommitted": 3000.0}]}
            }),
        ),
        (
            RecordType::InventoryItem,
            json!({
                "id": RESIN.0,
                "itemId": "RM-2040",
                "displayName": RESIN.1,
                "lastModifiedDate": "2024-03-10T01:00:00Z",
                "unitsType": reference("2", "Weight"),
                "stockUnit": reference("3", "kg"),
                "purchaseUnit": reference("3", "kg"),
                "saleUnit": reference("3", "kg"),
                "locations": {"items": [{"location": reference("3", "HK - Kwai Chung DC"), "quantityOnHand": 412.5, "quantityAvailable": 412.5, "quantityOnOrder": 565.5, "quantityCommitted": 0.0}]}
            }),
        ),
    ]
}

/// First id handed out by creates.
pub const FIRST_NEW_ID: u64 = 6000;

/// The refName of an approval status id.
pub fn approval_name(id: &str) -> Option<&'static str> {
    match id {
        "1" => Some("Pending Approval"),
        "2" => Some("Approved"),
        "3" => Some("Rejected"),
        _ => None,
    }
}

/// Seeded employees (SuiteQL `FROM employee`), the people of the DingTalk simulator's seed with
/// the same emails and mobiles; `externalid` holds the HR staff number (the DingTalk job
/// number). Mobiles are written the ways NetSuite users type them. 201 Lee Po Yee is the next
/// approver of the seeded transactions; 190 Chow Siu Ming has left (inactive).
pub fn employees() -> Vec<Value> {
    // (id, entityid, first, last, email, mobile, externalid, inactive)
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, bool);
    let rows: [Row<'_>; 9] = [
        ("150", "Lee Wai Kit", "Wai Kit", "Lee", "wk.lee@harbour-trading.example.hk", "+852 9123 4567", "E0001", false),
        ("159", "Chan Tai Man", "Tai Man", "Chan", "tm.chan@example.com.hk", "98765432", "E1024", false),
        ("161", "Ho Siu Fan", "Siu Fan", "Ho", "sf.ho@harbour-trading.example.hk", "6234 5678", "E1031", false),
        (
            "170",
            "Cheung Mei Ling",
            "Mei Ling",
            "Cheung",
            "ml.cheung@harbour-trading.example.hk",
            "852-9345-6781",
            "E0002",
            false,
        ),
        (
            "171",
            "Lam Chi Keung",
            "Chi Keung",
            "Lam",
            "ck.lam@harbour-trading.example.hk",
            "(852) 5123 4568",
            "E2011",
            false,
        ),
        ("172", "Ng Hoi Yan", "Hoi Yan", "Ng", "hy.ng@harbour-trading.example.hk", "67891234", "E2017", false),
        ("190", "Chow Siu Ming", "Siu Ming", "Chow", "sm.chow@harbour-trading.example.hk", "59871234", "E3150", true),
        ("201", "Lee Po Yee", "Po Yee", "Lee", "py.lee@harbour-trading.example.hk", "", "", false),
        ("205", "Purchasing Approvals", "", "", "", "", "", false),
    ];
    rows.iter()
        .map(|(id, entity, first, last, email, mobile, external, inactive)| {
            let mut employee = json!({"id": id, "entityId": entity, "isInactive": inactive});
            // Empty fields are absent in NetSuite answers.
            for (field, value) in [
                ("firstName", first),
                ("lastName", last),
                ("email", email),
                ("mobilePhone", mobile),
                ("externalId", external),
            ] {
                if !value.is_empty() {
                    employee[field] = json!(value);
                }
            }
            employee
        })
        .collect()
}

/// The `status` label a transaction shows after an approval decision: purchase orders (they
/// have an `orderStatus`) go to B Pending Receipt / C Rejected by Supervisor, requisitions to
/// Pending Order / Rejected.
pub fn decided_status(is_order: bool, approval_id: &str) -> Option<(&'static str, Option<&'static str>)> {
    match (is_order, approval_id) {
        (true, "2") => Some(("Pending Receipt", Some("B"))),
        (true, "3") => Some(("Rejected by Supervisor", Some("C"))),
        (false, "2") => Some(("Pending Order", None)),
        (false, "3") => Some(("Rejected", None)),
        _ => None,
    }
}

/// Body fields of each record type beyond the seeded ones (reference B2), so that a write naming
/// them is not refused under `X-NetSuite-PropertyNameValidation: error`.
const STANDARD_FIELDS: &[&str] = &[
    "externalId",
    "tranId",
    "tranDate",
    "entity",
    "subsidiary",
    "currency",
    "exchangeRate",
    "location",
    "department",
    "class",
    "employee",
    "approvalStatus",
    "nextApprover",
    "status",
    "orderStatus",
    "memo",
    "total",
    "subtotal",
    "taxTotal",
    "customForm",
    "dueDate",
    "shipDate",
    "createdFrom",
    "shipStatus",
    "requester",
    "item",
    "expense",
    "package",
    "itemId",
    "displayName",
    "unitsType",
    "stockUnit",
    "purchaseUnit",
    "saleUnit",
    "locations",
    "createdDate",
    "lastModifiedDate",
];

/// Whether `field` (case-insensitive) is a body field of `record`: a seeded or standard field,
/// or a custom one (`custbody…`, `custcol…`, `custitem…`); `id` and `links` are always accepted.
pub fn is_known_field(record: RecordType, field: &str) -> bool {
    let lower = field.to_ascii_lowercase();
    if ["id", "links"].contains(&lower.as_str())
        || ["custbody", "custcol", "custitem"].iter().any(|p| lower.starts_with(p))
    {
        return true;
    }
    STANDARD_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(field))
        || records().iter().any(|(t, v)| {
            *t == record && v.as_object().is_some_and(|o| o.keys().any(|k| k.eq_ignore_ascii_case(field)))
        })
}
