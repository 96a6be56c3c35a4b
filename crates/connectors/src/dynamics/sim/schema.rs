//! The Dataverse tables the simulator serves, declared once: their entity sets, keys, primary
//! names and columns with types and choices. `$metadata`, `EntityDefinitions` and the checks of
//! query options and writes are all derived from this, so what the metadata declares is what the
//! simulator answers, and a name it does not declare is refused as Dataverse refuses it.
//!
//! The columns are the ones reference C2 lists, plus the system columns every table has
//! (`createdon`, `modifiedon`, `versionnumber`, `statecode`, `statuscode`). Dataverse itself
//! declares hundreds more per table; a client naming one of those gets the unknown-property
//! refusal here (conformance/UNVERIFIED-dynamics.md).

use serde_json::{json, Map, Value};

/// A column's `AttributeType` (Dataverse's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uniqueidentifier,
    String,
    Memo,
    Integer,
    BigInt,
    Decimal,
    Double,
    Money,
    DateTime,
    /// A lookup; read as `_<name>_value`, written as `<navigation>@odata.bind`.
    Lookup(&'static [Navigation]),
    State(&'static [(i64, &'static str)]),
    Status(&'static [(i64, &'static str)]),
    Picklist(&'static [(i64, &'static str)]),
}

/// A single-valued navigation property of a lookup: its name and the entity set it points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Navigation {
    pub name: &'static str,
    pub target_set: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub set: &'static str,
    pub logical: &'static str,
    pub schema: &'static str,
    pub key: &'static str,
    pub primary_name: &'static str,
    /// The table's `MetadataId` (fixed, so clients may cache it across resets).
    pub metadata_id: &'static str,
    pub columns: &'static [Column],
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

const fn nav(name: &'static str, target_set: &'static str) -> Navigation {
    Navigation { name, target_set }
}

const ACTIVE_INACTIVE: &[(i64, &str)] = &[(0, "Active"), (1, "Inactive")];
const ACTIVE_INACTIVE_STATUS: &[(i64, &str)] = &[(1, "Active"), (2, "Inactive")];

/// The system columns every table has.
macro_rules! system_columns {
    () => {
        [
            col("createdon", Kind::DateTime),
            col("modifiedon", Kind::DateTime),
            col("versionnumber", Kind::BigInt),
            col("ownerid", Kind::Lookup(&[nav("ownerid", "systemusers")])),
        ]
    };
}

