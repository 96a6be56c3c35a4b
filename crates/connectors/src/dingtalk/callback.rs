//! The gateway's receiver for DingTalk encrypted HTTP event callbacks (reference §6.1–§6.4).
//!
//! Pure functions over the raw query string and body so the server can wrap them in whatever
//! HTTP framework it uses: [`open`] verifies, decrypts and parses one push, [`success_reply`]
//! builds the mandatory encrypted `success` answer.
//!
//! Replay: the reference specifies no timestamp window for callbacks and DingTalk itself mixes
//! second and millisecond timestamps, so a push is never refused for its age. The signature
//! binds the timestamp, and duplicates are the event pipeline's business (events are
//! idempotent downstream). A timestamp far from the local clock is only logged.

use super::crypto::{random_alnum, CallbackCrypto, CryptoError};
use serde_json::Value;

/// Values below this are epoch seconds (the Python sample), above it milliseconds (Java).
const SECONDS_CUTOFF: i64 = 100_000_000_000;
/// Skew beyond which a timestamp is worth a log line (not a refusal, see the module docs).
const SKEW_LOGGED_MS: i64 = 3_600_000;
const REPLY_NONCE_LEN: usize = 16;

/// `EventType` of URL verification (console save) and of third-party suite creation.
pub const CHECK_URL: &str = "check_url";
pub const CHECK_CREATE_SUITE_URL: &str = "check_create_suite_url";

/// One received push, as the HTTP layer saw it.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    /// Raw query string, with or without the leading `?`.
    pub query: &'a str,
    pub body: &'a [u8],
}

/// A verified, decrypted event.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackEvent {
    /// The plaintext's `EventType`.
    pub event_type: String,
    /// The whole decrypted JSON object, `EventType` included.
    pub payload: Value,
    /// URL verification (`check_url`, or `check_create_suite_url` for a third-party suite):
    /// nothing to process, just answer [`success_reply`] fast (DingTalk waits ≤ 1500 ms).
    pub is_check_url: bool,
}

/// Why a push was refused; [`CallbackError::http_status`] is the answer to send.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback request lacks the `{0}` query parameter; DingTalk sends msg_signature, timestamp and nonce")]
    MissingParameter(&'static str),
    #[error("callback body is not a JSON object with a string `encrypt` field: {0}")]
    MalformedBody(String),
    #[error("callback refused: {0}")]
    BadSignature(#[source] CryptoError),
    #[error("callback could not be decrypted: {0}")]
    Decrypt(#[source] CryptoError),
    #[error("decrypted callback is not a JSON object with a string `EventType`: {0}")]
    MalformedEvent(String),
}

impl CallbackError {
    /// 401 for a bad signature (the sender could not be authenticated), 400 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadSignature(_) => 401,
            Self::MissingParameter(_) | Self::MalformedBody(_) | Self::Decrypt(_) | Self::MalformedEvent(_) => 400,
        }
    }
}

/// The query parameters of §6.1, legacy spellings included.
struct SignedQuery {
    signature: String,
    timestamp: String,
    nonce: String,
}

impl SignedQuery {
    fn parse(query: &str) -> Result<Self, CallbackError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let (mut msg_signature, mut signature, mut timestamp, mut time_stamp, mut nonce) =
            (None, None, None, None, None);
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "msg_signature" => &mut msg_signature,
                "signature" => &mut signature,
                "timestamp" => &mut timestamp,
                "timeStamp" => &mut time_stamp,
                "nonce" => &mut nonce,
                _ => continue,
            };
            // First occurrence wins, as with most query parsers.
            slot.get_or_insert_with(|| value.into_owned());
        }
        Ok(Self {
            signature: msg_signature.or(signature).ok_or(CallbackError::MissingParameter("msg_signature"))?,
            timestamp: timestamp.or(time_stamp).ok_or(CallbackError::MissingParameter("timestamp"))?,
            nonce: nonce.ok_or(CallbackError::MissingParameter("nonce"))?,
        })
    }
}

