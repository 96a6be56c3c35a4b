//! Seed data: a Hong Kong trading company (company code HK01, plant HK10 in Kwai Chung),
//! consistent with the SAP fixtures (PO 4500000123, PR 10000045, delivery 80001234, work item
//! 000001129172). Delivery 80001234 is goods-issued; 80001235 (sales order 12346) is picked and
//! waits for goods issue. PRs 10000045 and 10000046 wait for release.

use serde_json::{json, Value};

pub const USER: &str = "DINGBRIDGE";
pub const PASSWORD: &str = "secret";
pub const BEARER_TOKEN: &str = "sim-sap-bearer-token";
pub const SAP_CLIENT: &str = "100";
pub const SESSION_COOKIE: &str = "SAP_SESSIONID_SIM_100";
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const TASK_ID: &str = "000001129172";

pub fn purchase_orders() -> Vec<Value> {
    vec![
        json!({"PurchaseOrder": "4500000122", "CompanyCode": "HK01", "PurchaseOrderType": "NB", "Supplier": "10000456",
            "PurchasingOrganization": "HK01", "PurchasingGroup": "002", "PurchaseOrderDate": "/Date(1710288000000)/",
            "CreationDate": "/Date(1710288000000)/", "CreatedByUser": "CHANTM", "DocumentCurrency": "HKD",
            "PurchasingProcessingStatus": "05", "ReleaseIsNotCompleted": false, "CorrespncInternalReference": "",
            "AddressName": "Tsuen Wan Packaging Co", "LastChangeDateTime": "/Date(1710300000000+0000)/"}),
        json!({"PurchaseOrder": "4500000123", "CompanyCode": "HK01", "PurchaseOrderType": "NB", "Supplier": "10000123",
            "PurchasingOrganization": "HK01", "PurchasingGroup": "001", "PurchaseOrderDate": "/Date(1710460800000)/",
            "CreationDate": "/Date(1710460800000)/", "CreatedByUser": "WONGKM", "DocumentCurrency": "HKD",
            "PurchasingProcessingStatus": "03", "ReleaseIsNotCompleted": true, "CorrespncInternalReference": "",
            "AddressName": "Kowloon Bay Trading Ltd", "LastChangeDateTime": "/Date(1710469867000+0000)/"}),
        json!({"PurchaseOrder": "4500000124", "CompanyCode": "HK01", "PurchaseOrderType": "NB", "Supplier": "10000123",
            "PurchasingOrganization": "HK01", "PurchasingGroup": "001", "PurchaseOrderDate": "/Date(1710547200000)/",
            "CreationDate": "/Date(1710547200000)/", "CreatedByUser": "WONGKM", "DocumentCurrency": "HKD",
            "PurchasingProcessingStatus": "02", "ReleaseIsNotCompleted": true, "CorrespncInternalReference": "",
            "AddressName": "Kowloon Bay Trading Ltd", "LastChangeDateTime": "/Date(1710550000000+0000)/"}),
    ]
}

pub fn purchase_order_items() -> Vec<Value> {
    let item = |po: &str, item: &str, mat: &str, text: &str, qty: &str, unit: &str, price: &str| {
        json!({"PurchaseOrder": po, "PurchaseOrderItem": item, "Material": mat, "PurchaseOrderItemText": text,
            "Plant": "HK10", "StorageLocation": if unit == "KG" { "0002" } else { "0001" }, "OrderQuantity": qty,
            "PurchaseOrderQuantityUnit": unit, "OrderPriceUnit": unit, "DocumentCurrency": "HKD",
            "NetPriceAmount": price, "NetPriceQuantity": "1", "PurchaseRequisition": "", "PurchaseRequisitionItem": "0"})
    };
    vec![
        item("4500000122", "10", "PK-0300", "Carton 40x30x30", "500", "PC", "3.20"),
        item("4500000123", "10", "TG-1001", "Stainless bolt M8x40", "1200", "PC", "0.85"),
        item("4500000123", "20", "RM-2040", "Polypropylene resin 25kg bag", "37.500", "KG", "18.40"),
        item("4500000124", "10", "TG-1001", "Stainless bolt M8x40", "2400", "PC", "0.83"),
    ]
}

