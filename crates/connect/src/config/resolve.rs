//! Reading the secrets a config names (phase 3): every connection asks for its own through a
//! [`SecretReader`], which records every missing one so `run` reports them all at once.
//!
//! Nothing here touches the environment or a file itself: the [`SecretResolver`] passed in does
//! (the engine's reads the process environment and the filesystem; tests inject their own).

use super::error::{Code, ConfigError};
use super::secret::{SecretLocation, SecretRef};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::Path;

/// Looks a secret up. Production reads the process environment and files; tests inject.
pub trait SecretResolver {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
}

/// A resolved secret. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn secret_string(&self) -> &SecretString {
        &self.0
    }

    pub fn into_secret_string(self) -> SecretString {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads secret references through a resolver and collects what went wrong, each at the
/// reference's place in the file.
pub struct SecretReader<'a> {
    resolver: &'a dyn SecretResolver,
    /// Missing secrets, and secrets that are present but unusable (a bad PEM, a weak token).
    pub errors: Vec<ConfigError>,
}

impl<'a> SecretReader<'a> {
    pub fn new(resolver: &'a dyn SecretResolver) -> Self {
        Self { resolver, errors: Vec::new() }
    }

    /// The secret `r` names, or `None` after recording why not (`DB0109`); `what` names it in
    /// the message ("the webhook secret of source `orders`").
    pub fn get(&mut self, r: &SecretRef, what: &str) -> Option<Secret> {
        let value = match &r.location {
            SecretLocation::Env(name) => match self.resolver.env(name) {
                Some(v) => v,
                None => {
                    self.errors.push(
                        ConfigError::new(
                            Code::MissingSecret,
                            format!("{what}: environment variable `{name}` is not set"),
                            Some(r.span.clone()),
                            format!("reads `{name}`"),
                        )
                        .with_help(format!("export {name}=... before starting dingbridge")),
                    );
                    return None;
                }
            },
            SecretLocation::File(path) => match self.resolver.file(path) {
                Ok(v) => v.trim_end_matches(['\r', '\n']).to_string(),
                Err(e) => {
                    self.errors.push(ConfigError::new(
                        Code::MissingSecret,
                        format!("{what}: cannot read secret file `{}`: {e}", path.display()),
                        Some(r.span.clone()),
                        "secret file unreadable",
                    ));
                    return None;
                }
            },
        };
        if value.is_empty() {
            self.errors.push(ConfigError::new(
                Code::MissingSecret,
                format!("{what}: the {} is empty", r.location),
                Some(r.span.clone()),
                "empty secret",
            ));
            return None;
        }
        Some(Secret::new(value))
    }
}
