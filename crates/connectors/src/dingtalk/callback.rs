//! The gateway's receiver for DingTalk encrypted HTTP event callbacks (reference §6.1–§6.4).
//!
//! Pure functions over the raw query string and body so the server can wrap them in whatever
//! HTTP framework it uses: [`open`] verifies, decrypts and parses one push, [`success_reply`]
//! builds the mandatory encrypted `success` answer.
//!
//! Replay: the signature binds `timestamp` and `nonce`, so [`ReplayGuard`] refuses a push whose
//! timestamp is more than [`REPLAY_WINDOW_MS`] from the local clock (either way; DingTalk mixes
//! second and millisecond timestamps, both are read) and one whose `(timestamp, nonce)` was
//! already accepted inside that window. A captured push therefore cannot be sent again later;
//! within the window the event pipeline's dedup keys make a resend a duplicate anyway.

use super::crypto::{random_alnum, CallbackCrypto, CryptoError};
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Values below this are epoch seconds (the Python sample), above it milliseconds (Java).
const SECONDS_CUTOFF: i64 = 100_000_000_000;
/// How far a push's timestamp may be from the local clock, either way.
pub const REPLAY_WINDOW_MS: i64 = 5 * 60 * 1000;
/// `(timestamp, nonce)` pairs remembered at most: 1,000 pushes a second for the whole window
/// and then some. Past it the oldest are forgotten first (a resend of one of those is still a
/// duplicate event downstream, never a second effect).
const REPLAY_MEMORY: usize = 1 << 20;
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
    /// The signed `timestamp` and `nonce` of the request, for [`ReplayGuard`].
    pub timestamp: String,
    pub nonce: String,
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
    #[error(
        "callback timestamp `{timestamp}` is not within 5 minutes of the local clock; a replay, or the clock is off"
    )]
    Stale { timestamp: String },
    #[error("callback (timestamp {timestamp}, nonce {nonce}) was already accepted: a replay")]
    Replayed { timestamp: String, nonce: String },
}

impl CallbackError {
    /// 401 for a bad signature (the sender could not be authenticated), 400 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadSignature(_) => 401,
            Self::MissingParameter(_)
            | Self::MalformedBody(_)
            | Self::Decrypt(_)
            | Self::MalformedEvent(_)
            | Self::Stale { .. }
            | Self::Replayed { .. } => 400,
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

/// Verifies the signature, decrypts (owner key checked) and parses one push. Freshness is
/// [`ReplayGuard`]'s business.
pub fn open(crypto: &CallbackCrypto, req: &CallbackRequest<'_>) -> Result<CallbackEvent, CallbackError> {
    let query = SignedQuery::parse(req.query)?;
    let body: Value = serde_json::from_slice(req.body).map_err(|e| CallbackError::MalformedBody(e.to_string()))?;
    let encrypt = body
        .get("encrypt")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::MalformedBody("missing or non-string `encrypt`".to_owned()))?;

    crypto
        .verify_signature(&query.signature, &query.timestamp, &query.nonce, encrypt)
        .map_err(CallbackError::BadSignature)?;

    let plaintext = crypto.decrypt(encrypt).map_err(CallbackError::Decrypt)?;
    let payload: Value = serde_json::from_str(&plaintext).map_err(|e| CallbackError::MalformedEvent(e.to_string()))?;
    let event_type = payload
        .get("EventType")
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::MalformedEvent("missing or non-string `EventType`".to_owned()))?
        .to_owned();
    let is_check_url = event_type == CHECK_URL || event_type == CHECK_CREATE_SUITE_URL;
    tracing::debug!(event_type = %event_type, owner_key = crypto.owner_key(), "DingTalk callback opened");
    Ok(CallbackEvent { event_type, payload, is_check_url, timestamp: query.timestamp, nonce: query.nonce })
}

/// The encrypted `success` body (§6.3) with a fresh nonce and a millisecond timestamp.
pub fn success_reply(crypto: &CallbackCrypto, now_ms: i64) -> Value {
    crypto.reply_success(&now_ms.to_string(), &random_alnum(REPLY_NONCE_LEN))
}