pub fn purchase_requisition_items() -> Vec<Value> {
    let item = |pr: &str, qty: &str, net: &str, changed: i64| {
        json!({"PurchaseRequisition": pr, "PurchaseRequisitionItem": "10", "Material": "TG-1001",
            "PurchaseRequisitionItemText": "Stainless bolt M8x40", "RequestedQuantity": qty, "BaseUnit": "PC",
            "PurchaseRequisitionPrice": "0.85", "PurReqnPriceQuantity": "1", "ItemNetAmount": net,
            "PurReqnItemCurrency": "HKD", "Plant": "HK10", "CompanyCode": "HK01", "PurchasingGroup": "001",
            "PurchasingOrganization": "HK01", "DeliveryDate": "/Date(1712016000000)/", "CreationDate": "/Date(1710374400000)/",
            "RequisitionerName": "CHAN TM", "CreatedByUser": "CHANTM", "FixedSupplier": "10000123", "Supplier": "",
            "ReleaseStrategy": "Z1", "ReleaseCode": "", "PurReqnReleaseStatus": "02", "ReleaseIsNotCompleted": true,
            "IsDeleted": "", "IsClosed": false, "LastChangeDateTime": format!("/Date({changed}+0000)/")})
    };
    vec![item("10000045", "1200", "1020.00", 1_710_407_700_000), item("10000046", "600", "510.00", 1_710_500_000_000)]
}

pub fn material_stock() -> Vec<Value> {
    let row = |mat: &str, sloc: &str, batch: &str, stype: &str, unit: &str, qty: &str| {
        json!({"Material": mat, "Plant": "HK10", "StorageLocation": sloc, "Batch": batch, "Supplier": "", "Customer": "",
            "WBSElementInternalID": "0", "SDDocument": "", "SDDocumentItem": "0", "InventorySpecialStockType": "",
            "InventoryStockType": stype, "MaterialBaseUnit": unit, "MatlWrhsStkQtyInMatlBaseUnit": qty})
    };
    vec![
        row("TG-1001", "0001", "", "01", "PC", "5400"),
        row("TG-1001", "0001", "", "02", "PC", "120"),
        row("RM-2040", "0002", "B2403001", "01", "KG", "875"),
    ]
}

pub fn outbound_deliveries() -> Vec<Value> {
    vec![
        json!({"DeliveryDocument": "80001234", "DeliveryDocumentType": "LF", "ShippingPoint": "HK10",
        "SoldToParty": "20000077", "ShipToParty": "20000077", "SalesOrganization": "HK01",
        "PlannedGoodsIssueDate": "/Date(1710806400000)/", "ActualGoodsMovementDate": "/Date(1710806400000)/",
        "ActualGoodsMovementTime": "PT15H40M00S", "DeliveryDate": "/Date(1710892800000)/",
        "OverallPickingStatus": "C", "OverallGoodsMovementStatus": "C", "OverallProofOfDeliveryStatus": "",
        "HeaderGrossWeight": "940.000", "HeaderNetWeight": "900.000", "HeaderWeightUnit": "KG",
        "IncotermsClassification": "EXW", "BillOfLading": "HKG-BL-77812", "TotalNumberOfPackage": "12",
        "LastChangeDate": "/Date(1710806400000)/", "ShipToName": "Harbour City Retail Ltd"}),
        // Picked, goods issue not yet posted (the shipment scenario posts it).
        json!({"DeliveryDocument": "80001235", "DeliveryDocumentType": "LF", "ShippingPoint": "HK10",
        "SoldToParty": "20000078", "ShipToParty": "20000078", "SalesOrganization": "HK01",
        "PlannedGoodsIssueDate": "/Date(1710892800000)/", "ActualGoodsMovementDate": null,
        "ActualGoodsMovementTime": "PT00H00M00S", "DeliveryDate": "/Date(1710979200000)/",
        "OverallPickingStatus": "C", "OverallGoodsMovementStatus": "A", "OverallProofOfDeliveryStatus": "",
        "HeaderGrossWeight": "132.500", "HeaderNetWeight": "125.000", "HeaderWeightUnit": "KG",
        "IncotermsClassification": "EXW", "BillOfLading": "", "TotalNumberOfPackage": "3",
        "LastChangeDate": "/Date(1710806400000)/", "ShipToName": "Mong Kok Gadgets Co."}),
    ]
}

