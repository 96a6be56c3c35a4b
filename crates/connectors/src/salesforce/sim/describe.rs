//! `describe` bodies built from [`super::schema`]: `GET /sobjects` (describeGlobal),
//! `GET /sobjects/{O}` (basic information) and `GET /sobjects/{O}/describe` (fields, types,
//! picklist values, lookups with their relationship names, child relationships).

use super::schema::{self, FieldDef, FieldType, ObjectDef};
use serde_json::{json, Value};

/// Objects only Salesforce itself writes (setup data).
fn read_only(object: &ObjectDef) -> bool {
    matches!(object.name, "OpportunityStage" | "Organization")
}

fn urls(object: &ObjectDef, version: &str) -> Value {
    let base = format!("/services/data/{version}/sobjects/{}", object.name);
    json!({"sobject": base, "describe": format!("{base}/describe"), "rowTemplate": format!("{base}/{{ID}}")})
}

fn summary(object: &ObjectDef, version: &str) -> Value {
    let writable = !read_only(object);
    json!({
        "name": object.name,
        "label": object.label,
        "labelPlural": object.plural,
        "keyPrefix": object.prefix,
        "custom": false,
        "queryable": true,
        "retrieveable": true,
        "searchable": writable,
        "createable": writable,
        "updateable": writable,
        "deletable": writable,
        "layoutable": writable,
        "urls": urls(object, version),
    })
}

/// `GET /sobjects`.
pub fn global(version: &str) -> Value {
    let sobjects: Vec<Value> = schema::OBJECTS.iter().map(|o| summary(o, version)).collect();
    json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects})
}

/// `GET /sobjects/{O}` (the object is known).
pub fn basic(object: &str, version: &str) -> Value {
    let def = schema::object(object).map(|o| summary(o, version)).unwrap_or(Value::Null);
    json!({"objectDescribe": def, "recentItems": []})
}

fn length(kind: FieldType) -> u32 {
    match kind {
        FieldType::Id | FieldType::Reference => 18,
        FieldType::String | FieldType::Picklist | FieldType::Url => 255,
        FieldType::Textarea => 32_000,
        FieldType::Phone => 40,
        FieldType::Email => 80,
        _ => 0,
    }
}

fn field(object: &ObjectDef, f: &FieldDef) -> Value {
    let required = object.required.contains(&f.name);
    let writable = f.writable && f.name != "Id" && !read_only(object);
    let picklist: Vec<Value> = f
        .picklist
        .iter()
        .map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v}))
        .collect();
    let (precision, scale) = match f.kind {
        FieldType::Currency => (18, 2),
        FieldType::Percent => (3, 0),
        FieldType::Double => (18, 0),
        _ => (0, 0),
    };
    json!({
        "name": f.name,
        "label": schema::label_of(f.name),
        "type": f.kind.api_name(),
        "soapType": f.kind.soap_type(),
        "length": length(f.kind),
        "precision": precision,
        "scale": scale,
        "digits": if f.kind == FieldType::Int { 9 } else { 0 },
        "custom": f.name.ends_with("__c"),
        "nillable": !required && f.kind != FieldType::Boolean && f.name != "Id",
        "createable": writable,
        "updateable": writable,
        "defaultedOnCreate": !f.writable || f.kind == FieldType::Boolean,
        "calculated": false,
        "filterable": f.kind != FieldType::Textarea,
        "sortable": f.kind != FieldType::Textarea,
        "groupable": !matches!(f.kind, FieldType::Textarea | FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::Datetime),
        "unique": false,
        "externalId": f.external_id,
        "idLookup": f.external_id || f.name == "Id",
        "picklistValues": picklist,
        "restrictedPicklist": f.restricted,
        "referenceTo": f.reference_to,
        "relationshipName": f.relationship,
        "polymorphicForeignKey": f.reference_to.len() > 1,
        "defaultValue": null,
    })
}

/// `GET /sobjects/{O}/describe` (the object is known).
pub fn full(object: &str, version: &str) -> Value {
    let Some(def) = schema::object(object) else { return Value::Null };
    let mut out = summary(def, version);
    let fields: Vec<Value> = def.fields().map(|f| field(def, f)).collect();
    let children: Vec<Value> = def
        .children
        .iter()
        .map(|c| json!({"childSObject": c.object, "field": c.field, "relationshipName": c.name, "cascadeDelete": false, "restrictedDelete": false, "deprecatedAndHidden": false}))
        .collect();
    out["fields"] = json!(fields);
    out["childRelationships"] = json!(children);
    out["recordTypeInfos"] = json!([]);
    out
}
