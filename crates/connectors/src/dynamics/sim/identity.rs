//! The Microsoft identity platform's side of the simulator: the tenant's OpenID Connect
//! discovery document (MSAL reads it before its first token request) and the tenant check the
//! token endpoint shares with it. Real Entra ID answers an unknown tenant with 400
//! `invalid_tenant` (AADSTS90002) on both.

use super::seed;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The simulated directory has one tenant; its id is the only tenant segment it resolves (a
/// client-credentials request must name the tenant, so `common`/`organizations` are not served).
pub(super) fn known_tenant(tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(seed::TENANT_ID)
}

pub(super) fn unknown_tenant(tenant: &str) -> Response {
    let description = format!(
        "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Trace ID: {}",
        uuid::Uuid::new_v4()
    );
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": "invalid_tenant",
            "error_description": description,
            "error_codes": [90002],
            "error_uri": "https://login.microsoftonline.com/error?code=90002"
        })),
    )
        .into_response()
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the endpoints of the tenant, on the
/// origin the client reached ([`sim::origin`]).
pub(super) fn openid_configuration(tenant: &str, headers: &HeaderMap) -> Response {
    if !known_tenant(tenant) {
        return unknown_tenant(tenant);
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let origin = sim::origin(host);
    let issuer = format!("https://login.microsoftonline.com/{}/v2.0", seed::TENANT_ID);
    axum::Json(json!({
        "token_endpoint": format!("{origin}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{origin}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{origin}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{origin}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{origin}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{origin}/{tenant}/kerberos"),
        "tenant_region_scope": "AS",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    }))
    .into_response()
}

/// `GET /common/discovery/instance`: the cloud's host aliases (MSAL asks before it looks in its
/// token cache, to match tokens cached under another alias of the same cloud).
pub(super) fn instance_discovery(headers: &HeaderMap) -> Response {
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let origin = sim::origin(host);
    axum::Json(json!({
        "tenant_discovery_endpoint": format!("{origin}/{}/v2.0/.well-known/openid-configuration", seed::TENANT_ID),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": "login.microsoftonline.com",
            "preferred_cache": "login.windows.net",
            "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"]
        }]
    }))
    .into_response()
}
