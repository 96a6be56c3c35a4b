//! Seed data of the simulator: a Hong Kong trading company, consistent with the fixtures
//! (same ids, order numbers, amounts and row versions). For the shipment scenario the Mong Kok
//! order is Submitted / In Progress (the test fulfils it: statecode 3, statuscode 100001); BC
//! purchase order 106021 is "In Review" (pending approval) with two lines.

use serde_json::{json, Value};

pub const TENANT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "00000000-1111-2222-3333-444444444444";
pub const CLIENT_SECRET: &str = "fake~secret";
pub const ORGANIZATION: &str = "dingbridge-demo.crm5.dynamics.com";
pub const ENVIRONMENT: &str = "Production";
pub const COMPANY_ID: &str = "6a8f2b10-44e3-ea11-bb43-000d3a2feca1";
pub const HKD_ID: &str = "8f2c5e0a-1b7d-ee11-8179-000d3a0a1c11";
pub const HARBOUR_CITY_ID: &str = "a1b2c3d4-0000-ee11-8179-000d3a0a1c22";
pub const MONG_KOK_ID: &str = "a1b2c3d4-0001-ee11-8179-000d3a0a1c23";
pub const ORDER_HCR: &str = "3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01";
pub const ORDER_MONGKOK: &str = "5b0e7d11-7b2d-ee11-8179-000d3a0a1c02";
pub const ORDER_SHEUNG_WAN: &str = "9c7d2e41-7b2d-ee11-8179-000d3a0a1c09";
pub const PO_106021: &str = "9b0e7d11-1a2d-ee11-8179-000d3a0a1c51";

/// Business Central resources (company-scoped).
pub const BC_SETS: &[&str] = &["purchaseOrders", "items", "salesShipments", "employees"];

const HARBOUR_CITY: (&str, &str) = (HARBOUR_CITY_ID, "Harbour City Retail Ltd");
const MONG_KOK: (&str, &str) = (MONG_KOK_ID, "Mong Kok Gadgets Co.");

fn lookup(field: &str, id: &str, logical: &str, label: &str) -> [(String, Value); 3] {
    [
        (field.to_owned(), json!(id)),
        (format!("{field}@Microsoft.Dynamics.CRM.lookuplogicalname"), json!(logical)),
        (format!("{field}@OData.Community.Display.V1.FormattedValue"), json!(label)),
    ]
}

/// Sales order (statecode, label, statuscode, label): Active/New and Submitted/In Progress
/// (fulfilling sets Fulfilled 3 / Complete 100001).
const NEW: Status = (0, "Active", 1, "New");
const IN_PROGRESS: Status = (1, "Submitted", 3, "In Progress");

type Status = (i64, &'static str, i64, &'static str);

fn order(
    id: &str,
    number: &str,
    name: &str,
    customer: (&str, &str),
    total: f64,
    status: Status,
    modified: &str,
) -> Value {
    const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
    let mut row = json!({
        "salesorderid": id, "ordernumber": number, "name": name, "totalamount": total,
        format!("totalamount{FORMATTED}"): format!("HK${total:.2}"),
        "statecode": status.0, format!("statecode{FORMATTED}"): status.1,
        "statuscode": status.2, format!("statuscode{FORMATTED}"): status.3,
        "modifiedon": modified,
    });
    if let Some(map) = row.as_object_mut() {
        map.extend(lookup("_customerid_value", customer.0, "account", customer.1));
        map.extend(lookup("_transactioncurrencyid_value", HKD_ID, "transactioncurrency", "Hong Kong Dollar"));
    }
    row
}

