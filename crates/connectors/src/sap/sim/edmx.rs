//! The parts of an OData v2 `$metadata` document (EDMX, CSDL 2.0 with SAP annotations) that the
//! simulator derives its behaviour from: entity types (keys, properties, navigation properties),
//! associations and their sets, entity sets with SAP's `sap:creatable` / `sap:updatable` /
//! `sap:deletable` flags, and function imports.
//!
//! Vocabulary annotations, complex types' properties and documentation are skipped: the simulator
//! serves the document itself as it is, so nothing has to be re-rendered from this model.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Why a `$metadata` document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EdmxError {
    #[error("EDMX is not well-formed XML: {0}")]
    Xml(#[from] quick_xml::Error),
    #[error("EDMX attribute is malformed: {0}")]
    Attribute(#[from] quick_xml::events::attributes::AttrError),
    #[error("EDMX element <{element}> has no {attribute} attribute")]
    Missing { element: &'static str, attribute: &'static str },
    #[error("EDMX declares no Schema with entity types")]
    NoSchema,
}

/// One `Property` of an entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    /// `Edm.String`, `Edm.Decimal`, …
    pub edm_type: String,
    pub nullable: bool,
    /// `sap:filterable="false"` makes a `$filter` naming it a 400.
    pub filterable: bool,
    /// `sap:sortable="false"` makes an `$orderby` naming it a 400.
    pub sortable: bool,
    /// `Scale` of an `Edm.Decimal`.
    pub scale: Option<u32>,
}

/// One `NavigationProperty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NavProperty {
    pub name: String,
    /// Association name without the namespace.
    pub relationship: String,
    pub from_role: String,
    pub to_role: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityType {
    pub name: String,
    pub keys: Vec<String>,
    pub properties: Vec<Property>,
    pub navs: Vec<NavProperty>,
}

impl EntityType {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
}

/// One end of an association: the entity type (without namespace) and its multiplicity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationEnd {
    pub role: String,
    pub entity_type: String,
    /// `1`, `0..1` or `*`.
    pub multiplicity: String,
}

