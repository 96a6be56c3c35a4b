//! `[sap.systems.NAME]`: an SAP S/4HANA system as the config writes it (OData host, client,
//! technical user, unit table, mutual TLS), its pure validation (`check`), and the client `run`
//! builds from it with the secrets read.

use super::auth::SapAuth;
use super::client::{SapClient, SapConfig};
use super::uom::{UomTable, DEFAULT_PAIRS};
use crate::erp_source::{ConnectionKey, ErpSourceRules, Push, PushKey, SourceCheck, SourceConnection};
use crate::registry::RawTables;
use connect::config::{
    is_base_url, require_https, span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader, SecretRef, S,
};
use connect::http::{ClientIdentity, HttpClient, HttpSettings, Outbound};
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The entity sets an `sap` source may watch (the OData spelling): those the source reads and
/// maps to a canonical record.
pub const SOURCE_OBJECTS: &[&str] = &["A_OutbDeliveryHeader", "A_PurchaseOrder", "A_PurchaseRequisitionHeader"];

/// `[sap.systems.NAME]`: SAP S/4HANA systems (OData host, client, technical user, unit table),
/// used by `sap` sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSap {
    #[serde(default)]
    pub systems: BTreeMap<S<String>, RawSapSystem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSapSystem {
    pub base_url: S<String>,
    pub sap_client: Option<S<String>>,
    pub user: S<String>,
    pub password: S<RawSecretRef>,
    /// Extra SAP unit code → ISO code entries, consulted before the defaults.
    pub units: Option<S<BTreeMap<S<String>, S<String>>>>,
    /// Mutual TLS: the client certificate (PEM, chain allowed) and its private key.
    pub client_cert: Option<S<RawSecretRef>>,
    pub client_key: Option<S<RawSecretRef>>,
}

/// `[sap.systems.NAME]`.
#[derive(Debug, Clone)]
pub struct SapSystemConfig {
    pub name: String,
    /// `https://host:port`, no path.
    pub base_url: String,
    /// `sap-client` (Mandant), three digits.
    pub sap_client: Option<String>,
    pub user: String,
    pub password: SecretRef,
    /// Extra `(SAP code, ISO code)` unit pairs, consulted before the defaults.
    pub units: Vec<(String, String)>,
    /// Mutual TLS: the client certificate and its key (both or neither).
    pub client_cert: Option<SecretRef>,
    pub client_key: Option<SecretRef>,
    /// Set by `--sim-endpoints`: the OData host becomes this URL.
    pub base_url_override: Option<String>,
}

/// An SAP system's password and, for mutual TLS, its client certificate.
pub struct SapSecrets {
    password: Secret,
    identity: Option<ClientIdentity>,
}