pub fn outbound_delivery_items() -> Vec<Value> {
    vec![
        json!({"DeliveryDocument": "80001234", "DeliveryDocumentItem": "10", "Material": "TG-1001",
            "DeliveryDocumentItemText": "Stainless bolt M8x40", "Plant": "HK10", "StorageLocation": "0001", "Batch": "",
            "ActualDeliveryQuantity": "1200", "DeliveryQuantityUnit": "PC", "ActualDeliveredQtyInBaseUnit": "1200",
            "BaseUnit": "PC", "DeliveryToBaseQuantityNmrtr": "1", "DeliveryToBaseQuantityDnmntr": "1",
            "ReferenceSDDocument": "12345", "ReferenceSDDocumentItem": "10"}),
        json!({"DeliveryDocument": "80001234", "DeliveryDocumentItem": "20", "Material": "RM-2040",
            "DeliveryDocumentItemText": "Polypropylene resin 25kg bag", "Plant": "HK10", "StorageLocation": "0002",
            "Batch": "B2403001", "ActualDeliveryQuantity": "875", "DeliveryQuantityUnit": "KG",
            "ActualDeliveredQtyInBaseUnit": "875", "BaseUnit": "KG", "DeliveryToBaseQuantityNmrtr": "1",
            "DeliveryToBaseQuantityDnmntr": "1", "ReferenceSDDocument": "12345", "ReferenceSDDocumentItem": "20"}),
        json!({"DeliveryDocument": "80001235", "DeliveryDocumentItem": "10", "Material": "TG-1001",
            "DeliveryDocumentItemText": "Stainless bolt M8x40", "Plant": "HK10", "StorageLocation": "0001", "Batch": "",
            "ActualDeliveryQuantity": "2400", "DeliveryQuantityUnit": "PC", "ActualDeliveredQtyInBaseUnit": "2400",
            "BaseUnit": "PC", "DeliveryToBaseQuantityNmrtr": "1", "DeliveryToBaseQuantityDnmntr": "1",
            "ReferenceSDDocument": "12346", "ReferenceSDDocumentItem": "10"}),
        json!({"DeliveryDocument": "80001235", "DeliveryDocumentItem": "20", "Material": "RM-2040",
            "DeliveryDocumentItemText": "Polypropylene resin 25kg bag", "Plant": "HK10", "StorageLocation": "0002",
            "Batch": "B2403001", "ActualDeliveryQuantity": "100", "DeliveryQuantityUnit": "KG",
            "ActualDeliveredQtyInBaseUnit": "100", "BaseUnit": "KG", "DeliveryToBaseQuantityNmrtr": "1",
            "DeliveryToBaseQuantityDnmntr": "1", "ReferenceSDDocument": "12346", "ReferenceSDDocumentItem": "20"}),
    ]
}

/// Release work items of the requisitions waiting for release (10000045, 10000046).
pub const PR_TASK_IDS: [&str; 2] = ["000001129180", "000001129181"];

/// Business object types of the documents a workflow task is about.
pub const OBJECT_TYPE_PO: &str = "BUS2012";
pub const OBJECT_TYPE_PR: &str = "BUS2105";

pub fn tasks() -> Vec<Value> {
    let task = |id: &str, definition: &str, name: &str, title: &str, created: i64, by: &str| {
        json!({"SAP__Origin": "LOCAL", "InstanceID": id, "TaskDefinitionID": definition,
            "TaskDefinitionName": name, "TaskTitle": title, "Priority": "MEDIUM", "Status": "READY",
            "CreatedOn": format!("/Date({created}+0000)/"), "CreatedBy": by, "Processor": "", "CompletedOn": null,
            "HasComments": false, "HasAttachments": false})
    };
    vec![
        task(
            TASK_ID,
            "TS00008267",
            "Release of purchase order",
            "Release PO 4500000123 (HKD 1,710.00)",
            1_710_469_869_000,
            "WONG KM",
        ),
        task(
            PR_TASK_IDS[0],
            "TS00007986",
            "Release of purchase requisition",
            "Release purchase requisition 10000045",
            1_710_407_702_000,
            "CHAN TM",
        ),
        task(
            PR_TASK_IDS[1],
            "TS00007986",
            "Release of purchase requisition",
            "Release purchase requisition 10000046",
            1_710_500_002_000,
            "CHAN TM",
        ),
    ]
}

/// The work item → (object type, document) it releases: a positive decision completes the
/// document's release, a negative one rejects it.
pub const TASK_DOCUMENTS: &[(&str, &str, &str)] = &[
    (TASK_ID, OBJECT_TYPE_PO, "4500000123"),
    (PR_TASK_IDS[0], OBJECT_TYPE_PR, "10000045"),
    (PR_TASK_IDS[1], OBJECT_TYPE_PR, "10000046"),
];

/// `TaskObjects` of every seeded task: the document it is about.
pub fn task_objects() -> Vec<Value> {
    TASK_DOCUMENTS
        .iter()
        .map(|(task, kind, document)| {
            let name = if *kind == OBJECT_TYPE_PO { "Purchase Order" } else { "Purchase Requisition" };
            json!({"SAP__Origin": "LOCAL", "InstanceID": task, "ObjectID": document, "ObjectType": kind,
                "ObjectName": format!("{name} {document}")})
        })
        .collect()
}

pub fn decision_options(origin: &str, instance: &str) -> Vec<Value> {
    vec![
        json!({"__metadata": {"type": "TASKPROCESSING.DecisionOption"}, "InstanceID": instance, "DecisionKey": "0001",
            "DecisionText": "Release", "CommentMandatory": false, "Nature": "POSITIVE", "SAP__Origin": origin}),
        json!({"__metadata": {"type": "TASKPROCESSING.DecisionOption"}, "InstanceID": instance, "DecisionKey": "0002",
            "DecisionText": "Reject", "CommentMandatory": true, "Nature": "NEGATIVE", "SAP__Origin": origin}),
    ]
}