const fn concat<const A: usize, const B: usize, const N: usize>(a: [Column; A], b: [Column; B]) -> [Column; N] {
    let mut out = [col("", Kind::String); N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

const SALESORDER: [Column; 16] = concat(
    system_columns!(),
    [
        col("salesorderid", Kind::Uniqueidentifier),
        col("ordernumber", Kind::String),
        col("name", Kind::String),
        col("description", Kind::Memo),
        col("totalamount", Kind::Money),
        col(
            "customerid",
            Kind::Lookup(&[nav("customerid_account", "accounts"), nav("customerid_contact", "contacts")]),
        ),
        col("transactioncurrencyid", Kind::Lookup(&[nav("transactioncurrencyid", "transactioncurrencies")])),
        col("pricelevelid", Kind::Lookup(&[nav("pricelevelid", "pricelevels")])),
        col(
            "statecode",
            Kind::State(&[(0, "Active"), (1, "Submitted"), (2, "Canceled"), (3, "Fulfilled"), (4, "Invoiced")]),
        ),
        col(
            "statuscode",
            Kind::Status(&[
                (1, "New"),
                (2, "Pending"),
                (3, "In Progress"),
                (4, "No Money"),
                (100001, "Complete"),
                (100002, "Partial"),
                (100003, "Invoiced"),
            ]),
        ),
        col("requestdeliveryby", Kind::DateTime),
        col("datefulfilled", Kind::DateTime),
    ],
);

const OPPORTUNITY: [Column; 12] = concat(
    system_columns!(),
    [
        col("opportunityid", Kind::Uniqueidentifier),
        col("name", Kind::String),
        col("description", Kind::Memo),
        col("estimatedvalue", Kind::Money),
        col("parentaccountid", Kind::Lookup(&[nav("parentaccountid", "accounts")])),
        col("stepname", Kind::String),
        col("statecode", Kind::State(&[(0, "Open"), (1, "Won"), (2, "Lost")])),
        col("closeprobability", Kind::Integer),
    ],
);

const ACCOUNT: [Column; 12] = concat(
    system_columns!(),
    [
        col("accountid", Kind::Uniqueidentifier),
        col("name", Kind::String),
        col("accountnumber", Kind::String),
        col("telephone1", Kind::String),
        col("address1_line1", Kind::String),
        col("address1_city", Kind::String),
        col("description", Kind::Memo),
        col(
            "industrycode",
            Kind::Picklist(&[(1, "Accounting"), (7, "Consulting"), (12, "Distribution"), (33, "Wholesale")]),
        ),
    ],
);

const PRODUCT: [Column; 12] = concat(
    system_columns!(),
    [
        col("productid", Kind::Uniqueidentifier),
        col("productnumber", Kind::String),
        col("name", Kind::String),
        col("defaultuomid", Kind::Lookup(&[nav("DefaultUoMId", "uoms")])),
        col("defaultuomscheduleid", Kind::Lookup(&[nav("DefaultUoMScheduleId", "uomschedules")])),
        col("quantityonhand", Kind::Decimal),
        col("statecode", Kind::State(ACTIVE_INACTIVE)),
        col("statuscode", Kind::Status(ACTIVE_INACTIVE_STATUS)),
    ],
);

const TRANSACTIONCURRENCY: [Column; 9] = concat(
    system_columns!(),
    [
        col("transactioncurrencyid", Kind::Uniqueidentifier),
        col("isocurrencycode", Kind::String),
        col("currencyname", Kind::String),
        col("currencysymbol", Kind::String),
        col("exchangerate", Kind::Decimal),
    ],
);

pub const TABLES: &[Table] = &[
    Table {
        set: "salesorders",
        logical: "salesorder",
        schema: "SalesOrder",
        key: "salesorderid",
        primary_name: "name",
        metadata_id: "b1c3a6a0-0000-4000-8000-000000001088",
        columns: &SALESORDER,
    },
    Table {
        set: "opportunities",
        logical: "opportunity",
        schema: "Opportunity",
        key: "opportunityid",
        primary_name: "name",
        metadata_id: "b1c3a6a0-0000-4000-8000-000000000003",
        columns: &OPPORTUNITY,
    },
    Table {
        set: "accounts",
        logical: "account",
        schema: "Account",
        key: "accountid",
        primary_name: "name",
        metadata_id: "70816501-edb9-4740-a16c-6a5efbc05d84",
        columns: &ACCOUNT,
    },
    Table {
        set: "products",
        logical: "product",
        schema: "Product",
        key: "productid",
        primary_name: "name",
        metadata_id: "b1c3a6a0-0000-4000-8000-000000001024",
        columns: &PRODUCT,
    },
    Table {
        set: "transactioncurrencies",
        logical: "transactioncurrency",
        schema: "TransactionCurrency",
        key: "transactioncurrencyid",
        primary_name: "currencyname",
        metadata_id: "b1c3a6a0-0000-4000-8000-000000009105",
        columns: &TRANSACTIONCURRENCY,
    },
];

/// The table of an entity set.
pub fn by_set(set: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.set == set)
}

/// The table of a logical name (case-insensitive) or a `MetadataId`.
pub fn by_logical_or_id(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.logical.eq_ignore_ascii_case(name) || t.metadata_id.eq_ignore_ascii_case(name))
}

impl Table {
    /// The OData property a column is read as: `_<name>_value` for a lookup.
    pub fn property_of(column: &Column) -> String {
        match column.kind {
            Kind::Lookup(_) => format!("_{}_value", column.name),
            _ => column.name.to_owned(),
        }
    }

    /// Whether `name` is a structural property of the entity type (what `$select`, `$filter`
    /// and `$orderby` may name).
    pub fn has_property(&self, name: &str) -> bool {
        self.columns.iter().any(|c| Self::property_of(c) == name)
    }

    /// The column a write names: a plain property, or `<navigation>@odata.bind` (then the
    /// lookup column and the target set the bound URL must name).
    pub fn writable(&self, name: &str) -> Option<Write> {
        if let Some(navigation) = name.strip_suffix("@odata.bind") {
            return self.columns.iter().find_map(|c| match c.kind {
                Kind::Lookup(navs) => navs
                    .iter()
                    .find(|n| n.name == navigation)
                    .map(|n| Write::Bind { column: c.name, target: n.target_set }),
                _ => None,
            });
        }
        self.columns
            .iter()
            .find(|c| c.name == name && !matches!(c.kind, Kind::Lookup(_)))
            .map(|c| Write::Property(c.name))
    }