/// `[sap.systems.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_system(diag: &mut Diagnostics, name: &S<String>, system: &RawSapSystem) -> Option<SapSystemConfig> {
    let n = name.get_ref();
    let mut ok = true;
    let base_url = system.base_url.get_ref().trim().trim_end_matches('/').to_string();
    require_https(diag, &format!("sap.systems.{n}.base_url"), &system.base_url);
    // `SapConfig::new` takes the parsed URL: the same parse `run` does.
    if !is_base_url(&base_url) || base_url.parse().map(SapConfig::new).is_err() {
        diag.push(ConfigError::new(
            Code::BadAddress,
            format!("sap.systems.{n}.base_url `{}` is not an http(s) URL without a path", system.base_url.get_ref()),
            span(&system.base_url),
            "the Gateway host, e.g. https://s4.example.com.hk:44300 (the service paths are appended)",
        ));
        ok = false;
    }
    let sap_client = system.sap_client.as_ref().map(|s| s.get_ref().trim().to_string());
    if let (Some(client), Some(s)) = (&sap_client, &system.sap_client) {
        if client.len() != 3 || !client.chars().all(|c| c.is_ascii_digit()) {
            diag.push(ConfigError::new(
                Code::BadName,
                format!("sap.systems.{n}.sap_client `{}` is not an SAP client", s.get_ref()),
                span(s),
                "three digits, e.g. \"100\" (a string, to keep leading zeros)",
            ));
            ok = false;
        }
    }
    if system.user.get_ref().trim().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("sap.systems.{n}.user is empty"),
            span(&system.user),
            "the technical user the OData services run as",
        ));
        ok = false;
    }
    let password = diag.secret(&system.password, &format!("sap.systems.{n}.password"));
    // Mutual TLS needs both halves; each is read (and the pair checked) when `run` builds.
    let client_cert = system.client_cert.as_ref().map(|s| diag.secret(s, &format!("sap.systems.{n}.client_cert")));
    let client_key = system.client_key.as_ref().map(|s| diag.secret(s, &format!("sap.systems.{n}.client_key")));
    match (&system.client_cert, &system.client_key) {
        (Some(given), None) | (None, Some(given)) => {
            let (set, missing) = if system.client_cert.is_some() {
                ("client_cert", "client_key")
            } else {
                ("client_key", "client_cert")
            };
            diag.push(ConfigError::new(
                Code::KeyConflict,
                format!("sap.systems.{n}.{set} is set but {missing} is not"),
                span(given),
                format!("mutual TLS needs both: add {missing} = {{ file = \"...\" }}"),
            ));
            ok = false;
        }
        _ => {}
    }
    if matches!(client_cert, Some(None)) || matches!(client_key, Some(None)) {
        ok = false;
    }
    let mut units = Vec::new();
    for (sap_code, iso_code) in system.units.as_ref().map(|s| s.get_ref().iter()).into_iter().flatten() {
        let code = sap_code.get_ref().trim();
        if code.is_empty() || code.contains(char::is_whitespace) {
            diag.push(ConfigError::new(
                Code::BadName,
                format!("sap.systems.{n}.units has the unit code `{}`", sap_code.get_ref()),
                span(sap_code),
                "an SAP unit code (T006), e.g. ZCT",
            ));
            ok = false;
            continue;
        }
        let field = format!("sap.systems.{n}.units.{code}");
        if let Err(e) = model::Uom::parse(&field, iso_code.get_ref().trim()) {
            diag.push(ConfigError::new(
                Code::BadLocale,
                format!("{field} maps to `{}`, which is not a unit dingbridge knows: {e}", iso_code.get_ref()),
                span(iso_code),
                "an ISO (UN/ECE Rec 20) code, e.g. PCE, KGM, CT",
            ));
            ok = false;
            continue;
        }
        units.push((code.to_string(), iso_code.get_ref().trim().to_string()));
    }
    let password = password?;
    ok.then(|| SapSystemConfig {
        name: n.clone(),
        base_url,
        sap_client,
        user: system.user.get_ref().trim().to_string(),
        password,
        units,
        client_cert: client_cert.flatten(),
        client_key: client_key.flatten(),
        base_url_override: None,
    })
}

