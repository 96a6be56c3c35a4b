//! `[dingtalk.apps.NAME]`: a DingTalk internal app as the config writes it (credentials, cloud,
//! token API, pacing), its pure validation (`check`), and the OpenAPI client `run` builds from
//! it with the app secret read.

use super::openapi::{AppCredentials, OpenApi, OpenApiSettings, TokenEndpoint};
use connect::config::{span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader, SecretRef, S};
use connect::http::Outbound;
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `[dingtalk.apps.NAME]`: DingTalk internal apps (credentials and hosts), used by `dingtalk`
/// sources and `dingtalk_app` destinations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDingtalk {
    #[serde(default)]
    pub apps: BTreeMap<S<String>, RawDingtalkApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDingtalkApp {
    pub app_key: S<String>,
    pub app_secret: S<RawSecretRef>,
    pub agent_id: Option<S<i64>>,
    pub corp_id: Option<S<String>>,
    /// `mainland` (dingtalk.com, default) or `overseas` (dingtalk.io).
    pub region: Option<S<String>>,
    /// `new` (v1.0/oauth2/accessToken, default) or `old` (gettoken).
    pub token_api: Option<S<String>>,
    pub qps_per_api: Option<S<u32>>,
    /// Keep the app's directory (users, departments) in the store; default true.
    pub sync_directory: Option<S<bool>>,
}

/// Which DingTalk cloud an app lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DingtalkRegion {
    Mainland,
    Overseas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DingtalkTokenApi {
    New,
    Old,
}

/// `[dingtalk.apps.NAME]`.
#[derive(Debug, Clone)]
pub struct DingtalkAppConfig {
    pub name: String,
    pub app_key: String,
    pub app_secret: SecretRef,
    pub agent_id: Option<i64>,
    pub corp_id: Option<String>,
    pub region: DingtalkRegion,
    pub token_api: DingtalkTokenApi,
    pub qps_per_api: u32,
    /// Keep the directory in the store (full sync at start and daily, events in between).
    pub sync_directory: bool,
    /// Set by `--sim-endpoints`: both API hosts become this URL.
    pub base_url_override: Option<String>,
}

/// `[dingtalk.apps.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_app(diag: &mut Diagnostics, name: &S<String>, app: &RawDingtalkApp) -> Option<DingtalkAppConfig> {
    let n = name.get_ref();
    let mut ok = true;
    if app.app_key.get_ref().trim().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("dingtalk.apps.{n}.app_key is empty"),
            span(&app.app_key),
            "the app's AppKey (ClientID), e.g. dingxxxxxxxxxxxxxxxx",
        ));
        ok = false;
    }
    let app_secret = diag.secret(&app.app_secret, &format!("dingtalk.apps.{n}.app_secret"));
    let region = match app.region.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("mainland") => DingtalkRegion::Mainland,
        Some("overseas") => DingtalkRegion::Overseas,
        Some(other) => {
            diag.push(ConfigError::new(
                Code::UnknownChoice,
                format!("dingtalk.apps.{n}.region `{other}` is unknown"),
                app.region.as_ref().map(|s| s.span()),
                "`mainland` (dingtalk.com) or `overseas` (dingtalk.io)",
            ));
            ok = false;
            DingtalkRegion::Mainland
        }
    };
    let token_api = match app.token_api.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("new") => DingtalkTokenApi::New,
        Some("old") => DingtalkTokenApi::Old,
        Some(other) => {
            diag.push(ConfigError::new(
                Code::UnknownChoice,
                format!("dingtalk.apps.{n}.token_api `{other}` is unknown"),
                app.token_api.as_ref().map(|s| s.span()),
                "`new` (v1.0/oauth2/accessToken) or `old` (gettoken)",
            ));
            ok = false;
            DingtalkTokenApi::New
        }
    };
    let qps_per_api = app.qps_per_api.as_ref().map_or(20, |s| *s.get_ref());
    if qps_per_api == 0 {
        diag.push(ConfigError::new(
            Code::OutOfRange,
            format!("dingtalk.apps.{n}.qps_per_api must be at least 1"),
            app.qps_per_api.as_ref().map(|s| s.span()),
            "DingTalk's standard edition allows 20 per app per API",
        ));
        ok = false;
    }
    let app_secret = app_secret?;
    ok.then(|| DingtalkAppConfig {
        name: n.clone(),
        app_key: app.app_key.get_ref().clone(),
        app_secret,
        agent_id: app.agent_id.as_ref().map(|s| *s.get_ref()),
        corp_id: app.corp_id.as_ref().map(|s| s.get_ref().clone()),
        region,
        token_api,
        qps_per_api,
        sync_directory: app.sync_directory.as_ref().is_none_or(|s| *s.get_ref()),
        base_url_override: None,
    })
}

impl DingtalkAppConfig {
    /// The app secret; `None` when it is missing (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<Secret> {
        rs.get(&self.app_secret, &format!("the app secret of DingTalk app `{}`", self.name))
    }

    /// Hosts, token endpoint and pacing of the app (a simulator URL when overridden).
    /// `outbound` is the config's policy, which already lists the simulator's host under
    /// `--sim-endpoints`.
    pub fn openapi_settings(&self, timeout: Duration, outbound: &Outbound) -> OpenApiSettings {
        let mut settings = match (&self.base_url_override, self.region) {
            (Some(url), _) => OpenApiSettings::with_base(url),
            (None, DingtalkRegion::Mainland) => OpenApiSettings::mainland(),
            (None, DingtalkRegion::Overseas) => OpenApiSettings::overseas(),
        };
        settings.token_endpoint = match self.token_api {
            DingtalkTokenApi::New => TokenEndpoint::NewApi,
            DingtalkTokenApi::Old => TokenEndpoint::OldApi,
        };
        settings.qps_per_api = self.qps_per_api;
        settings.timeout = timeout;
        settings.outbound = outbound.clone();
        settings
    }

    /// The app's OpenAPI client: one token cache and one pacing per app, shared by its sources
    /// and destinations.
    pub fn build(
        &self,
        secret: &Secret,
        timeout: Duration,
        outbound: &Outbound,
        clock: &Arc<dyn Clock>,
    ) -> Result<OpenApi, ConfigError> {
        let credentials = AppCredentials {
            app_key: self.app_key.clone(),
            app_secret: secret.secret_string().clone(),
            agent_id: self.agent_id,
            corp_id: self.corp_id.clone(),
        };
        OpenApi::new(credentials, self.openapi_settings(timeout, outbound), clock.clone()).map_err(|e| {
            ConfigError::new(
                Code::InvalidValue,
                format!("DingTalk app `{}` cannot be built: {e}", self.name),
                Some(self.app_secret.span.clone()),
                "while building this app",
            )
        })
    }
}
