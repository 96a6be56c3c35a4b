//! `[dynamics.orgs.NAME]`: a Dynamics 365 tenant as the config writes it (app registration,
//! Dataverse and/or Business Central), its pure validation (`check`), and the clients `run`
//! builds from it with the client secret read.

use super::auth::{token_cache, AadTokenFetcher, AppCredentials, DEFAULT_AUTHORITY};
use super::bc::{BcClient, BC_CONCURRENCY, BC_HOST};
use super::client::{DataverseClient, ODataTransport, DATAVERSE_CONCURRENCY};
use crate::erp_source::{ConnectionKey, ErpSourceRules, Push, PushKey, SourceCheck, SourceConnection};
use crate::registry::RawTables;
use connect::config::{
    is_base_url, require_https, span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader, SecretRef, S,
};
use connect::http::HttpClient;
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The objects a `dynamics` source may watch (the service's spelling).
pub const SOURCE_OBJECTS: &[&str] = &["salesorder", "purchaseOrders"];
/// The objects read from Dataverse; the rest come from Business Central.
const DATAVERSE_OBJECTS: &[&str] = &["salesorder"];

/// `[dynamics.orgs.NAME]`: Microsoft Dynamics 365 tenants (app registration, Dataverse and/or
/// Business Central), used by `dynamics` sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDynamics {
    #[serde(default)]
    pub orgs: BTreeMap<S<String>, RawDynamicsOrg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDynamicsOrg {
    pub tenant_id: S<String>,
    pub client_id: S<String>,
    pub client_secret: S<RawSecretRef>,
    pub authority: Option<S<String>>,
    pub dataverse_url: Option<S<String>>,
    pub bc_environment: Option<S<String>>,
    pub bc_company: Option<S<String>>,
}

/// `[dynamics.orgs.NAME]`.
#[derive(Debug, Clone)]
pub struct DynamicsOrgConfig {
    pub name: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// The Microsoft identity platform host, `https://login.microsoftonline.com` by default.
    pub authority: String,
    /// `https://{org}.crm5.dynamics.com`: Dataverse reads (and the token resource).
    pub dataverse_url: Option<String>,
    /// Business Central environment (`Production`, `Sandbox`, …) and company id.
    pub bc_environment: Option<String>,
    pub bc_company: Option<String>,
    /// Set by `--sim-endpoints`: the authority, the Dataverse URL and the BC host become this URL.
    pub base_url_override: Option<String>,
}

/// The clients of one Dynamics org: Dataverse and/or Business Central, each with its own token
/// cache (a token is valid for one resource only).
#[derive(Debug, Clone)]
pub struct DynamicsClients {
    pub dataverse: Option<Arc<DataverseClient>>,
    pub bc: Option<Arc<BcClient>>,
    /// The Business Central company the BC objects are read from.
    pub bc_company: Option<String>,
}

/// `[dynamics.orgs.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_org(diag: &mut Diagnostics, name: &S<String>, org: &RawDynamicsOrg) -> Option<DynamicsOrgConfig> {
    let n = name.get_ref();
    let mut ok = true;
    let tenant_id = org.tenant_id.get_ref().trim().to_string();
    if tenant_id.is_empty() || tenant_id.contains(|c: char| c == '/' || c.is_whitespace()) {
        diag.push(ConfigError::new(
            Code::BadName,
            format!("dynamics.orgs.{n}.tenant_id `{}` is not a tenant id", org.tenant_id.get_ref()),
            span(&org.tenant_id),
            "the Directory (tenant) ID GUID, or a verified domain such as contoso.onmicrosoft.com",
        ));
        ok = false;
    }
    if org.client_id.get_ref().trim().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("dynamics.orgs.{n}.client_id is empty"),
            span(&org.client_id),
            "the app registration's Application (client) ID",
        ));
        ok = false;
    }
    let client_secret = diag.secret(&org.client_secret, &format!("dynamics.orgs.{n}.client_secret"));
    let mut base_url = |diag: &mut Diagnostics, key: &str, v: &S<String>, example: &str| {
        let url = v.get_ref().trim().trim_end_matches('/').to_string();
        require_https(diag, &format!("dynamics.orgs.{n}.{key}"), v);
        if !is_base_url(&url) {
            diag.push(ConfigError::new(
                Code::BadAddress,
                format!("dynamics.orgs.{n}.{key} `{}` is not an http(s) URL without a path", v.get_ref()),
                span(v),
                format!("e.g. {example}"),
            ));
            ok = false;
        }
        url
    };
    let authority = match &org.authority {
        Some(s) => base_url(diag, "authority", s, DEFAULT_AUTHORITY),
        None => DEFAULT_AUTHORITY.to_string(),
    };
    let dataverse_url =
        org.dataverse_url.as_ref().map(|s| base_url(diag, "dataverse_url", s, "https://contoso.crm5.dynamics.com"));
    let bc_environment = org.bc_environment.as_ref().map(|s| s.get_ref().trim().to_string());
    if let (Some(env), Some(s)) = (&bc_environment, &org.bc_environment) {
        if env.is_empty() || env.contains(|c: char| c == '/' || c.is_whitespace()) {
            diag.push(ConfigError::new(
                Code::BadName,
                format!("dynamics.orgs.{n}.bc_environment `{}` is not an environment name", s.get_ref()),
                span(s),
                "the Business Central environment, e.g. Production or Sandbox",
            ));
            ok = false;
        }
    }
    let bc_company = org.bc_company.as_ref().map(|s| s.get_ref().trim().to_string());
    match (&org.bc_environment, &org.bc_company) {
        (Some(env), None) => {
            diag.push(ConfigError::new(
                Code::KeyConflict,
                format!("dynamics.orgs.{n}.bc_environment is set but bc_company is not"),
                span(env),
                "add bc_company = \"<company id>\" (GET …/api/v2.0/companies lists them)",
            ));
            ok = false;
        }
        (None, Some(company)) => {
            diag.push(ConfigError::new(
                Code::KeyConflict,
                format!("dynamics.orgs.{n}.bc_company is set but bc_environment is not"),
                span(company),
                "add bc_environment = \"Production\" (or the environment the company lives in)",
            ));
            ok = false;
        }
        (Some(_), Some(company)) if company.get_ref().trim().is_empty() => {
            diag.push(ConfigError::new(
                Code::EmptyValue,
                format!("dynamics.orgs.{n}.bc_company is empty"),
                span(company),
                "the Business Central company id (a GUID)",
            ));
            ok = false;
        }
        (None, None) if org.dataverse_url.is_none() => {
            diag.push(ConfigError::new(
                Code::MissingKey,
                format!("dynamics.orgs.{n} has neither `dataverse_url` nor `bc_environment`"),
                Some(name.span()),
                "add dataverse_url (Dataverse) and/or bc_environment + bc_company (Business Central)",
            ));
            ok = false;
        }
        _ => {}
    }
    let client_secret = client_secret?;
    ok.then(|| DynamicsOrgConfig {
        name: n.clone(),
        tenant_id,
        client_id: org.client_id.get_ref().trim().to_string(),
        client_secret,
        authority,
        dataverse_url,
        bc_environment,
        bc_company,
        base_url_override: None,
    })
}

