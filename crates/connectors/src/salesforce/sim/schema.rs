//! The simulated org's schema: what `describe` answers for each object (fields, types, picklist
//! values, lookups and their relationship names, child relationships), and what the SOQL engine
//! and the write paths check names against, so an unknown object or field is refused as
//! Salesforce refuses it (`INVALID_TYPE`, `INVALID_FIELD`) instead of answering nulls.
//!
//! Field names come from the reference's field lists (crm-apis.md A2) and the fixtures' record
//! bodies (`rest/*_get.json`); types and picklist values are Salesforce's standard ones
//! (see conformance/UNVERIFIED-salesforce.md for what is assumed).

/// A field's `type` in describe (Salesforce's lower-case names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Id,
    Reference,
    String,
    Textarea,
    Picklist,
    Boolean,
    Currency,
    Double,
    Percent,
    Int,
    Date,
    Datetime,
    Phone,
    Email,
    Url,
}

impl FieldType {
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Reference => "reference",
            Self::String => "string",
            Self::Textarea => "textarea",
            Self::Picklist => "picklist",
            Self::Boolean => "boolean",
            Self::Currency => "currency",
            Self::Double => "double",
            Self::Percent => "percent",
            Self::Int => "int",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Phone => "phone",
            Self::Email => "email",
            Self::Url => "url",
        }
    }

    /// The SOAP type describe reports beside `type`.
    pub fn soap_type(self) -> &'static str {
        match self {
            Self::Id | Self::Reference => "tns:ID",
            Self::Boolean => "xsd:boolean",
            Self::Currency | Self::Double | Self::Percent => "xsd:double",
            Self::Int => "xsd:int",
            Self::Date => "xsd:date",
            Self::Datetime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldType,
    pub picklist: &'static [&'static str],
    /// Restricted picklist: a value outside `picklist` is refused on write.
    pub restricted: bool,
    pub reference_to: &'static [&'static str],
    /// Parent relationship name of a lookup (`AccountId` → `Account`).
    pub relationship: Option<&'static str>,
    pub external_id: bool,
    /// Createable and updateable through the API (system and formula fields are not).
    pub writable: bool,
}

const fn f(name: &'static str, kind: FieldType) -> FieldDef {
    FieldDef {
        name,
        kind,
        picklist: &[],
        restricted: false,
        reference_to: &[],
        relationship: None,
        external_id: false,
        writable: true,
    }
}

/// A read-only (system, formula or roll-up) field.
const fn ro(name: &'static str, kind: FieldType) -> FieldDef {
    FieldDef { writable: false, ..f(name, kind) }
}