/// A referential constraint: principal properties equal dependent properties, pairwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraint {
    pub principal_role: String,
    pub principal: Vec<String>,
    pub dependent_role: String,
    pub dependent: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Association {
    pub name: String,
    pub ends: Vec<AssociationEnd>,
    pub constraint: Option<Constraint>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssociationSet {
    /// Association name without the namespace.
    pub association: String,
    /// (role, entity set).
    pub ends: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySet {
    pub name: String,
    /// Entity type name without the namespace.
    pub entity_type: String,
    pub creatable: bool,
    pub updatable: bool,
    pub deletable: bool,
    /// `sap:addressable="false"`: reachable only through navigation, not as `Set(key)`.
    pub addressable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionImport {
    pub name: String,
    pub return_type: Option<String>,
    pub entity_set: Option<String>,
    /// `m:HttpMethod`, `GET` or `POST`.
    pub http_method: String,
    /// (name, Edm type).
    pub parameters: Vec<(String, String)>,
}

/// A parsed `$metadata` document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edmx {
    pub namespace: String,
    pub entity_types: Vec<EntityType>,
    pub associations: Vec<Association>,
    pub association_sets: Vec<AssociationSet>,
    pub entity_sets: Vec<EntitySet>,
    pub function_imports: Vec<FunctionImport>,
}

/// Where a navigation property leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NavTarget<'a> {
    pub set: &'a EntitySet,
    /// `*`: a collection; else one entity (or null).
    pub many: bool,
    /// (property of the source, property of the target) that must be equal.
    pub pairs: Vec<(&'a str, &'a str)>,
}

/// Key names that differ between a document and its items for the same value (the schedule line
/// of a PO item is keyed `PurchasingDocument` / `PurchasingDocumentItem`).
const SAME_VALUE: &[(&str, &str)] =
    &[("PurchaseOrder", "PurchasingDocument"), ("PurchaseOrderItem", "PurchasingDocumentItem")];

fn local(qualified: &str) -> &str {
    qualified.rsplit('.').next().unwrap_or(qualified)
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, EdmxError> {
    for attr in e.attributes() {
        let attr = attr?;
        if attr.key.as_ref() == name.as_bytes() {
            return Ok(Some(attr.unescape_value().map_err(EdmxError::Xml)?.into_owned()));
        }
    }
    Ok(None)
}

fn required(e: &BytesStart<'_>, element: &'static str, name: &'static str) -> Result<String, EdmxError> {
    attribute(e, name)?.ok_or(EdmxError::Missing { element, attribute: name })
}

/// `sap:…="false"` turns a capability off; absent means on.
fn flag(e: &BytesStart<'_>, name: &str) -> Result<bool, EdmxError> {
    Ok(attribute(e, name)?.as_deref() != Some("false"))
}

impl Edmx {
    /// Reads the first schema that declares entity types.
    pub fn parse(xml: &str) -> Result<Edmx, EdmxError> {
        let mut reader = Reader::from_str(xml);
        let mut out = Edmx::default();
        // Local names of the open elements, to know what a `PropertyRef` or `End` belongs to.
        let mut stack: Vec<String> = Vec::new();
        let mut schema_done = false;
        loop {
            let event = reader.read_event()?;
            let (e, empty) = match &event {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    if stack.pop().as_deref() == Some("Schema") && !out.entity_types.is_empty() {
                        schema_done = true;
                    }
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            let parent = stack.last().map(String::as_str).unwrap_or_default();
            let grandparent = stack.len().checked_sub(2).map_or("", |i| stack[i].as_str());
            if !schema_done {
                out.element(e, &name, parent, grandparent)?;
            }
            if !empty {
                stack.push(name);
            }
        }
        if out.entity_types.is_empty() {
            return Err(EdmxError::NoSchema);
        }
        Ok(out)
    }

    fn element(&mut self, e: &BytesStart<'_>, name: &str, parent: &str, grandparent: &str) -> Result<(), EdmxError> {
        match (name, parent) {
            ("Schema", _) if self.namespace.is_empty() || self.entity_types.is_empty() => {
                self.namespace = required(e, "Schema", "Namespace")?;
            }
            ("EntityType", "Schema") => {
                self.entity_types.push(EntityType { name: required(e, "EntityType", "Name")?, ..EntityType::default() })
            }
            ("PropertyRef", "Key") if grandparent == "EntityType" => {
                if let Some(t) = self.entity_types.last_mut() {
                    t.keys.push(required(e, "PropertyRef", "Name")?);
                }
            }
            ("Property", "EntityType") => {
                let property = Property {
                    name: required(e, "Property", "Name")?,
                    edm_type: required(e, "Property", "Type")?,
                    nullable: attribute(e, "Nullable")?.as_deref() != Some("false"),
                    filterable: flag(e, "sap:filterable")?,
                    sortable: flag(e, "sap:sortable")?,
                    scale: attribute(e, "Scale")?.and_then(|s| s.parse().ok()),
                };
                if let Some(t) = self.entity_types.last_mut() {
                    t.properties.push(property);
                }
            }
            ("NavigationProperty", "EntityType") => {
                let nav = NavProperty {
                    name: required(e, "NavigationProperty", "Name")?,
                    relationship: local(&required(e, "NavigationProperty", "Relationship")?).to_owned(),
                    from_role: required(e, "NavigationProperty", "FromRole")?,
                    to_role: required(e, "NavigationProperty", "ToRole")?,
                };
                if let Some(t) = self.entity_types.last_mut() {
                    t.navs.push(nav);
                }
            }
            ("Association", "Schema") => self
                .associations
                .push(Association { name: required(e, "Association", "Name")?, ..Association::default() }),
            ("End", "Association") => {
                let end = AssociationEnd {
                    role: required(e, "End", "Role")?,
                    entity_type: local(&required(e, "End", "Type")?).to_owned(),
                    multiplicity: required(e, "End", "Multiplicity")?,
                };
                if let Some(a) = self.associations.last_mut() {
                    a.ends.push(end);
                }
            }
            ("Principal" | "Dependent", "ReferentialConstraint") => {
                let role = required(e, "Principal", "Role")?;
                if let Some(a) = self.associations.last_mut() {
                    let c = a.constraint.get_or_insert_with(Constraint::default);
                    if name == "Principal" {
                        c.principal_role = role;
                    } else {
                        c.dependent_role = role;
                    }
                }
            }
            ("PropertyRef", "Principal" | "Dependent") => {
                let property = required(e, "PropertyRef", "Name")?;
                if let Some(c) = self.associations.last_mut().and_then(|a| a.constraint.as_mut()) {
                    if parent == "Principal" {
                        c.principal.push(property);
                    } else {
                        c.dependent.push(property);
                    }
                }
            }
            ("EntitySet", "EntityContainer") => self.entity_sets.push(EntitySet {
                name: required(e, "EntitySet", "Name")?,
                entity_type: local(&required(e, "EntitySet", "EntityType")?).to_owned(),
                creatable: flag(e, "sap:creatable")?,
                updatable: flag(e, "sap:updatable")?,
                deletable: flag(e, "sap:deletable")?,
                addressable: flag(e, "sap:addressable")?,
            }),
            ("AssociationSet", "EntityContainer") => self.association_sets.push(AssociationSet {
                association: local(&required(e, "AssociationSet", "Association")?).to_owned(),
                ends: Vec::new(),
            }),
            ("End", "AssociationSet") => {
                let end = (required(e, "End", "Role")?, required(e, "End", "EntitySet")?);
                if let Some(s) = self.association_sets.last_mut() {
                    s.ends.push(end);
                }
            }
            ("FunctionImport", "EntityContainer") => self.function_imports.push(FunctionImport {
                name: required(e, "FunctionImport", "Name")?,
                return_type: attribute(e, "ReturnType")?,
                entity_set: attribute(e, "EntitySet")?,
                http_method: attribute(e, "m:HttpMethod")?.unwrap_or_else(|| "GET".to_owned()),
                parameters: Vec::new(),
            }),
            ("Parameter", "FunctionImport") => {
                let parameter = (required(e, "Parameter", "Name")?, required(e, "Parameter", "Type")?);
                if let Some(f) = self.function_imports.last_mut() {
                    f.parameters.push(parameter);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn entity_type(&self, name: &str) -> Option<&EntityType> {
        let name = local(name);
        self.entity_types.iter().find(|t| t.name == name)
    }

    pub fn entity_set(&self, name: &str) -> Option<&EntitySet> {
        self.entity_sets.iter().find(|s| s.name == name)
    }

    pub fn function_import(&self, name: &str) -> Option<&FunctionImport> {
        self.function_imports.iter().find(|f| f.name == name)
    }

    /// The entity set, multiplicity and join of `nav` starting at `from`.
    ///
    /// The join is the association's referential constraint when it has one; SAP's A2X documents
    /// mostly omit them, so otherwise the key properties of one side that the other side also
    /// has (the header key inside the item; the item's parent key), with [`SAME_VALUE`] for the
    /// few renamed ones.
    pub fn nav_target<'a>(&'a self, from: &'a EntityType, nav: &'a NavProperty) -> Option<NavTarget<'a>> {
        let association = self.associations.iter().find(|a| a.name == nav.relationship)?;
        let to_end = association.ends.iter().find(|e| e.role == nav.to_role)?;
        let set_name = self
            .association_sets
            .iter()
            .filter(|s| s.association == nav.relationship)
            .find_map(|s| s.ends.iter().find(|(role, _)| *role == nav.to_role).map(|(_, set)| set))?;
        let set = self.entity_set(set_name)?;
        let to = self.entity_type(&set.entity_type)?;
        let pairs = match &association.constraint {
            Some(c) if c.principal_role == nav.from_role => {
                c.principal.iter().map(String::as_str).zip(c.dependent.iter().map(String::as_str)).collect()
            }
            Some(c) if c.dependent_role == nav.from_role => {
                c.dependent.iter().map(String::as_str).zip(c.principal.iter().map(String::as_str)).collect()
            }
            _ => Self::implied_join(from, to),
        };
        Some(NavTarget { set, many: to_end.multiplicity == "*", pairs })
    }

    fn implied_join<'a>(from: &'a EntityType, to: &'a EntityType) -> Vec<(&'a str, &'a str)> {
        let counterpart = |name: &str, other: &'a EntityType| -> Option<&'a str> {
            if let Some(p) = other.property(name) {
                return Some(p.name.as_str());
            }
            SAME_VALUE
                .iter()
                .find_map(|(a, b)| {
                    if *a == name {
                        Some(*b)
                    } else if *b == name {
                        Some(*a)
                    } else {
                        None
                    }
                })
                .and_then(|alias| other.property(alias))
                .map(|p| p.name.as_str())
        };
        // Every key of the source in the target: the target belongs to the source (header → items).
        let down: Option<Vec<(&str, &str)>> =
            from.keys.iter().map(|k| counterpart(k, to).map(|t| (k.as_str(), t))).collect();
        if let Some(pairs) = down {
            return pairs;
        }
        // Every key of the target in the source: the source belongs to the target (item → header).
        let up: Option<Vec<(&str, &str)>> =
            to.keys.iter().map(|k| counterpart(k, from).map(|s| (s, k.as_str()))).collect();
        if let Some(pairs) = up {
            return pairs;
        }
        // Otherwise the keys the two share (a sibling keyed partly the same), else the target's
        // keys the source carries as plain properties (a partner's `AddressID`).
        let shared: Vec<(&str, &str)> =
            from.keys.iter().filter_map(|k| counterpart(k, to).map(|t| (k.as_str(), t))).collect();
        if !shared.is_empty() {
            return shared;
        }
        to.keys.iter().filter_map(|k| counterpart(k, from).map(|s| (s, k.as_str()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" xmlns:sap="http://www.sap.com/Protocols/SAPData">
<edmx:DataServices m:DataServiceVersion="2.0"><Schema Namespace="S" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">
<EntityType Name="H"><Key><PropertyRef Name="Doc"/></Key><Property Name="Doc" Type="Edm.String" Nullable="false"/>
<Property Name="Amount" Type="Edm.Decimal" Scale="3" sap:filterable="false"/>
<NavigationProperty Name="to_Item" Relationship="S.assoc_HI" FromRole="FromRole_HI" ToRole="ToRole_HI"/></EntityType>
<EntityType Name="I"><Key><PropertyRef Name="Doc"/><PropertyRef Name="Item"/></Key>
<Property Name="Doc" Type="Edm.String" Nullable="false"/><Property Name="Item" Type="Edm.String" Nullable="false"/>
<NavigationProperty Name="to_H" Relationship="S.assoc_IH" FromRole="FromRole_IH" ToRole="ToRole_IH"/></EntityType>
<ComplexType Name="C"><Property Name="Ignored" Type="Edm.String"/></ComplexType>
<Association Name="assoc_HI"><End Type="S.H" Multiplicity="1" Role="FromRole_HI"/><End Type="S.I" Multiplicity="*" Role="ToRole_HI"/></Association>
<Association Name="assoc_IH"><End Type="S.I" Multiplicity="1" Role="FromRole_IH"/><End Type="S.H" Multiplicity="1" Role="ToRole_IH"/></Association>
<EntityContainer Name="S_Entities" m:IsDefaultEntityContainer="true">
<EntitySet Name="Hs" EntityType="S.H" sap:deletable="false"/><EntitySet Name="Is" EntityType="S.I"/>
<AssociationSet Name="assoc_HI_AssocSet" Association="S.assoc_HI"><End EntitySet="Hs" Role="FromRole_HI"/><End EntitySet="Is" Role="ToRole_HI"/></AssociationSet>
<AssociationSet Name="assoc_IH_AssocSet" Association="S.assoc_IH"><End EntitySet="Is" Role="FromRole_IH"/><End EntitySet="Hs" Role="ToRole_IH"/></AssociationSet>
<FunctionImport Name="Check" ReturnType="S.C" m:HttpMethod="GET"><Parameter Name="Doc" Type="Edm.String" Mode="In"/></FunctionImport>
</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"#;

    #[test]
    fn types_sets_navigation_and_functions() {
        let m = Edmx::parse(DOC).unwrap();
        assert_eq!(m.namespace, "S");
        let h = m.entity_type("S.H").unwrap();
        assert_eq!(h.keys, vec!["Doc"]);
        assert!(!h.property("Amount").unwrap().filterable);
        assert_eq!(h.property("Amount").unwrap().scale, Some(3));
        assert!(m.entity_type("C").is_none());
        assert!(!m.entity_set("Hs").unwrap().deletable && m.entity_set("Is").unwrap().deletable);
        let down = m.nav_target(h, &h.navs[0]).unwrap();
        assert_eq!((down.set.name.as_str(), down.many, down.pairs), ("Is", true, vec![("Doc", "Doc")]));
        let i = m.entity_type("I").unwrap();
        let up = m.nav_target(i, &i.navs[0]).unwrap();
        assert_eq!((up.set.name.as_str(), up.many, up.pairs), ("Hs", false, vec![("Doc", "Doc")]));
        let f = m.function_import("Check").unwrap();
        assert_eq!((f.http_method.as_str(), f.parameters.len()), ("GET", 1));
    }

    #[test]
    fn malformed_documents_are_refused() {
        assert!(matches!(Edmx::parse("<edmx:Edmx><Schema Namespace=\"S\"/></edmx:Edmx>"), Err(EdmxError::NoSchema)));
        assert!(Edmx::parse("<a><b></a>").is_err());
    }
}
