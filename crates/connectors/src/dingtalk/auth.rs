//! Custom robot signing ("加签"), reference §2.1.
//!
//! `sign = urlencode(base64_std(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret)))`,
//! where `secret` is the `SEC…` string used verbatim and `timestamp` is epoch milliseconds.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sha2::Sha256;

/// Standard base64 (with padding) of the HMAC over `"{timestamp}\n{secret}"`, before
/// URL-encoding. `timestamp` is taken verbatim, as DingTalk signs the query value it received.
pub fn robot_signature_base64(secret: &str, timestamp: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC accepts keys of any length (longer keys are hashed), so this cannot happen.
        unreachable!("HMAC-SHA256 accepts keys of any length");
    };
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `sign` query value for `timestamp_ms`, URL-encoded once (`+`→`%2B`, `/`→`%2F`,
/// `=`→`%3D`), ready to append as `&sign=`.
pub fn robot_sign(secret: &str, timestamp_ms: i64) -> String {
    let b64 = robot_signature_base64(secret, &timestamp_ms.to_string());
    utf8_percent_encode(&b64, NON_ALPHANUMERIC).to_string()
}