    /// Whether a column holds a GUID (the primary key).
    pub fn is_guid(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.name == column && c.kind == Kind::Uniqueidentifier)
    }

    /// `Microsoft.Dynamics.CRM.<logical>`, the entity type's qualified name.
    pub fn type_name(&self) -> String {
        format!("Microsoft.Dynamics.CRM.{}", self.logical)
    }

    /// The `EntityDefinitions` entry of the table (the properties clients select).
    pub fn definition(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("MetadataId".into(), json!(self.metadata_id));
        out.insert("LogicalName".into(), json!(self.logical));
        out.insert("SchemaName".into(), json!(self.schema));
        out.insert("EntitySetName".into(), json!(self.set));
        out.insert("LogicalCollectionName".into(), json!(self.set));
        out.insert("CollectionSchemaName".into(), json!(format!("{}s", self.schema)));
        out.insert("PrimaryIdAttribute".into(), json!(self.key));
        out.insert("PrimaryNameAttribute".into(), json!(self.primary_name));
        out.insert("IsCustomEntity".into(), json!(false));
        out.insert("IsActivity".into(), json!(false));
        out.insert("ChangeTrackingEnabled".into(), json!(true));
        out.insert("OwnershipType".into(), json!("UserOwned"));
        out.insert("DisplayName".into(), label(self.schema));
        out
    }

    /// The `Attributes` entries of the table.
    pub fn attributes(&self) -> Vec<Map<String, Value>> {
        self.columns.iter().map(|c| attribute(self, c)).collect()
    }
}

/// What a write's property names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Property(&'static str),
    Bind { column: &'static str, target: &'static str },
}

fn label(text: &str) -> Value {
    json!({
        "LocalizedLabels": [{"Label": text, "LanguageCode": 1033, "IsManaged": true}],
        "UserLocalizedLabel": {"Label": text, "LanguageCode": 1033, "IsManaged": true}
    })
}

impl Kind {
    /// `AttributeType` of `EntityDefinitions/Attributes`.
    pub fn attribute_type(&self) -> &'static str {
        match self {
            Kind::Uniqueidentifier => "Uniqueidentifier",
            Kind::String => "String",
            Kind::Memo => "Memo",
            Kind::Integer => "Integer",
            Kind::BigInt => "BigInt",
            Kind::Decimal => "Decimal",
            Kind::Double => "Double",
            Kind::Money => "Money",
            Kind::DateTime => "DateTime",
            Kind::Lookup(_) => "Lookup",
            Kind::State(_) => "State",
            Kind::Status(_) => "Status",
            Kind::Picklist(_) => "Picklist",
        }
    }

    /// The metadata type (`Microsoft.Dynamics.CRM.<this>`) an attribute entry is cast to.
    pub fn metadata_type(&self) -> &'static str {
        match self {
            Kind::Uniqueidentifier => "UniqueIdentifierAttributeMetadata",
            Kind::String => "StringAttributeMetadata",
            Kind::Memo => "MemoAttributeMetadata",
            Kind::Integer => "IntegerAttributeMetadata",
            Kind::BigInt => "BigIntAttributeMetadata",
            Kind::Decimal => "DecimalAttributeMetadata",
            Kind::Double => "DoubleAttributeMetadata",
            Kind::Money => "MoneyAttributeMetadata",
            Kind::DateTime => "DateTimeAttributeMetadata",
            Kind::Lookup(_) => "LookupAttributeMetadata",
            Kind::State(_) => "StateAttributeMetadata",
            Kind::Status(_) => "StatusAttributeMetadata",
            Kind::Picklist(_) => "PicklistAttributeMetadata",
        }
    }

    /// The EDM type of the property in `$metadata`.
    pub fn edm_type(&self) -> &'static str {
        match self {
            Kind::Uniqueidentifier | Kind::Lookup(_) => "Edm.Guid",
            Kind::String | Kind::Memo => "Edm.String",
            Kind::Integer | Kind::State(_) | Kind::Status(_) | Kind::Picklist(_) => "Edm.Int32",
            Kind::BigInt => "Edm.Int64",
            Kind::Decimal | Kind::Money => "Edm.Decimal",
            Kind::Double => "Edm.Double",
            Kind::DateTime => "Edm.DateTimeOffset",
        }
    }

    pub fn options(&self) -> Option<&'static [(i64, &'static str)]> {
        match self {
            Kind::State(o) | Kind::Status(o) | Kind::Picklist(o) => Some(o),
            _ => None,
        }
    }
}