impl DynamicsOrgConfig {
    /// The app registration's client secret; `None` when it is missing (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<Secret> {
        rs.get(&self.client_secret, &format!("the client secret of Dynamics org `{}`", self.name))
    }

    /// The Dataverse and Business Central clients of the org on `http` (shared with the other
    /// ERP connections), each with its own token cache: a token is valid for one resource only.
    pub fn build(
        &self,
        secret: Secret,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
    ) -> Result<DynamicsClients, ConfigError> {
        self.clients(secret, http, clock).map_err(|e| {
            ConfigError::new(
                Code::InvalidValue,
                format!("Dynamics org `{}` cannot be built: {e}", self.name),
                Some(self.client_secret.span.clone()),
                "while building this org",
            )
        })
    }

    fn clients(
        &self,
        secret: Secret,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
    ) -> Result<DynamicsClients, connect::DeliveryError> {
        let credentials = AppCredentials {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: secret.into_secret_string(),
        };
        let authority = self.base_url_override.as_deref().unwrap_or(&self.authority);
        let dataverse = match &self.dataverse_url {
            Some(url) => {
                // The simulator serves Dataverse at its own URL, which is then also the resource.
                let url = self.base_url_override.as_deref().unwrap_or(url);
                let fetcher = AadTokenFetcher::new(http.clone(), authority, &credentials, url, clock.clone())?;
                let transport = ODataTransport::new(
                    http.clone(),
                    token_cache(fetcher, clock.clone()),
                    clock.clone(),
                    DATAVERSE_CONCURRENCY,
                );
                Some(Arc::new(DataverseClient::new(transport, url)?))
            }
            None => None,
        };
        let bc = match &self.bc_environment {
            Some(environment) => {
                let host = self.base_url_override.as_deref().unwrap_or(BC_HOST);
                let resource = super::BC_RESOURCE;
                let fetcher = AadTokenFetcher::new(http.clone(), authority, &credentials, resource, clock.clone())?;
                let transport = ODataTransport::new(
                    http.clone(),
                    token_cache(fetcher, clock.clone()),
                    clock.clone(),
                    BC_CONCURRENCY,
                );
                Some(Arc::new(BcClient::new(transport, host, &self.tenant_id, environment)?))
            }
            None => None,
        };
        Ok(DynamicsClients { dataverse, bc, bc_company: self.bc_company.clone() })
    }
}