/// Dataverse rows with their row versions (`@odata.etag` `W/"<version>"`).
pub fn dataverse() -> Vec<(&'static str, u64, Value)> {
    vec![
        (
            "transactioncurrencies",
            5_560_001,
            json!({"transactioncurrencyid": HKD_ID, "isocurrencycode": "HKD", "currencyname": "Hong Kong Dollar"}),
        ),
        (
            "accounts",
            5_560_010,
            json!({"accountid": HARBOUR_CITY_ID, "name": "Harbour City Retail Ltd", "accountnumber": "C20000077", "telephone1": "+852 2118 8666", "address1_city": "Tsim Sha Tsui"}),
        ),
        (
            "accounts",
            5_560_011,
            json!({"accountid": MONG_KOK_ID, "name": "Mong Kok Gadgets Co.", "accountnumber": "C20000078", "telephone1": "+852 2394 1234", "address1_city": "Mong Kok"}),
        ),
        (
            "accounts",
            5_560_012,
            json!({"accountid": "a1b2c3d4-0002-ee11-8179-000d3a0a1c24", "name": "Sheung Wan Dried Seafood Ltd", "accountnumber": "C20000079", "telephone1": "+852 2545 0000", "address1_city": "Sheung Wan"}),
        ),
        (
            "products",
            5_560_020,
            json!({"productid": "7d1e2f30-44e3-ea11-bb43-000d3a2feca1", "productnumber": "TG-1001", "name": "Stainless bolt M8x40", "quantityonhand": 5400.0, "statecode": 0, "_defaultuomid_value": "a1b2c3d4-44e3-ea11-bb43-000d3a2feca1"}),
        ),
        (
            "products",
            5_560_021,
            json!({"productid": "7d1e2f31-44e3-ea11-bb43-000d3a2feca1", "productnumber": "TG-1002", "name": "Hex nut M8", "quantityonhand": 12000.0, "statecode": 0, "_defaultuomid_value": "a1b2c3d4-44e3-ea11-bb43-000d3a2feca1"}),
        ),
        (
            "products",
            5_560_022,
            json!({"productid": "7d1e2f32-44e3-ea11-bb43-000d3a2feca1", "productnumber": "TG-2001", "name": "Jasmine tea 500 g", "quantityonhand": 320.5, "statecode": 0, "_defaultuomid_value": "a1b2c3d4-45e3-ea11-bb43-000d3a2feca1"}),
        ),
        (
            "opportunities",
            5_560_030,
            json!({"opportunityid": "0a1b2c3d-7b2d-ee11-8179-000d3a0a1c31", "name": "Harbour City autumn range", "estimatedvalue": 150000.0, "_parentaccountid_value": HARBOUR_CITY_ID, "stepname": "2-Develop", "statecode": 0, "closeprobability": 60}),
        ),
        (
            "opportunities",
            5_560_031,
            json!({"opportunityid": "0a1b2c3d-7b2d-ee11-8179-000d3a0a1c32", "name": "Mong Kok kiosk fit-out", "estimatedvalue": 42000.5, "_parentaccountid_value": MONG_KOK_ID, "stepname": "1-Qualify", "statecode": 0, "closeprobability": 20}),
        ),
        (
            "salesorders",
            5_561_023,
            order(
                ORDER_HCR,
                "ORD-01001-X7Y2Z3",
                "HCR spring restock",
                HARBOUR_CITY,
                20712.0,
                NEW,
                "2024-03-15T02:31:07Z",
            ),
        ),
        (
            "salesorders",
            5_561_087,
            order(
                ORDER_MONGKOK,
                "ORD-01002-K8L9M0",
                "Mong Kok pop-up",
                MONG_KOK,
                8800.5,
                IN_PROGRESS,
                "2024-03-15T06:02:55Z",
            ),
        ),
        (
            "salesorders",
            5_561_090,
            order(
                ORDER_SHEUNG_WAN,
                "ORD-01003-P4Q5R6",
                "Sheung Wan dry goods",
                HARBOUR_CITY,
                3150.0,
                NEW,
                "2024-03-15T06:05:00Z",
            ),
        ),
    ]
}

