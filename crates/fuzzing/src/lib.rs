//! R20: the fuzz targets of every parser that reads what a caller sends the gateway, and of the
//! config file. Each target takes arbitrary bytes and must return (an error is fine) without
//! panicking, hanging or allocating without bound.
//!
//! The targets are plain functions so two drivers share them: `fuzz/` runs them under libFuzzer
//! (`cargo fuzz run <target>`, the long tier), and `tests/corpus.rs` runs every file of
//! `fuzz/corpus/<target>/` and every matching vendor fixture through them in `cargo test`, so a
//! crash once found stays fixed.

use connect::webhook::{WebhookSecret, WebhookVerifier, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use connectors::dingtalk::crypto::CallbackCrypto;
use connectors::dingtalk::stream::{Ack, Frame};
use http::{HeaderMap, HeaderValue};
use secrecy::SecretString;

/// A fuzz target: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target, by the name `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` use.
pub const TARGETS: &[(&str, Target)] = &[
    ("webhook_headers", webhook_headers),
    ("dingtalk_callback", dingtalk_callback),
    ("dingtalk_event", dingtalk_event),
    ("stream_frame", stream_frame),
    ("salesforce_outbound_message", salesforce_outbound_message),
    ("idoc_xml", idoc_xml),
    ("strict_json", strict_json),
    ("netsuite_user_event", netsuite_user_event),
    ("dataverse_webhook", dataverse_webhook),
    ("zoho_notification", zoho_notification),
    ("config_file", config_file),
];

/// Text targets see the bytes as UTF-8 (lossily): the HTTP layer hands parsers `&str` only
/// after decoding, but the decoder's replacement characters are inputs too.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Standard Webhooks: `webhook-id`, `-timestamp` and `-signature` headers, then the body, one
/// per line of the input.
pub fn webhook_headers(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let mut headers = HeaderMap::new();
    for name in [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE] {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let body = parts.next().unwrap_or_default();
    let Ok(secret) = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") else { return };
    let Ok(verifier) = WebhookVerifier::new([secret]) else { return };
    let now = jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let _ = verifier.verify(&headers, body, now);
}

/// The HTTP callback's envelope: signature check and AES-CBC decryption of `encrypt`.
pub fn dingtalk_callback(data: &[u8]) {
    let Ok(crypto) = CallbackCrypto::new("fuzz-token", "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij", "dingfuzzowner")
    else {
        return;
    };
    let input = text(data);
    let (signature, encrypt) = input.split_once('\n').unwrap_or(("", &input));
    let _ = crypto.verify_signature(signature, "1700000000000", "nonce", encrypt);
    let _ = crypto.decrypt(encrypt);
}

/// A decrypted callback event (or Stream event) read into a change.
pub fn dingtalk_event(data: &[u8]) {
    let input = text(data);
    let (topic, body) = input.split_once('\n').unwrap_or(("chat_update_title", &input));
    let _ = connectors::dingtalk::source::from_callback(topic, "fuzz-message", body);
}

/// A Stream-mode frame and its acknowledgement.
pub fn stream_frame(data: &[u8]) {
    let input = text(data);
    let _ = Frame::parse(&input);
    let _ = Ack::parse(&input);
}

pub fn salesforce_outbound_message(data: &[u8]) {
    let _ = connectors::salesforce::source::parse_outbound_message(&text(data));
}

pub fn idoc_xml(data: &[u8]) {
    let Ok(zone) = jiff::tz::TimeZone::get("Asia/Hong_Kong") else { return };
    let parser = connectors::sap::idoc::IdocParser::new(zone, connectors::sap::uom::UomTable::default());
    let _ = parser.parse(&text(data));
}

pub fn strict_json(data: &[u8]) {
    let _ = engine::json::parse_strict(data);
}

pub fn netsuite_user_event(data: &[u8]) {
    let _ = connectors::netsuite::source::parse_user_event(data);
}

pub fn dataverse_webhook(data: &[u8]) {
    let _ = connectors::dynamics::source::parse_webhook(data);
}

/// A Notifications API callback, and a workflow webhook checked with a secret.
pub fn zoho_notification(data: &[u8]) {
    let _ = connectors::zoho::source::Notification::parse(data);
    let secret = SecretString::from("fuzz-workflow-secret");
    let _ = connectors::zoho::source::WorkflowWebhook::parse_verified(data, &secret);
}

/// A whole config file, parsed and validated.
pub fn config_file(data: &[u8]) {
    let _ = engine::config::Config::from_toml(&text(data), "fuzz.toml");
}
