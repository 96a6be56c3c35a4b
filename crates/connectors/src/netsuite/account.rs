//! The two spellings of one NetSuite account id (reference B1): the hostname wants lowercase
//! with hyphens (`1234567-sb1`), the TBA realm and SOAP `account` want uppercase with
//! underscores (`1234567_SB1`). Mixing them up answers `INVALID_LOGIN`, so both come from here.

/// A NetSuite account id such as `1234567`, `1234567_SB1` or `TSTDRV1234567`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountId(String);

impl AccountId {
    /// Accepts either spelling; `None` when the text has characters no account id has.
    pub fn parse(text: &str) -> Option<AccountId> {
        let text = text.trim();
        let valid = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        valid.then(|| AccountId(text.replace('-', "_").to_ascii_uppercase()))
    }

    /// The realm / SOAP form: `1234567_SB1`.
    pub fn realm(&self) -> &str {
        &self.0
    }

    /// The hostname form: `1234567-sb1`.
    pub fn host_label(&self) -> String {
        self.0.replace('_', "-").to_ascii_lowercase()
    }

    /// `https://{host}.suitetalk.api.netsuite.com/services/rest` (no trailing slash).
    pub fn rest_base(&self) -> String {
        format!("https://{}.suitetalk.api.netsuite.com/services/rest", self.host_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_come_from_either_input() {
        for input in ["1234567_SB1", "1234567-sb1", " 1234567_sb1 "] {
            let id = AccountId::parse(input).unwrap();
            assert_eq!(id.realm(), "1234567_SB1");
            assert_eq!(id.host_label(), "1234567-sb1");
        }
        assert_eq!(AccountId::parse("tstdrv1234567").unwrap().realm(), "TSTDRV1234567");
        assert_eq!(
            AccountId::parse("1234567").unwrap().rest_base(),
            "https://1234567.suitetalk.api.netsuite.com/services/rest"
        );
        assert_eq!(AccountId::parse("12 34"), None);
        assert_eq!(AccountId::parse(""), None);
    }
}