const fn pick(name: &'static str, values: &'static [&'static str]) -> FieldDef {
    FieldDef { picklist: values, ..f(name, FieldType::Picklist) }
}

const fn lookup(name: &'static str, to: &'static [&'static str], relationship: &'static str) -> FieldDef {
    FieldDef { reference_to: to, relationship: Some(relationship), ..f(name, FieldType::Reference) }
}

const fn ro_lookup(name: &'static str, to: &'static [&'static str], relationship: &'static str) -> FieldDef {
    FieldDef { writable: false, ..lookup(name, to, relationship) }
}

const fn external(name: &'static str) -> FieldDef {
    FieldDef { external_id: true, ..f(name, FieldType::String) }
}

/// A child relationship: `Opportunity.Tasks` are the Tasks whose `WhatId` is the opportunity.
#[derive(Debug, Clone, Copy)]
pub struct ChildRel {
    pub name: &'static str,
    pub object: &'static str,
    pub field: &'static str,
}

#[derive(Debug)]
pub struct ObjectDef {
    pub name: &'static str,
    pub label: &'static str,
    pub plural: &'static str,
    pub prefix: &'static str,
    /// Fields besides [`SYSTEM_FIELDS`].
    pub own: &'static [FieldDef],
    pub children: &'static [ChildRel],
    /// Fields a create must carry (`REQUIRED_FIELD_MISSING` otherwise).
    pub required: &'static [&'static str],
}

use FieldType as T;

/// Fields every object has.
pub const SYSTEM_FIELDS: &[FieldDef] = &[
    ro("Id", T::Id),
    ro("IsDeleted", T::Boolean),
    ro("CreatedDate", T::Datetime),
    ro_lookup("CreatedById", &["User"], "CreatedBy"),
    ro("LastModifiedDate", T::Datetime),
    ro_lookup("LastModifiedById", &["User"], "LastModifiedBy"),
    ro("SystemModstamp", T::Datetime),
];

const OWNER: FieldDef = lookup("OwnerId", &["User"], "Owner");
/// The org is multi-currency (the fixtures carry `CurrencyIsoCode`); its active currencies.
const CURRENCY: FieldDef = FieldDef { restricted: true, ..pick("CurrencyIsoCode", &["HKD", "USD", "CNY"]) };

/// Restricted picklist of `Opportunity.StageName`.
pub const STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];
const LEAD_SOURCES: &[&str] = &["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"];
const ACTIVITY_TYPES: &[&str] = &["Call", "Email", "Meeting", "Other"];

pub static OBJECTS: &[ObjectDef] = &[
    ObjectDef {
        name: "Account",
        label: "Account",
        plural: "Accounts",
        prefix: "001",
        own: &[
            f("Name", T::String),
            pick(
                "Type",
                &[
                    "Prospect",
                    "Customer - Direct",
                    "Customer - Channel",
                    "Channel Partner / Reseller",
                    "Installation Partner",
                    "Technology Partner",
                    "Other",
                ],
            ),
            pick(
                "Industry",
                &[
                    "Agriculture",
                    "Banking",
                    "Chemicals",
                    "Communications",
                    "Construction",
                    "Consulting",
                    "Electronics",
                    "Energy",
                    "Finance",
                    "Food & Beverage",
                    "Healthcare",
                    "Hospitality",
                    "Insurance",
                    "Machinery",
                    "Manufacturing",
                    "Media",
                    "Retail",
                    "Shipping",
                    "Technology",
                    "Telecommunications",
                    "Transportation",
                    "Utilities",
                    "Other",
                ],
            ),
            lookup("ParentId", &["Account"], "Parent"),
            f("AccountNumber", T::String),
            f("Phone", T::Phone),
            f("Fax", T::Phone),
            f("Website", T::Url),
            f("Description", T::Textarea),
            f("BillingStreet", T::Textarea),
            f("BillingCity", T::String),
            f("BillingState", T::String),
            f("BillingPostalCode", T::String),
            f("BillingCountry", T::String),
            f("ShippingCity", T::String),
            f("ShippingCountry", T::String),
            f("AnnualRevenue", T::Currency),
            f("NumberOfEmployees", T::Int),
            pick("Rating", &["Hot", "Warm", "Cold"]),
            OWNER,
            CURRENCY,
            ro("LastActivityDate", T::Date),
            external("ERP_Customer_No__c"),
            pick("Credit_Status__c", &["Good", "Watch", "Hold", "Blocked"]),
            f("Credit_Limit__c", T::Currency),
            f("CreditLimit__c", T::Currency),
            f("On_Hold__c", T::Boolean),
            f("Terms__c", T::String),
        ],
        children: &[
            ChildRel { name: "Contacts", object: "Contact", field: "AccountId" },
            ChildRel { name: "Opportunities", object: "Opportunity", field: "AccountId" },
            ChildRel { name: "Tasks", object: "Task", field: "WhatId" },
            ChildRel { name: "Events", object: "Event", field: "WhatId" },
            ChildRel { name: "ChildAccounts", object: "Account", field: "ParentId" },
        ],
        required: &["Name"],
    },
    ObjectDef {
        name: "Contact",
        label: "Contact",
        plural: "Contacts",
        prefix: "003",
        own: &[
            lookup("AccountId", &["Account"], "Account"),
            f("FirstName", T::String),
            f("LastName", T::String),
            ro("Name", T::String),
            pick("Salutation", &["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
            f("Title", T::String),
            f("Department", T::String),
            f("Email", T::Email),
            f("Phone", T::Phone),
            f("MobilePhone", T::Phone),
            f("MailingCity", T::String),
            f("MailingCountry", T::String),
            f("HasOptedOutOfEmail", T::Boolean),
            pick("LeadSource", LEAD_SOURCES),
            f("Description", T::Textarea),
            OWNER,
            CURRENCY,
            ro("LastActivityDate", T::Date),
            external("Dingbridge_Id__c"),
        ],
        children: &[
            ChildRel { name: "Tasks", object: "Task", field: "WhoId" },
            ChildRel { name: "Events", object: "Event", field: "WhoId" },
            ChildRel { name: "OpportunityContactRoles", object: "OpportunityContactRole", field: "ContactId" },
        ],
        required: &["LastName"],
    },
    ObjectDef {
        name: "User",
        label: "User",
        plural: "Users",
        prefix: "005",
        own: &[
            f("Username", T::String),
            f("FirstName", T::String),
            f("LastName", T::String),
            ro("Name", T::String),
            f("Email", T::Email),
            f("Alias", T::String),
            f("IsActive", T::Boolean),
            f("Title", T::String),
            f("Phone", T::Phone),
            pick("TimeZoneSidKey", &["Asia/Hong_Kong", "Asia/Shanghai", "America/Los_Angeles", "GMT"]),
            lookup("ManagerId", &["User"], "Manager"),
        ],
        children: &[],
        required: &["Username", "LastName", "Email", "Alias", "TimeZoneSidKey"],
    },
    ObjectDef {
        name: "Opportunity",
        label: "Opportunity",
        plural: "Opportunities",
        prefix: "006",
        own: &[
            f("Name", T::String),
            lookup("AccountId", &["Account"], "Account"),
            f("Description", T::Textarea),
            FieldDef { restricted: true, ..pick("StageName", STAGES) },
            f("Amount", T::Currency),
            f("Probability", T::Percent),
            ro("ExpectedRevenue", T::Currency),
            f("CloseDate", T::Date),
            pick(
                "Type",
                &[
                    "Existing Customer - Upgrade",
                    "Existing Customer - Replacement",
                    "Existing Customer - Downgrade",
                    "New Customer",
                ],
            ),
            f("NextStep", T::String),
            pick("LeadSource", LEAD_SOURCES),
            ro("IsClosed", T::Boolean),
            ro("IsWon", T::Boolean),
            ro("ForecastCategory", T::Picklist),
            pick("ForecastCategoryName", &["Omitted", "Pipeline", "Best Case", "Commit", "Closed"]),
            CURRENCY,
            lookup("CampaignId", &["Campaign"], "Campaign"),
            ro("HasOpportunityLineItem", T::Boolean),
            lookup("Pricebook2Id", &["Pricebook2"], "Pricebook2"),
            OWNER,
            ro("LastActivityDate", T::Date),
            ro("LastStageChangeDate", T::Datetime),
            ro("FiscalQuarter", T::Int),
            ro("FiscalYear", T::Int),
            ro("Fiscal", T::String),
            ro_lookup("ContactId", &["Contact"], "Contact"),
            ro("LastViewedDate", T::Datetime),
            ro("LastReferencedDate", T::Datetime),
            ro("HasOpenActivity", T::Boolean),
            ro("HasOverdueTask", T::Boolean),
        ],
        children: &[
            ChildRel { name: "Tasks", object: "Task", field: "WhatId" },
            ChildRel { name: "Events", object: "Event", field: "WhatId" },
            ChildRel { name: "OpportunityContactRoles", object: "OpportunityContactRole", field: "OpportunityId" },
        ],
        required: &["Name", "StageName", "CloseDate"],
    },
    ObjectDef {
        name: "Task",
        label: "Task",
        plural: "Tasks",
        prefix: "00T",
        own: &[
            lookup("WhoId", &["Contact", "Lead"], "Who"),
            lookup("WhatId", &["Opportunity", "Account"], "What"),
            ro("WhoCount", T::Int),
            ro("WhatCount", T::Int),
            f("Subject", T::String),
            f("ActivityDate", T::Date),
            pick("Status", &["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"]),
            pick("Priority", &["High", "Normal", "Low"]),
            ro("IsHighPriority", T::Boolean),
            OWNER,
            f("Description", T::Textarea),
            CURRENCY,
            ro_lookup("AccountId", &["Account"], "Account"),
            ro("IsClosed", T::Boolean),
            ro("IsArchived", T::Boolean),
            f("CallDurationInSeconds", T::Int),
            pick("CallType", &["Internal", "Inbound", "Outbound"]),
            f("CallDisposition", T::String),
            f("CallObject", T::String),
            f("ReminderDateTime", T::Datetime),
            f("IsReminderSet", T::Boolean),
            ro("IsRecurrence", T::Boolean),
            pick("TaskSubtype", &["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"]),
            ro("CompletedDateTime", T::Datetime),
            pick("Type", ACTIVITY_TYPES),
        ],
        children: &[],
        required: &[],
    },
    ObjectDef {
        name: "Event",
        label: "Event",
        plural: "Events",
        prefix: "00U",
        own: &[
            lookup("WhoId", &["Contact", "Lead"], "Who"),
            lookup("WhatId", &["Opportunity", "Account"], "What"),
            f("Subject", T::String),
            f("Location", T::String),
            f("IsAllDayEvent", T::Boolean),
            f("ActivityDateTime", T::Datetime),
            f("ActivityDate", T::Date),
            f("DurationInMinutes", T::Int),
            f("StartDateTime", T::Datetime),
            f("EndDateTime", T::Datetime),
            f("Description", T::Textarea),
            ro_lookup("AccountId", &["Account"], "Account"),
            OWNER,
            CURRENCY,
            pick("ShowAs", &["Busy", "OutOfOffice", "Free"]),
            pick("Type", ACTIVITY_TYPES),
            pick("EventSubtype", &["Event"]),
            f("IsPrivate", T::Boolean),
        ],
        children: &[],
        required: &[],
    },
    ObjectDef {
        name: "OpportunityContactRole",
        label: "Opportunity Contact Role",
        plural: "Opportunity Contact Role",
        prefix: "00K",
        own: &[
            lookup("OpportunityId", &["Opportunity"], "Opportunity"),
            lookup("ContactId", &["Contact"], "Contact"),
            pick(
                "Role",
                &[
                    "Business User",
                    "Decision Maker",
                    "Economic Buyer",
                    "Economic Decision Maker",
                    "Evaluator",
                    "Executive Sponsor",
                    "Influencer",
                    "Technical Buyer",
                    "Other",
                ],
            ),
            f("IsPrimary", T::Boolean),
            CURRENCY,
        ],
        children: &[],
        required: &["OpportunityId", "ContactId"],
    },
    ObjectDef {
        name: "OpportunityStage",
        label: "Opportunity Stage",
        plural: "Opportunity Stages",
        prefix: "01J",
        own: &[
            ro("ApiName", T::String),
            ro("MasterLabel", T::String),
            ro("IsActive", T::Boolean),
            ro("IsClosed", T::Boolean),
            ro("IsWon", T::Boolean),
            ro("DefaultProbability", T::Percent),
            ro("SortOrder", T::Int),
            ro("ForecastCategory", T::Picklist),
            ro("ForecastCategoryName", T::Picklist),
            ro("Description", T::String),
        ],
        children: &[],
        required: &[],
    },
    ObjectDef {
        name: "Organization",
        label: "Organization",
        plural: "Organizations",
        prefix: "00D",
        own: &[
            ro("Name", T::String),
            ro("IsSandbox", T::Boolean),
            ro("OrganizationType", T::Picklist),
            ro("InstanceName", T::String),
            ro("DefaultLocaleSidKey", T::Picklist),
            ro("LanguageLocaleKey", T::Picklist),
            ro("TimeZoneSidKey", T::Picklist),
        ],
        children: &[],
        required: &[],
    },
];

impl ObjectDef {
    pub fn fields(&self) -> impl Iterator<Item = &'static FieldDef> + '_ {
        SYSTEM_FIELDS.iter().chain(self.own.iter())
    }

    /// A field by name; SOQL and REST field names are case-insensitive.
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        SYSTEM_FIELDS.iter().chain(self.own.iter()).find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The lookup field whose relationship name is `name` (`Account` → `AccountId`).
    pub fn parent_relationship(&self, name: &str) -> Option<&'static FieldDef> {
        SYSTEM_FIELDS
            .iter()
            .chain(self.own.iter())
            .find(|f| f.relationship.is_some_and(|r| r.eq_ignore_ascii_case(name)))
    }

    pub fn child_relationship(&self, name: &str) -> Option<&'static ChildRel> {
        self.children.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// An object by name (case-insensitive, as SOQL and the REST paths treat it).
pub fn object(name: &str) -> Option<&'static ObjectDef> {
    OBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

/// The object an id belongs to, from its key prefix (reference A7).
pub fn object_of_prefix(id: &str) -> Option<&'static ObjectDef> {
    let prefix = id.get(..3)?;
    OBJECTS.iter().find(|o| o.prefix == prefix)
}

/// A label from an API name, as Salesforce's standard labels read (`AccountId` → `Account ID`,
/// `Credit_Limit__c` → `Credit Limit`).
pub fn label_of(name: &str) -> String {
    if name == "StageName" {
        return "Stage".to_owned();
    }
    let base = name.strip_suffix("__c").unwrap_or(name);
    let base = match base.strip_suffix("Id") {
        Some(stem) if !stem.is_empty() => format!("{stem} ID"),
        _ => base.to_owned(),
    };
    let mut out = String::new();
    let chars: Vec<char> = base.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            out.push(' ');
            continue;
        }
        let split = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()) && chars[i - 1].is_ascii_uppercase());
        if split && !out.ends_with(' ') {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively_and_relationships_point_at_described_objects() {
        let opp = object("opportunity").unwrap();
        assert_eq!(opp.name, "Opportunity");
        assert_eq!(opp.field("stagename").unwrap().name, "StageName");
        assert_eq!(opp.parent_relationship("account").unwrap().name, "AccountId");
        assert_eq!(opp.child_relationship("tasks").unwrap().object, "Task");
        assert!(opp.field("Nmae").is_none());
        assert_eq!(object_of_prefix("0065g00000Qx1ZpAAJ").unwrap().name, "Opportunity");
        for o in OBJECTS {
            for c in o.children {
                let child = object(c.object).unwrap();
                assert!(child.field(c.field).is_some(), "{}.{} -> {}.{}", o.name, c.name, c.object, c.field);
            }
            let mut names: Vec<&str> = o.fields().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), o.fields().count(), "{} has a field twice", o.name);
        }
        assert_eq!(label_of("AccountId"), "Account ID");
        assert_eq!(label_of("Credit_Limit__c"), "Credit Limit");
        assert_eq!(label_of("SystemModstamp"), "System Modstamp");
    }
}