/// Refuses stale and replayed pushes of one callback subscription (see the module docs). One
/// per source and process; the memory is bounded by [`REPLAY_MEMORY`]. A push replayed to
/// another gateway instance within the window passes this check, and is then a duplicate of
/// the stored event (its dedup key), so it still has no second effect.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<(String, String)>,
    /// In acceptance order, with when each may be forgotten (epoch ms).
    order: VecDeque<(i64, (String, String))>,
}

impl ReplayGuard {
    /// Whether `event` is fresh: its timestamp within the window of `now_ms` and its
    /// `(timestamp, nonce)` not accepted before. Call it after [`open`] (only a signed request
    /// may occupy memory here), and [`ReplayGuard::accepted`] once the event is stored.
    pub fn check(&self, event: &CallbackEvent, now_ms: i64) -> Result<(), CallbackError> {
        let fresh =
            timestamp_ms(&event.timestamp).is_some_and(|ms| now_ms.abs_diff(ms) <= REPLAY_WINDOW_MS.unsigned_abs());
        if !fresh {
            return Err(CallbackError::Stale { timestamp: event.timestamp.clone() });
        }
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.keys.contains(&(event.timestamp.clone(), event.nonce.clone())) {
            return Err(CallbackError::Replayed { timestamp: event.timestamp.clone(), nonce: event.nonce.clone() });
        }
        Ok(())
    }

    /// Remembers `event` as accepted, so that the same request is refused until it is stale.
    pub fn accepted(&self, event: &CallbackEvent, now_ms: i64) {
        let forget_at = timestamp_ms(&event.timestamp).unwrap_or(now_ms).max(now_ms) + REPLAY_WINDOW_MS;
        let key = (event.timestamp.clone(), event.nonce.clone());
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((at, _)) = seen.order.front() {
            if *at > now_ms && seen.order.len() < REPLAY_MEMORY {
                break;
            }
            if let Some((_, old)) = seen.order.pop_front() {
                seen.keys.remove(&old);
            }
        }
        if seen.keys.insert(key.clone()) {
            seen.order.push_back((forget_at, key));
        }
    }
}