fn attribute(table: &Table, column: &Column) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(format!("#Microsoft.Dynamics.CRM.{}", column.kind.metadata_type())));
    // A stable id per (table, column), shaped like a GUID.
    let digest = column.name.bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
    out.insert(
        "MetadataId".into(),
        json!(format!(
            "{}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            &table.metadata_id[..8],
            digest & 0xffff,
            (digest >> 16) & 0xfff,
            (digest >> 28) & 0xfff,
            digest >> 40
        )),
    );
    out.insert("LogicalName".into(), json!(column.name));
    out.insert("SchemaName".into(), json!(column.name));
    out.insert("EntityLogicalName".into(), json!(table.logical));
    out.insert("AttributeType".into(), json!(column.kind.attribute_type()));
    out.insert("AttributeTypeName".into(), json!({"Value": format!("{}Type", column.kind.attribute_type())}));
    out.insert("IsPrimaryId".into(), json!(column.name == table.key));
    out.insert("IsPrimaryName".into(), json!(column.name == table.primary_name));
    out.insert("IsCustomAttribute".into(), json!(false));
    out.insert("IsValidForCreate".into(), json!(!matches!(column.name, "createdon" | "modifiedon" | "versionnumber")));
    out.insert("IsValidForUpdate".into(), json!(!matches!(column.name, "createdon" | "modifiedon" | "versionnumber")));
    out.insert("DisplayName".into(), label(column.name));
    if let Kind::Lookup(navs) = column.kind {
        let targets: Vec<&str> = navs
            .iter()
            .map(|n| by_set(n.target_set).map_or(n.target_set.trim_end_matches('s'), |t| t.logical))
            .collect();
        out.insert("Targets".into(), json!(targets));
    }
    out
}

/// The `OptionSet` of a choice column (`$expand=OptionSet`).
pub fn option_set(column: &Column) -> Option<Value> {
    let options = column.kind.options()?;
    let options: Vec<Value> = options
        .iter()
        .map(|(value, text)| json!({"Value": value, "Label": label(text), "Description": label("")}))
        .collect();
    Some(json!({
        "Name": column.name,
        "IsGlobal": false,
        "OptionSetType": column.kind.attribute_type(),
        "Options": options
    }))
}