/// Business Central rows of the one company.
pub fn business_central() -> Vec<(&'static str, Value)> {
    vec![
        (
            "purchaseOrders",
            json!({
                "id": PO_106021, "number": "106021", "orderDate": "2024-03-15", "postingDate": "2024-03-15",
                "vendorId": "2c3d4e5f-44e3-ea11-bb43-000d3a2feca1", "vendorNumber": "V00110", "vendorName": "Kowloon Bay Trading Ltd",
                "currencyCode": "HKD", "pricesIncludeTax": false, "requestedReceiptDate": "2024-04-02", "discountAmount": 0,
                "totalAmountExcludingTax": 1710, "totalTaxAmount": 0, "totalAmountIncludingTax": 1710, "fullyReceived": false,
                "status": "In Review", "lastModifiedDateTime": "2024-03-15T02:31:07.433Z",
                "purchaseOrderLines": [
                    {"id": format!("{PO_106021}-10000"), "documentId": PO_106021, "sequence": 10000, "itemId": "7d1e2f30-44e3-ea11-bb43-000d3a2feca1",
                     "lineType": "Item", "lineObjectNumber": "TG-1001", "description": "Stainless bolt M8x40", "unitOfMeasureCode": "PCS",
                     "quantity": 1200, "directUnitCost": 0.85, "amountExcludingTax": 1020, "expectedReceiptDate": "2024-04-02",
                     "receivedQuantity": 0, "invoicedQuantity": 0},
                    {"id": format!("{PO_106021}-20000"), "documentId": PO_106021, "sequence": 20000, "itemId": "7d1e2f31-44e3-ea11-bb43-000d3a2feca1",
                     "lineType": "Item", "lineObjectNumber": "TG-1002", "description": "Hex nut M8", "unitOfMeasureCode": "PCS",
                     "quantity": 3000, "directUnitCost": 0.23, "amountExcludingTax": 690, "expectedReceiptDate": "2024-04-02",
                     "receivedQuantity": 0, "invoicedQuantity": 0}
                ]
            }),
        ),
        (
            "purchaseOrders",
            json!({
                "id": "9b0e7d12-1a2d-ee11-8179-000d3a0a1c52", "number": "106022", "orderDate": "2024-03-18", "postingDate": "2024-03-18",
                "vendorId": "2c3d4e60-44e3-ea11-bb43-000d3a2feca1", "vendorNumber": "V00120", "vendorName": "Kwun Tong Tea Importers",
                "currencyCode": "HKD", "pricesIncludeTax": false, "requestedReceiptDate": "2024-04-10", "discountAmount": 0,
                "totalAmountExcludingTax": 4800, "totalTaxAmount": 0, "totalAmountIncludingTax": 4800, "fullyReceived": false,
                "status": "Draft", "lastModifiedDateTime": "2024-03-18T01:00:00Z",
                "purchaseOrderLines": [
                    {"id": "9b0e7d12-1a2d-ee11-8179-000d3a0a1c52-10000", "documentId": "9b0e7d12-1a2d-ee11-8179-000d3a0a1c52", "sequence": 10000,
                     "itemId": "7d1e2f32-44e3-ea11-bb43-000d3a2feca1", "lineType": "Item", "lineObjectNumber": "TG-2001",
                     "description": "Jasmine tea 500 g", "unitOfMeasureCode": "BAG", "quantity": 120, "directUnitCost": 40,
                     "amountExcludingTax": 4800, "expectedReceiptDate": "2024-04-10", "receivedQuantity": 0, "invoicedQuantity": 0}
                ]
            }),
        ),
        (
            "items",
            json!({"id": "7d1e2f30-44e3-ea11-bb43-000d3a2feca1", "number": "TG-1001", "displayName": "Stainless bolt M8x40", "type": "Inventory", "baseUnitOfMeasureCode": "PCS", "inventory": 5400, "unitCost": 0.85, "unitPrice": 1.5, "lastModifiedDateTime": "2024-03-10T08:00:00Z"}),
        ),
        (
            "items",
            json!({"id": "7d1e2f31-44e3-ea11-bb43-000d3a2feca1", "number": "TG-1002", "displayName": "Hex nut M8", "type": "Inventory", "baseUnitOfMeasureCode": "PCS", "inventory": 12000, "unitCost": 0.23, "unitPrice": 0.45, "lastModifiedDateTime": "2024-03-10T08:00:00Z"}),
        ),
        (
            "items",
            json!({"id": "7d1e2f32-44e3-ea11-bb43-000d3a2feca1", "number": "TG-2001", "displayName": "Jasmine tea 500 g", "type": "Inventory", "baseUnitOfMeasureCode": "BAG", "inventory": 320.5, "unitCost": 40, "unitPrice": 68, "lastModifiedDateTime": "2024-03-12T03:30:00Z"}),
        ),
        (
            "salesShipments",
            json!({"id": "5e6f7a80-1a2d-ee11-8179-000d3a0a1c61", "number": "102031", "orderNumber": "101005", "shipmentDate": "2024-03-14", "customerNumber": "C20000077", "customerName": "Harbour City Retail Ltd"}),
        ),
        (
            "salesShipments",
            json!({"id": "5e6f7a81-1a2d-ee11-8179-000d3a0a1c62", "number": "102032", "orderNumber": "101006", "shipmentDate": "2024-03-15", "customerNumber": "C20000078", "customerName": "Mong Kok Gadgets Co."}),
        ),
    ]
    .into_iter()
    .chain(employees().into_iter().map(|e| ("employees", e)))
    .collect()
}

/// BC `employees` of the company: the people of the DingTalk simulator's seed, `number` = their
/// DingTalk job number, same emails and mobiles (typed the ways BC users type them); Chow Siu
/// Ming has left (`Inactive`).
pub fn employees() -> Vec<Value> {
    // (number, given, surname, email, mobile, status)
    let rows: [(&str, &str, &str, &str, &str, &str); 7] = [
        ("E0001", "Wai Kit", "Lee", "wk.lee@harbour-trading.example.hk", "+852 9123 4567", "Active"),
        ("E1024", "Tai Man", "Chan", "tm.chan@example.com.hk", "9876 5432", "Active"),
        ("E1031", "Siu Fan", "Ho", "sf.ho@harbour-trading.example.hk", "62345678", "Active"),
        ("E0002", "Mei Ling", "Cheung", "ml.cheung@harbour-trading.example.hk", "+85293456781", "Active"),
        ("E2011", "Chi Keung", "Lam", "ck.lam@harbour-trading.example.hk", "5123-4568", "Active"),
        ("E2017", "Hoi Yan", "Ng", "hy.ng@harbour-trading.example.hk", "6789 1234", "Active"),
        ("E3150", "Siu Ming", "Chow", "sm.chow@harbour-trading.example.hk", "59871234", "Inactive"),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, (number, given, surname, email, mobile, status))| {
            json!({
                "id": format!("e7a1c0{i:02}-3b2d-ee11-8179-000d3a0a1c80"),
                "number": number,
                "displayName": format!("{given} {surname}"),
                "givenName": given,
                "middleName": "",
                "surname": surname,
                "jobTitle": "",
                "email": email,
                "personalEmail": "",
                "mobilePhone": mobile,
                "phoneNumber": "",
                "status": status,
                "lastModifiedDateTime": "2024-03-01T01:00:00Z"
            })
        })
        .collect()
}