/// A callback timestamp in epoch milliseconds: DingTalk sends seconds (Python sample) or
/// milliseconds (Java).
fn timestamp_ms(timestamp: &str) -> Option<i64> {
    let ts = timestamp.trim().parse::<i64>().ok()?;
    Some(if ts < SECONDS_CUTOFF { ts.saturating_mul(1000) } else { ts })
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
                let event = open(&crypto, &CallbackRequest { query: &query, body: &body })
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
            let event = open(&crypto_of(&v), &CallbackRequest { query, body: &body })
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
            let event = open(&crypto, &CallbackRequest { query: &query, body: &body }).expect("opens");
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
        let event = open(&crypto, &CallbackRequest { query: &query, body: &body }).expect("legacy spelling");
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
        let event = open(&crypto_of(&v), &CallbackRequest { query: &query, body: &body }).expect("opens");
        assert_eq!(event.event_type, "user_add_org");
    }

    #[test]
    fn wrong_signature_is_refused_with_401() {
        let crypto = crypto_of(&vectors()[0]);
        let (query, body) = seal(&crypto, r#"{"EventType":"check_url"}"#, "1608001896814", "WL4PK6yA");
        let tampered = query.replace("timestamp=1608001896814", "timestamp=1608001896815");
        let err = open(&crypto, &CallbackRequest { query: &tampered, body: &body }).expect_err("tampered");
        assert!(matches!(err, CallbackError::BadSignature(CryptoError::SignatureMismatch)), "{err:?}");
        assert_eq!(err.http_status(), 401);

        let other_token =
            CallbackCrypto::new("not-the-token", "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7", "ding6ccabc44d2c8d38b")
                .expect("key");
        let err = open(&other_token, &CallbackRequest { query: &query, body: &body }).expect_err("token");
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
            let err = open(&crypto, &CallbackRequest { query: q, body: b }).expect_err("malformed");
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
        let err = open(&receiver, &CallbackRequest { query: &query, body: &body }).expect_err("owner key");
        assert!(matches!(err, CallbackError::Decrypt(CryptoError::OwnerKeyMismatch { .. })), "{err:?}");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn non_json_or_typeless_plaintext_is_malformed_event() {
        let crypto = crypto_of(&vectors()[0]);
        for text in ["success", r#"{"type":"finish"}"#, r#"{"EventType":7}"#] {
            let (query, body) = seal(&crypto, text, "1", "n");
            let err = open(&crypto, &CallbackRequest { query: &query, body: &body }).expect_err(text);
            assert!(matches!(err, CallbackError::MalformedEvent(_)), "{text}: {err:?}");
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn stale_and_replayed_pushes_are_refused_fresh_ones_accepted_once() {
        let crypto = crypto_of(&vectors()[0]);
        let guard = ReplayGuard::default();
        let open_at = |timestamp: &str, nonce: &str| {
            let (query, body) = seal(&crypto, r#"{"EventType":"user_add_org","UserId":["u"]}"#, timestamp, nonce);
            open(&crypto, &CallbackRequest { query: &query, body: &body }).expect("signed")
        };
        // Milliseconds and seconds, at the edges of the window either way.
        for (ts, fresh) in [
            (NOW_MS.to_string(), true),
            ((NOW_MS - REPLAY_WINDOW_MS).to_string(), true),
            ((NOW_MS + REPLAY_WINDOW_MS).to_string(), true),
            ((NOW_MS - REPLAY_WINDOW_MS - 1).to_string(), false),
            ((NOW_MS + REPLAY_WINDOW_MS + 1).to_string(), false),
            ((NOW_MS / 1000 - 299).to_string(), true),
            ((NOW_MS / 1000 - 301).to_string(), false),
            ("1608001896814".to_owned(), false),
            ("soon".to_owned(), false),
        ] {
            let event = open_at(&ts, "n1");
            let checked = guard.check(&event, NOW_MS);
            assert_eq!(checked.is_ok(), fresh, "{ts}: {checked:?}");
            if let Err(err) = checked {
                assert!(matches!(err, CallbackError::Stale { .. }), "{err:?}");
                assert_eq!(err.http_status(), 400);
            }
        }
        // The same signed request twice: accepted once, then refused until it is stale.
        let event = open_at(&NOW_MS.to_string(), "abc");
        guard.check(&event, NOW_MS).expect("first");
        guard.accepted(&event, NOW_MS);
        let again = guard.check(&event, NOW_MS + 1_000).expect_err("replay");
        assert!(matches!(again, CallbackError::Replayed { .. }), "{again:?}");
        assert!(matches!(guard.check(&event, NOW_MS + 4 * 60_000), Err(CallbackError::Replayed { .. })));
        assert!(matches!(guard.check(&event, NOW_MS + 6 * 60_000), Err(CallbackError::Stale { .. })));
        // Another nonce at the same time is another push.
        guard.check(&open_at(&NOW_MS.to_string(), "abd"), NOW_MS).expect("other nonce");
    }

    #[test]
    fn replay_memory_forgets_only_what_is_stale() {
        let crypto = crypto_of(&vectors()[0]);
        let guard = ReplayGuard::default();
        let (query, body) = seal(&crypto, r#"{"EventType":"check_url"}"#, &NOW_MS.to_string(), "old");
        let old = open(&crypto, &CallbackRequest { query: &query, body: &body }).expect("signed");
        guard.accepted(&old, NOW_MS);
        let later = NOW_MS + REPLAY_WINDOW_MS + 1;
        let (query, body) = seal(&crypto, r#"{"EventType":"check_url"}"#, &later.to_string(), "new");
        let new = open(&crypto, &CallbackRequest { query: &query, body: &body }).expect("signed");
        guard.accepted(&new, later);
        let seen = guard.seen.lock().unwrap();
        assert_eq!(seen.keys.len(), 1, "the stale entry was dropped when the next one came");
        assert_eq!(seen.order.len(), 1);
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