/// Which services a Dynamics org has, as written (the org may have failed validation: a source
/// naming it is still checked against what it declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Services {
    /// `dataverse_url` is set.
    dataverse: bool,
    /// `bc_environment` is set.
    bc: bool,
}

/// `DB0125` for each object of source `source` that org `org` cannot serve: Dataverse objects
/// need its `dataverse_url`, Business Central ones its `bc_environment`. Objects that are not
/// [`SOURCE_OBJECTS`], and repeats, are reported where the list is checked and skipped here.
/// True when every object is served.
fn check_source_services(
    diag: &mut Diagnostics,
    source: &str,
    org: &str,
    services: Services,
    objects: &S<Vec<S<String>>>,
) -> bool {
    let mut served = true;
    let mut seen: Vec<&str> = Vec::new();
    for o in objects.get_ref() {
        let object = o.get_ref().as_str();
        if !SOURCE_OBJECTS.contains(&object) || seen.contains(&object) {
            continue;
        }
        seen.push(object);
        let (has, service, key) = if DATAVERSE_OBJECTS.contains(&object) {
            (services.dataverse, "Dataverse", "dataverse_url")
        } else {
            (services.bc, "Business Central", "bc_environment")
        };
        if !has {
            diag.push(ConfigError::new(
                Code::BadConnection,
                format!("object `{object}` of source `{source}` is read from {service}, but dynamics org `{org}` has no `{key}`"),
                span(o),
                format!("add {key} to [dynamics.orgs.{org}]"),
            ));
            served = false;
        }
    }
    served
}

/// How a `dynamics` source differs from the other ERP sources: it names an org, its pushes
/// (Dataverse webhooks) carry `webhook_secret` as their `x-dingbridge-key`, and the org must have
/// the service each watched object is read from.
pub struct SourceRules;

impl ErpSourceRules for SourceRules {
    fn connection(&self) -> SourceConnection {
        SourceConnection { key: ConnectionKey::Org, what: "Dynamics org", path: "dynamics.orgs" }
    }

    fn connection_names(&self, tables: &RawTables<'_>) -> Vec<String> {
        tables.dynamics.orgs.keys().map(|k| k.get_ref().clone()).collect()
    }

    fn push(&self) -> Push {
        Push {
            keys: &[PushKey::WebhookSecret],
            instead_of_webhook: "ERP pushes are authenticated with webhook_secret",
            instead_of_others: "only `sap` sources take it (IDoc intake)",
            no_intake: "add webhook_secret = { env = \"...\" } and/or poll = \"5m\"",
        }
    }

    /// The org serves every watched object (`check_source_services`).
    fn check(&self, diag: &mut Diagnostics, source: &SourceCheck<'_>) -> bool {
        let (Some(org), Some(objects)) = (source.connection, source.keys.objects) else {
            return true;
        };
        let services = source.tables.dynamics.orgs.iter().find(|(name, _)| name.get_ref() == org).map_or(
            Services { dataverse: true, bc: true },
            |(_, o)| Services { dataverse: o.dataverse_url.is_some(), bc: o.bc_environment.is_some() },
        );
        check_source_services(diag, source.name, org, services, objects)
    }
}
