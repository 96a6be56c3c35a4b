//! Salesforce record ids (reference A7 "Ids"): 15-character case-sensitive ids and their
//! 18-character case-insensitive form. Store and compare only the 18-character form.

/// Alphabet that turns each 5-bit group of "is uppercase" flags into one suffix character.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a Salesforce id: expected 15 letters and digits, or 18 ending in their case checksum")]
pub struct InvalidId {
    pub id: String,
}

/// The 18-character form of a 15- or 18-character id. An 18-character id gets its suffix
/// recomputed from the first 15 characters, so a lower-cased copy is repaired too.
pub fn normalize_id(id: &str) -> Result<String, InvalidId> {
    let valid = (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid {
        return Err(InvalidId { id: id.to_owned() });
    }
    let base = &id[..15];
    let mut out = String::with_capacity(18);
    out.push_str(base);
    for chunk in base.as_bytes().chunks(5) {
        let bits =
            chunk.iter().enumerate().fold(0usize, |acc, (i, b)| acc | (usize::from(b.is_ascii_uppercase()) << i));
        out.push(char::from(SUFFIX_ALPHABET[bits]));
    }
    Ok(out)
}

/// `id` exactly as Salesforce writes it: 15 characters, or 18 whose last three are the case
/// checksum of the first 15. Unlike [`normalize_id`] nothing is repaired: an input from outside
/// (an Outbound Message) with a wrong checksum is not an id Salesforce sent.
pub fn checked_id(id: &str) -> Result<&str, InvalidId> {
    let normalized = normalize_id(id)?;
    if id.len() == 18 && normalized != id {
        return Err(InvalidId { id: id.to_owned() });
    }
    Ok(id)
}

/// True when both ids name the same record (15 vs 18 characters).
pub fn same_id(a: &str, b: &str) -> bool {
    matches!((normalize_id(a), normalize_id(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pairs from the fixtures' scenario data (README.md: "All fixture ids carry valid suffixes").
    const KNOWN: &[&str] = &[
        "00D5g000004HkbrEAC",
        "0055g00000Dg7HkAAJ",
        "0015g00000HkAbCAAV",
        "0035g00000Lm9TqAAJ",
        "0065g00000Qx1ZpAAJ",
        "00T5g00000Ab12CEAR",
        "00U5g00000Xy34DEAR",
    ];

    #[test]
    fn fifteen_character_ids_get_the_fixture_suffix() {
        for id18 in KNOWN {
            assert_eq!(normalize_id(&id18[..15]).unwrap(), *id18);
            assert_eq!(normalize_id(id18).unwrap(), *id18);
        }
    }

    #[test]
    fn ids_differing_only_in_case_are_different_records() {
        assert!(same_id("0065g00000Qx1Zp", "0065g00000Qx1ZpAAJ"));
        assert!(!same_id("0065g00000qx1zp", "0065g00000Qx1ZpAAJ"));
    }

    #[test]
    fn checked_ids_keep_their_checksum() {
        for id18 in KNOWN {
            assert_eq!(checked_id(id18), Ok(*id18));
            assert_eq!(checked_id(&id18[..15]), Ok(&id18[..15]));
            // One letter's case flipped: the checksum no longer matches.
            let mut flipped = id18.to_string();
            flipped.replace_range(4..5, &id18[4..5].to_ascii_uppercase());
            if flipped != *id18 {
                assert!(checked_id(&flipped).is_err(), "{flipped}");
            }
        }
        for bad in ["", "0065g00000Qx1Z", "0065g00000Qx1ZpAA", "0065g00000Qx1Zp'OR", "0065g00000Qx1ZpAAJ0"] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert!(normalize_id("0065g00000Qx1Z").is_err());
        assert!(normalize_id("0065g00000Qx1Z-AAJ").is_err());
    }
}