/// Verifies the signature, decrypts (owner key checked) and parses one push. `now_ms` only
/// feeds a skew warning; see the module docs on replay.
pub fn open(crypto: &CallbackCrypto, req: &CallbackRequest<'_>, now_ms: i64) -> Result<CallbackEvent, CallbackError> {
    let query = SignedQuery::parse(req.query)?;
    let body: Value = serde_json::from_slice(req.body).map_err(|e| CallbackError::MalformedBody(e.to_string()))?;
    let encrypt = body
        .get("encrypt")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::MalformedBody("missing or non-string `encrypt`".to_owned()))?;

    crypto
        .verify_signature(&query.signature, &query.timestamp, &query.nonce, encrypt)
        .map_err(CallbackError::BadSignature)?;
    log_skew(&query.timestamp, now_ms);

    let plaintext = crypto.decrypt(encrypt).map_err(CallbackError::Decrypt)?;
    let payload: Value = serde_json::from_str(&plaintext).map_err(|e| CallbackError::MalformedEvent(e.to_string()))?;
    let event_type = payload
        .get("EventType")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::MalformedEvent("missing or non-string `EventType`".to_owned()))?
        .to_owned();
    let is_check_url = event_type == CHECK_URL || event_type == CHECK_CREATE_SUITE_URL;
    tracing::debug!(event_type = %event_type, owner_key = crypto.owner_key(), "DingTalk callback opened");
    Ok(CallbackEvent { event_type, payload, is_check_url })
}

/// The encrypted `success` body (§6.3) with a fresh nonce and a millisecond timestamp.
pub fn success_reply(crypto: &CallbackCrypto, now_ms: i64) -> Value {
    crypto.reply_success(&now_ms.to_string(), &random_alnum(REPLY_NONCE_LEN))
}