impl SapSystemConfig {
    /// The password and the mutual TLS identity; `None` when one is missing or unusable
    /// (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<SapSecrets> {
        let password = rs.get(&self.password, &format!("the password of SAP system `{}`", self.name));
        let identity = self.identity(rs);
        Some(SapSecrets { password: password?, identity: identity? })
    }

    /// `Some(None)` without mutual TLS, `Some(Some(identity))` with it, `None` when the
    /// certificate or key is missing or unusable (reported to `rs`).
    fn identity(&self, rs: &mut SecretReader<'_>) -> Option<Option<ClientIdentity>> {
        let name = &self.name;
        let (Some(cert_ref), Some(key_ref)) = (&self.client_cert, &self.client_key) else {
            return Some(None);
        };
        let cert = rs.get(cert_ref, &format!("the client certificate of SAP system `{name}`"));
        let key = rs.get(key_ref, &format!("the client key of SAP system `{name}`"));
        let (cert, key) = (cert?, key?);
        match ClientIdentity::from_pem(cert.expose().as_bytes(), key.expose().as_bytes()) {
            Ok(identity) => Some(Some(identity)),
            Err(e) => {
                rs.errors.push(ConfigError::new(
                    Code::BadCredential,
                    format!("SAP system `{name}`: {e}"),
                    Some(cert_ref.span.clone()),
                    "expected a PEM certificate (-----BEGIN CERTIFICATE-----) and its private key",
                ));
                None
            }
        }
    }

    /// The system's client on `http` (shared with the other ERP connections), or on a client
    /// of its own when it presents a client certificate.
    pub fn build(
        &self,
        secrets: SapSecrets,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
    ) -> Result<SapClient, ConfigError> {
        let name = &self.name;
        let SapSecrets { password, identity } = secrets;
        // A client certificate is the system's own: its client has its own pool.
        let http = match identity {
            None => http.clone(),
            Some(identity) => {
                let own = HttpSettings {
                    outbound: Outbound { identity: Some(identity), ..http.settings().outbound.clone() },
                    ..http.settings().clone()
                };
                HttpClient::new(own).map_err(|e| {
                    ConfigError::new(
                        Code::BadCredential,
                        format!("SAP system `{name}`: {e}"),
                        self.client_cert.as_ref().map(|r| r.span.clone()),
                        "while building this system's mutual TLS client",
                    )
                })?
            }
        };
        let base = self.base_url_override.as_deref().unwrap_or(&self.base_url).trim_end_matches('/');
        let mut config = match base.parse() {
            Ok(url) => SapConfig::new(url),
            Err(e) => {
                return Err(ConfigError::new(
                    Code::BadAddress,
                    format!("SAP system `{name}`: `{base}` is not a URL ({e})"),
                    Some(self.password.span.clone()),
                    "while building this system",
                ));
            }
        };
        config.sap_client = self.sap_client.clone();
        // The system's own entries first: lookups take the first match, so they win.
        let pairs =
            self.units.iter().cloned().chain(DEFAULT_PAIRS.iter().map(|(s, i)| ((*s).to_string(), (*i).to_string())));
        let auth = SapAuth::Basic { user: self.user.clone(), password: password.into_secret_string() };
        Ok(SapClient::new(http, auth, config, UomTable::new(pairs), clock.clone()))
    }
}

/// How an `sap` source differs from the other ERP sources: it names a system, and ECC sends
/// IDocs, to a watched folder (`idoc_folder`) and/or over HTTP with `idoc_user` +
/// `idoc_password`.
pub struct SourceRules;

impl ErpSourceRules for SourceRules {
    fn connection(&self) -> SourceConnection {
        SourceConnection { key: ConnectionKey::System, what: "SAP system", path: "sap.systems" }
    }

    fn connection_names(&self, tables: &RawTables<'_>) -> Vec<String> {
        tables.sap.systems.keys().map(|k| k.get_ref().clone()).collect()
    }

    fn push(&self) -> Push {
        Push {
            keys: &[PushKey::IdocFolder, PushKey::IdocUser, PushKey::IdocPassword],
            instead_of_webhook: "sap sources authenticate IDocs with idoc_user + idoc_password",
            instead_of_others: "SAP sends IDocs: use idoc_folder and/or idoc_user + idoc_password",
            no_intake: "add idoc_folder, idoc_user + idoc_password, and/or poll = \"5m\"",
        }
    }

    /// `idoc_user` and `idoc_password` go together: IDocs over HTTP are accepted only with both.
    fn check(&self, diag: &mut Diagnostics, source: &SourceCheck<'_>) -> bool {
        let n = source.name;
        match (source.keys.idoc_user, source.keys.idoc_password) {
            (Some(user), None) => {
                diag.push(ConfigError::new(
                    Code::KeyConflict,
                    format!("sources.{n}.idoc_user is set but idoc_password is not"),
                    span(user),
                    "add idoc_password = { env = \"...\" }: IDocs are accepted only with both",
                ));
                false
            }
            (None, Some(password)) => {
                diag.push(ConfigError::new(
                    Code::KeyConflict,
                    format!("sources.{n}.idoc_password is set but idoc_user is not"),
                    span(password),
                    "add idoc_user = \"...\" (the ECC port's HTTP Basic user)",
                ));
                false
            }
            _ => true,
        }
    }
}
