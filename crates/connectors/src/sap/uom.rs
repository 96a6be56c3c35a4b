//! SAP units of measure (reference A9 "Units of measure").
//!
//! SAP has three codes per unit: internal (T006-MSEHI, `ST`), commercial of the logon language
//! (T006A-MSEH3, `PC` in English) and ISO (`PCE`). OData returns commercial codes, ORDERS IDocs
//! ISO codes, DELVRY IDocs internal codes. Everything converts through the ISO code, using a
//! table that each system may override (its customizing can differ from the defaults).

use model::{ParseError, Quantity, Uom};

/// Default SAP-code → ISO-code pairs from the reference ("typical mapping"; a real system's
/// T006 customizing can differ, so this is a default, not a truth). For writes, the first pair with a given
/// ISO code names the SAP code sent (so commercial English `PC` comes before internal `ST`).
/// `PAL`→`PF` and `FT2`→`FTK` are listed in the reference but `model::Uom` has no pallet or square
/// foot, so quantities in them are refused with an error naming the unit.
pub const DEFAULT_PAIRS: &[(&str, &str)] = &[
    ("PC", "PCE"),
    ("ST", "PCE"),
    ("EA", "EA"),
    ("KG", "KGM"),
    ("G", "GRM"),
    ("TO", "TNE"),
    ("LB", "LBR"),
    ("L", "LTR"),
    ("ML", "MLT"),
    ("M3", "MTQ"),
    ("M", "MTR"),
    ("CM", "CMT"),
    ("MM", "MMT"),
    ("M2", "MTK"),
    ("CAR", "CT"),
    ("BOX", "BX"),
    ("PAL", "PF"),
    ("DZ", "DZN"),
    ("PAA", "PR"),
    ("FT2", "FTK"),
];

/// The per-system unit table: SAP code (internal or commercial) ↔ ISO code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UomTable {
    pairs: Vec<(String, String)>,
}

impl Default for UomTable {
    fn default() -> Self {
        Self::new(DEFAULT_PAIRS.iter().map(|(s, i)| ((*s).to_owned(), (*i).to_owned())))
    }
}

impl UomTable {
    /// A table from `(sap_code, iso_code)` pairs, e.g. read from the system's configuration.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { pairs: pairs.into_iter().collect() }
    }

    /// The ISO code of an SAP unit code, `None` when the table does not know it.
    pub fn to_iso(&self, sap_code: &str) -> Option<&str> {
        self.pairs.iter().find(|(s, _)| s == sap_code).map(|(_, i)| i.as_str())
    }

    /// The SAP code to send for a unit (first table row with its ISO code).
    pub fn to_sap(&self, uom: Uom) -> Option<&str> {
        self.pairs.iter().find(|(_, i)| i == uom.code()).map(|(s, _)| s.as_str())
    }

    /// The unit of an SAP (internal or commercial) code, through its ISO code.
    pub fn sap_unit(&self, field: &str, sap_code: &str) -> Result<Uom, ParseError> {
        let iso = self.to_iso(sap_code.trim()).ok_or_else(|| {
            ParseError::new(field, sap_code, "is an SAP unit missing from the configured unit table (add its ISO code)")
        })?;
        Uom::parse(field, iso).map_err(|_| {
            ParseError::new(field, sap_code, format!("maps to ISO unit {iso}, which dingbridge does not support"))
        })
    }

    /// The unit of an ISO code as ORDERS IDocs carry it.
    pub fn iso_unit(&self, field: &str, iso_code: &str) -> Result<Uom, ParseError> {
        Uom::parse(field, iso_code.trim())
    }

    /// A quantity from a decimal string and an SAP unit code (OData, DELVRY IDocs).
    pub fn sap_quantity(&self, field: &str, value: &str, sap_code: &str) -> Result<Quantity, ParseError> {
        let unit = self.sap_unit(field, sap_code)?;
        Ok(Quantity::new(model::parse_decimal(field, value.trim())?, unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Decimal;

    #[test]
    fn commercial_internal_and_iso_codes_meet_at_the_iso_code() {
        let t = UomTable::default();
        assert_eq!(t.sap_unit("u", "PC").unwrap(), Uom::PCE);
        assert_eq!(t.sap_unit("u", "ST").unwrap(), Uom::PCE);
        assert_eq!(t.iso_unit("u", "PCE").unwrap(), Uom::PCE);
        assert_eq!(t.sap_unit("u", "KG").unwrap(), t.iso_unit("u", "KGM").unwrap());
        // Writes use the commercial code, not the internal one.
        assert_eq!(t.to_sap(Uom::PCE), Some("PC"));
        assert_eq!(t.to_sap(Uom::KGM), Some("KG"));
    }

    #[test]
    fn quantities_keep_their_exact_decimals() {
        let q = UomTable::default().sap_quantity("OrderQuantity", "37.500", "KG").unwrap();
        assert_eq!(q.value, Decimal::new(37_500, 3));
        assert_eq!(q.unit, Uom::KGM);
    }

    #[test]
    fn unknown_and_unsupported_units_are_named() {
        let t = UomTable::default();
        let e = t.sap_unit("VRKME", "BAG").unwrap_err();
        assert!(e.to_string().contains("BAG") && e.to_string().contains("unit table"), "{e}");
        let e = t.sap_unit("MEINS", "PAL").unwrap_err();
        assert!(e.to_string().contains("PF"), "{e}");
    }

    #[test]
    fn a_configured_table_overrides_the_defaults() {
        let t = UomTable::new([("ST".to_owned(), "EA".to_owned()), ("BAG".to_owned(), "PK".to_owned())]);
        assert_eq!(t.sap_unit("u", "ST").unwrap(), Uom::EA);
        assert_eq!(t.sap_unit("u", "BAG").unwrap(), Uom::PK);
        assert!(t.sap_unit("u", "PC").is_err());
    }
}
