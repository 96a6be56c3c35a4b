//! Secret references: a config names where a secret lives (`{ env = "NAME" }` or
//! `{ file = "path" }`), never the secret itself. Reading them is phase 3, in the engine.

use super::error::{Code, ConfigError};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// `{ env = "NAME" }` or `{ file = "path" }`: where a secret lives, never the secret itself.
#[derive(Debug, Clone, Default)]
pub struct RawSecretRef {
    pub env: Option<String>,
    pub file: Option<String>,
    /// The secret was written in the file itself. Validation refuses it at its line (and goes on
    /// to the rest of the file); the value is not kept, so no message can show it.
    pub literal: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretTable {
    env: Option<String>,
    file: Option<String>,
}

impl<'de> Deserialize<'de> for RawSecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference `{ env = \"NAME\" }` or `{ file = \"path\" }`")
            }
            fn visit_str<E: de::Error>(self, _literal: &str) -> Result<RawSecretRef, E> {
                Ok(RawSecretRef { literal: true, ..RawSecretRef::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSecretRef, A::Error> {
                let table = RawSecretTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawSecretRef { env: table.env, file: table.file, literal: false })
            }
        }
        d.deserialize_any(V)
    }
}

/// One secret reference or a list of them (rotation).
#[derive(Debug, Clone)]
pub struct RawSecrets(pub Vec<RawSecretRef>);

impl<'de> Deserialize<'de> for RawSecrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSecrets;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference `{ env = \"NAME\" }` / `{ file = \"path\" }` or a list of them")
            }
            fn visit_str<E: de::Error>(self, _literal: &str) -> Result<RawSecrets, E> {
                Ok(RawSecrets(vec![RawSecretRef { literal: true, ..RawSecretRef::default() }]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSecrets, A::Error> {
                let one = RawSecretRef::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawSecrets(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawSecrets, A::Error> {
                let mut all = Vec::new();
                while let Some(one) = seq.next_element::<RawSecretRef>()? {
                    all.push(one);
                }
                Ok(RawSecrets(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a secret lives (never the secret itself), and where the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub location: SecretLocation,
    /// Byte range of the reference in the config text, for diagnostics.
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretLocation {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for SecretLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(v) => write!(f, "environment variable `{v}`"),
            Self::File(p) => write!(f, "file `{}`", p.display()),
        }
    }
}

/// Why a secret reference as written cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// The secret itself was written: refused, and its value blanked when the file is shown.
    #[error(
        "secrets are never written in the config: give `{{ env = \"NAME\" }}` (an environment variable) or \
         `{{ file = \"path\" }}` (a file) that holds it"
    )]
    Literal,
    #[error("give either `env` or `file`, not both")]
    Both,
    #[error("a secret reference needs `env` or `file`")]
    Neither,
    #[error("the variable name or path is empty")]
    Empty,
    /// `secret = []`: a key that takes a list of references (rotation) got none.
    #[error("the list of secrets is empty")]
    EmptyList,
}

impl SecretRef {
    /// The reference written at `span`, if it names exactly one non-empty place.
    pub fn from_raw(raw: &RawSecretRef, span: Range<usize>) -> Result<SecretRef, SecretRefError> {
        if raw.literal {
            return Err(SecretRefError::Literal);
        }
        let location = match (&raw.env, &raw.file) {
            (Some(v), None) if !v.trim().is_empty() => SecretLocation::Env(v.clone()),
            (None, Some(p)) if !p.trim().is_empty() => SecretLocation::File(PathBuf::from(p)),
            (Some(_), Some(_)) => return Err(SecretRefError::Both),
            (None, None) => return Err(SecretRefError::Neither),
            _ => return Err(SecretRefError::Empty),
        };
        Ok(SecretRef { location, span })
    }
}

impl SecretRefError {
    /// The diagnostic for the reference `what` written at `span`. A literal secret's span is
    /// blanked when the file is shown, so the value never reaches a terminal or a log.
    pub fn to_config_error(self, what: &str, span: Range<usize>) -> ConfigError {
        let error =
            ConfigError::new(Code::BadCredential, format!("{what}: {self}"), Some(span), "invalid secret reference")
                .with_help(
                "write `{ env = \"NAME\" }` or `{ file = \"/path/to/secret\" }`; secrets are never literal in config",
            );
        if self == SecretRefError::Literal {
            error.hiding_secret()
        } else {
            error
        }
    }
}
/// Why `token` is too weak to be the only thing guarding a URL, if it is: fewer than 22
/// characters (128 bits as URL-safe base64), characters that need escaping in a query, or a
/// value with almost no variety.
pub fn weak_capability(token: &str) -> Option<String> {
    const MIN_LEN: usize = 22;
    if token.len() < MIN_LEN {
        return Some(format!("{} characters, at least {MIN_LEN} are needed", token.len()));
    }
    if let Some(c) = token.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.~".contains(*c))) {
        return Some(format!("`{}` is not URL-safe", c.escape_default()));
    }
    let distinct: std::collections::BTreeSet<char> = token.chars().collect();
    (distinct.len() < 8).then(|| format!("only {} different characters", distinct.len()))
}