fn log_skew(timestamp: &str, now_ms: i64) {
    let Ok(ts) = timestamp.parse::<i64>() else {
        tracing::warn!(timestamp, "DingTalk callback timestamp is not a number; accepted (signature verified)");
        return;
    };
    let ts_ms = if ts < SECONDS_CUTOFF { ts.saturating_mul(1000) } else { ts };
    let skew_ms = now_ms.saturating_sub(ts_ms);
    if skew_ms.saturating_abs() > SKEW_LOGGED_MS {
        tracing::warn!(
            skew_ms,
            "DingTalk callback timestamp is far from the local clock; accepted (no replay window is specified)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_767_225_600_000;

    fn fixtures_dir() -> String {
        fixtures::fixture_path("dingtalk").display().to_string()
    }

    fn read_json(path: &str) -> Value {
        fixtures::read_json(path)
    }

    fn vectors() -> Vec<Value> {
        read_json(&format!("{}/callback_crypto_vectors.json", fixtures_dir()))["vectors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn crypto_of(v: &Value) -> CallbackCrypto {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        CallbackCrypto::new(&s("token"), &s("encoding_aes_key"), &s("owner_key")).expect("vector key")
    }

    /// (query, body) as DingTalk would send `plaintext`.
    fn seal(crypto: &CallbackCrypto, plaintext: &str, timestamp: &str, nonce: &str) -> (String, Vec<u8>) {
        let encrypt = crypto.encrypt(plaintext);
        let sig = crypto.signature(timestamp, nonce, &encrypt);
        let query = format!("msg_signature={sig}&timestamp={timestamp}&nonce={nonce}");
        (query, serde_json::to_vec(&serde_json::json!({ "encrypt": encrypt })).expect("body"))
    }

    fn http_event_fixtures() -> Vec<(String, Value)> {
        let dir = format!("{}/events", fixtures_dir());
        let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("list {dir}: {e}"))
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("http_") && name.ends_with(".json"))
            .map(|name| {
                let value = read_json(&format!("{dir}/{name}"));
                (name, value)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn every_http_event_fixture_round_trips_under_every_vector_key() {
        let fixtures = http_event_fixtures();
        assert!(fixtures.len() >= 9, "expected the http_* event fixtures, got {}", fixtures.len());
        for v in vectors() {
            let crypto = crypto_of(&v);
            for (name, payload) in &fixtures {
                let text = serde_json::to_string(payload).expect("serialise");
                let (query, body) = seal(&crypto, &text, "1767225600123", "nOnCe123");
                let event = open(&crypto, &CallbackRequest { query: &query, body: &body }, NOW_MS)
                    .unwrap_or_else(|e| panic!("{name} with vector {}: {e}", v["id"]));
                assert_eq!(&event.payload, payload, "{name}");
                assert_eq!(event.event_type, payload["EventType"].as_str().expect("EventType"), "{name}");
                assert_eq!(event.is_check_url, name == "http_check_url.json", "{name}");
            }
        }
    }

    #[test]
    fn recorded_requests_from_the_vectors_open() {
        let mut seen = 0;
        for v in vectors().into_iter().filter(|v| v["http_request_example"].is_object()) {
            let example = &v["http_request_example"];
            let path_and_query = example["path_and_query"].as_str().expect("path_and_query");
            let (_, query) = path_and_query.split_once('?').expect("has a query");
            let body = serde_json::to_vec(&example["body"]).expect("body");
            let event = open(&crypto_of(&v), &CallbackRequest { query, body: &body }, NOW_MS)
                .unwrap_or_else(|e| panic!("vector {}: {e}", v["id"]));
            let expected: Value = serde_json::from_str(v["plaintext"].as_str().expect("plaintext")).expect("json");
            assert_eq!(event.payload, expected);
            seen += 1;
        }
        assert_eq!(seen, 6);
    }

    #[test]
    fn check_url_and_suite_check_are_recognised() {
        let v = &vectors()[0];
        let crypto = crypto_of(v);
        for (text, expected) in [
            (r#"{"EventType":"check_url"}"#, true),
            (r#"{"EventType":"check_create_suite_url","Random":"x","TestSuiteKey":"suite4"}"#, true),
            (r#"{"EventType":"user_add_org","UserId":["u"]}"#, false),
        ] {
            let (query, body) = seal(&crypto, text, "1608001896814", "WL4PK6yA");
            let event = open(&crypto, &CallbackRequest { query: &query, body: &body }, NOW_MS).expect("opens");
            assert_eq!(event.is_check_url, expected, "{text}");
        }
    }

    #[test]
    fn legacy_parameter_spellings_and_leading_question_mark_are_accepted() {
        let crypto = crypto_of(&vectors()[3]);
        let encrypt = crypto.encrypt(r#"{"EventType":"check_url"}"#);
        let sig = crypto.signature("1767225600", "abc", &encrypt);
        let body = serde_json::to_vec(&serde_json::json!({ "encrypt": encrypt })).expect("body");
        let query = format!("?signature={sig}&timeStamp=1767225600&nonce=abc&extra=1");
        let event = open(&crypto, &CallbackRequest { query: &query, body: &body }, NOW_MS).expect("legacy spelling");
        assert!(event.is_check_url);
    }

    #[test]
    fn python_wrapped_body_opens() {
        let v = vectors().into_iter().find(|v| v["id"] == "gen-py-user-add-org").expect("vector");
        let raw = &v["python_sample_raw_output"];
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            raw["msg_signature_over_newline_text"].as_str().expect("sig"),
            v["timestamp"].as_str().expect("ts"),
            v["nonce"].as_str().expect("nonce"),
        );
        let body = serde_json::to_vec(&serde_json::json!({ "encrypt": raw["encrypt_with_newlines"] })).expect("body");
        let event = open(&crypto_of(&v), &CallbackRequest { query: &query, body: &body }, NOW_MS).expect("opens");
        assert_eq!(event.event_type, "user_add_org");
    }

    #[test]
    fn wrong_signature_is_refused_with_401() {
        let crypto = crypto_of(&vectors()[0]);
        let (query, body) = seal(&crypto, r#"{"EventType":"check_url"}"#, "1608001896814", "WL4PK6yA");
        let tampered = query.replace("timestamp=1608001896814", "timestamp=1608001896815");
        let err = open(&crypto, &CallbackRequest { query: &tampered, body: &body }, NOW_MS).expect_err("tampered");
        assert!(matches!(err, CallbackError::BadSignature(CryptoError::SignatureMismatch)), "{err:?}");
        assert_eq!(err.http_status(), 401);

        let other_token =
            CallbackCrypto::new("not-the-token", "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7", "ding6ccabc44d2c8d38b")
                .expect("key");
        let err = open(&other_token, &CallbackRequest { query: &query, body: &body }, NOW_MS).expect_err("token");
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn malformed_requests_are_400() {
        let crypto = crypto_of(&vectors()[0]);
        let (query, body) = seal(&crypto, r#"{"EventType":"check_url"}"#, "1608001896814", "WL4PK6yA");
        let cases: [(&str, &[u8], &str); 5] = [
            ("timestamp=1&nonce=x", &body, "msg_signature"),
            ("msg_signature=ab&nonce=x", &body, "timestamp"),
            ("msg_signature=ab&timestamp=1", &body, "nonce"),
            (&query, b"not json", "encrypt"),
            (&query, br#"{"encrypt": 5}"#, "encrypt"),
        ];
        for (q, b, mention) in cases {
            let err = open(&crypto, &CallbackRequest { query: q, body: b }, NOW_MS).expect_err("malformed");
            assert_eq!(err.http_status(), 400, "{err}");
            assert!(err.to_string().contains(mention) || matches!(err, CallbackError::MalformedBody(_)), "{err}");
        }
    }

    #[test]
    fn wrong_owner_key_is_a_400_decrypt_error() {
        let v = &vectors()[0];
        let sender = crypto_of(v);
        let receiver =
            CallbackCrypto::new("mryue", "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7", "dingOTHER").expect("key");
        let (query, body) = seal(&sender, r#"{"EventType":"check_url"}"#, "1608001896814", "n");
        let err = open(&receiver, &CallbackRequest { query: &query, body: &body }, NOW_MS).expect_err("owner key");
        assert!(matches!(err, CallbackError::Decrypt(CryptoError::OwnerKeyMismatch { .. })), "{err:?}");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn non_json_or_typeless_plaintext_is_malformed_event() {
        let crypto = crypto_of(&vectors()[0]);
        for text in ["success", r#"{"type":"finish"}"#, r#"{"EventType":7}"#] {
            let (query, body) = seal(&crypto, text, "1", "n");
            let err = open(&crypto, &CallbackRequest { query: &query, body: &body }, NOW_MS).expect_err(text);
            assert!(matches!(err, CallbackError::MalformedEvent(_)), "{text}: {err:?}");
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn old_timestamps_are_accepted() {
        // A 2015 timestamp (the suite vector) against a 2026 clock: no replay window is specified.
        let v = vectors().into_iter().find(|v| v["id"] == "official-check-create-suite-url").expect("vector");
        let example = &v["http_request_example"];
        let (_, query) = example["path_and_query"].as_str().expect("pq").split_once('?').expect("query");
        let body = serde_json::to_vec(&example["body"]).expect("body");
        let event = open(&crypto_of(&v), &CallbackRequest { query, body: &body }, NOW_MS).expect("accepted");
        assert!(event.is_check_url);
    }

    #[test]
    fn success_reply_is_fresh_and_valid() {
        let crypto = crypto_of(&vectors()[4]);
        let a = success_reply(&crypto, NOW_MS);
        let b = success_reply(&crypto, NOW_MS);
        assert_ne!(a["nonce"], b["nonce"], "fresh nonce each time");
        assert_eq!(a["timeStamp"], NOW_MS.to_string());
        let get = |k: &str| a[k].as_str().expect(k).to_owned();
        crypto.verify_signature(&get("msg_signature"), &get("timeStamp"), &get("nonce"), &get("encrypt")).expect("sig");
        assert_eq!(crypto.decrypt(&get("encrypt")).expect("decrypt"), "success");
    }
}
