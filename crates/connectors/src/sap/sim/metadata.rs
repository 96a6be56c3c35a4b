//! A minimal `$metadata` (EDMX, OData v2) for each simulated service, written from the entity
//! sets the simulator serves: enough for a client to discover sets, keys, property types and the
//! ETag property. Not a copy of SAP's documents (those stay test fixtures).

use super::{SetDef, SETS};
use serde_json::Value;

/// Properties typed as `Edm.Decimal` (SAP sends them as strings).
const DECIMAL_FIELDS: &[&str] = &[
    "OrderQuantity",
    "NetPriceAmount",
    "NetPriceQuantity",
    "RequestedQuantity",
    "PurchaseRequisitionPrice",
    "PurReqnPriceQuantity",
    "ItemNetAmount",
    "MatlWrhsStkQtyInMatlBaseUnit",
    "HeaderGrossWeight",
    "HeaderNetWeight",
    "ActualDeliveryQuantity",
    "ActualDeliveredQtyInBaseUnit",
    "DeliveryToBaseQuantityNmrtr",
    "DeliveryToBaseQuantityDnmntr",
];

fn edm_type(field: &str, sample: &Value) -> &'static str {
    match sample {
        Value::Bool(_) => "Edm.Boolean",
        Value::String(s) if s.starts_with("/Date(") && s.contains('+') => "Edm.DateTimeOffset",
        Value::String(s) if s.starts_with("/Date(") => "Edm.DateTime",
        Value::String(s) if s.starts_with("PT") && field.ends_with("Time") => "Edm.Time",
        _ if DECIMAL_FIELDS.contains(&field) => "Edm.Decimal",
        Value::Null if field.ends_with("On") => "Edm.DateTimeOffset",
        _ => "Edm.String",
    }
}

fn entity_type(def: &SetDef, sample: Option<&Value>) -> String {
    let mut out = format!("<EntityType Name=\"{}\"", def.type_name);
    if def.etag_field.is_some() {
        out.push_str(" m:HasStream=\"false\"");
    }
    out.push_str("><Key>");
    for k in def.keys {
        out.push_str(&format!("<PropertyRef Name=\"{k}\"/>"));
    }
    out.push_str("</Key>");
    if let Some(Value::Object(map)) = sample {
        for (name, value) in map {
            let nullable = if def.keys.contains(&name.as_str()) { " Nullable=\"false\"" } else { "" };
            let etag = if def.etag_field == Some(name.as_str()) { " ConcurrencyMode=\"Fixed\"" } else { "" };
            out.push_str(&format!("<Property Name=\"{name}\" Type=\"{}\"{nullable}{etag}/>", edm_type(name, value)));
        }
    }
    out.push_str("</EntityType>");
    out
}

/// The EDMX of `service` (e.g. `API_PURCHASEORDER_PROCESS_SRV`) with one sample row per set.
pub fn document(service: &str, sample: impl Fn(&str) -> Option<Value>) -> String {
    let defs: Vec<&SetDef> = SETS.iter().filter(|d| d.service == service).collect();
    let mut types = String::new();
    let mut sets = String::new();
    for def in &defs {
        types.push_str(&entity_type(def, sample(def.set).as_ref()));
        sets.push_str(&format!("<EntitySet Name=\"{}\" EntityType=\"{service}.{}\"/>", def.set, def.type_name));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<edmx:Edmx Version=\"1.0\" xmlns:edmx=\"http://schemas.microsoft.com/ado/2007/06/edmx\" \
xmlns:m=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\" \
xmlns:sap=\"http://www.sap.com/Protocols/SAPData\">\
<edmx:DataServices m:DataServiceVersion=\"2.0\">\
<Schema Namespace=\"{service}\" xml:lang=\"en\" xmlns=\"http://schemas.microsoft.com/ado/2008/09/edm\">\
{types}<EntityContainer Name=\"{service}_Entities\" m:IsDefaultEntityContainer=\"true\">{sets}</EntityContainer>\
</Schema></edmx:DataServices></edmx:Edmx>"
    )
}