/// The CSDL (`$metadata`) of the tables: entity types with keys, properties, lookups'
/// navigation properties, and the entity sets.
pub fn csdl() -> String {
    let mut types = String::new();
    let mut sets = String::new();
    for table in TABLES {
        types.push_str(&format!(
            "<EntityType Name=\"{}\"><Key><PropertyRef Name=\"{}\"/></Key>",
            table.logical, table.key
        ));
        for column in table.columns {
            types.push_str(&format!(
                "<Property Name=\"{}\" Type=\"{}\"/>",
                Table::property_of(column),
                column.kind.edm_type()
            ));
        }
        for column in table.columns {
            if let Kind::Lookup(navs) = column.kind {
                for n in navs {
                    let target = by_set(n.target_set).map_or(n.target_set.trim_end_matches('s'), |t| t.logical);
                    types.push_str(&format!(
                        "<NavigationProperty Name=\"{}\" Type=\"mscrm.{target}\"><ReferentialConstraint Property=\"_{}_value\" ReferencedProperty=\"{target}id\"/></NavigationProperty>",
                        n.name, column.name
                    ));
                }
            }
        }
        types.push_str("</EntityType>");
        sets.push_str(&format!("<EntitySet Name=\"{}\" EntityType=\"mscrm.{}\"/>", table.set, table.logical));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\"><edmx:DataServices><Schema Namespace=\"Microsoft.Dynamics.CRM\" Alias=\"mscrm\" xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">{types}<EntityContainer Name=\"System\">{sets}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
}

/// What an `EntityDefinitions…` path asked for.
#[derive(Debug, PartialEq)]
pub enum MetadataPath<'a> {
    /// `EntityDefinitions` (filtered by `$filter`).
    Tables,
    /// `EntityDefinitions(LogicalName='x')` or `EntityDefinitions(<MetadataId>)`.
    Table(&'a Table),
    /// `…/Attributes`, optionally cast to one metadata type (`…/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`).
    Attributes(&'a Table, Option<&'a str>),
    /// `…/Attributes(LogicalName='x')`.
    Attribute(&'a Table, &'a Column),
    /// `…/Keys`: the alternate keys (none are defined on the simulated tables).
    Keys(&'a Table),
}

/// Why an `EntityDefinitions…` path names nothing.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MetadataPathError {
    #[error("Could not find an entity with specified entity name: {0}")]
    NoTable(String),
    #[error("Could not find an attribute with specified name: {0}")]
    NoAttribute(String),
    #[error("Resource not found for the segment '{0}'.")]
    Segment(String),
}

/// The key inside `(…)`: `LogicalName='x'` or a bare id.
fn key_of(segment: &str) -> Option<(&str, &str)> {
    let (name, rest) = segment.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let value = inner.strip_prefix("LogicalName=").unwrap_or(inner);
    Some((name, value.trim_matches('\'')))
}

/// Parse the path after `/api/data/v9.2/` that starts with `EntityDefinitions`.
pub fn metadata_path(path: &str) -> Result<MetadataPath<'static>, MetadataPathError> {
    let mut segments = path.split('/');
    let first = segments.next().unwrap_or_default();
    if first == "EntityDefinitions" {
        return match segments.next() {
            None => Ok(MetadataPath::Tables),
            Some(other) => Err(MetadataPathError::Segment(other.to_owned())),
        };
    }
    let Some(("EntityDefinitions", name)) = key_of(first) else {
        return Err(MetadataPathError::Segment(first.to_owned()));
    };
    let table = by_logical_or_id(name).ok_or_else(|| MetadataPathError::NoTable(name.to_owned()))?;
    let Some(second) = segments.next() else {
        return Ok(MetadataPath::Table(table));
    };
    if second == "Keys" && segments.next().is_none() {
        return Ok(MetadataPath::Keys(table));
    }
    if second == "Attributes" {
        return match segments.next() {
            None => Ok(MetadataPath::Attributes(table, None)),
            Some(cast) if cast.starts_with("Microsoft.Dynamics.CRM.") && segments.next().is_none() => {
                let cast = cast.trim_start_matches("Microsoft.Dynamics.CRM.");
                Ok(MetadataPath::Attributes(table, Some(cast_name(cast)?)))
            }
            Some(other) => Err(MetadataPathError::Segment(other.to_owned())),
        };
    }
    if let Some(("Attributes", name)) = key_of(second) {
        let column = table
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name) || attribute(table, c)["MetadataId"] == name)
            .ok_or_else(|| MetadataPathError::NoAttribute(name.to_owned()))?;
        return Ok(MetadataPath::Attribute(table, column));
    }
    Err(MetadataPathError::Segment(second.to_owned()))
}

/// A metadata type name a path may cast attributes to, as a `'static` name.
fn cast_name(cast: &str) -> Result<&'static str, MetadataPathError> {
    const KINDS: &[Kind] = &[
        Kind::Uniqueidentifier,
        Kind::String,
        Kind::Memo,
        Kind::Integer,
        Kind::BigInt,
        Kind::Decimal,
        Kind::Double,
        Kind::Money,
        Kind::DateTime,
        Kind::Lookup(&[]),
        Kind::State(&[]),
        Kind::Status(&[]),
        Kind::Picklist(&[]),
    ];
    KINDS
        .iter()
        .map(Kind::metadata_type)
        .find(|name| *name == cast)
        .ok_or_else(|| MetadataPathError::Segment(format!("Microsoft.Dynamics.CRM.{cast}")))
}

/// An attribute entry, with its `OptionSet` when `$expand` asks for it.
pub fn attribute_entry(table: &Table, column: &Column, expand_options: bool) -> Map<String, Value> {
    let mut entry = attribute(table, column);
    if expand_options {
        if let Some(options) = option_set(column) {
            entry.insert("OptionSet".into(), options);
        }
    }
    entry
}
