//! Encryption and signing of DingTalk HTTP event callbacks (reference §6.2, §6.3, §6.6).
//!
//! Byte-oriented port of the algorithm, not of any sample: the Python sample pads by characters
//! and misreads length bytes ≥ 0x80, so lengths and padding here are always counted in UTF-8
//! bytes. Layout of the plaintext before AES-256-CBC (IV = first 16 key bytes):
//! `random16 || be32(len(msg)) || msg || owner_key`, padded PKCS#7-style to 32-byte blocks.

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// Length of the console's EncodingAESKey.
pub const ENCODING_AES_KEY_LEN: usize = 43;
/// DingTalk pads to 32-byte blocks, not to the 16-byte AES block.
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const LEN_PREFIX: usize = 4;
/// Owner keys found in a failed decrypt are shown up to this many characters: enough to
/// recognise an AppKey/CorpId/SuiteKey, bounded so garbage cannot flood a log line.
const FOUND_OWNER_KEY_SHOWN: usize = 64;

/// The EncodingAESKey is 43 base64 characters, i.e. 258 bits for a 256-bit key; the 2 spare bits
/// are not always zero in console-issued keys, and the Java/Python decoders ignore them.
const LENIENT_BASE64: GeneralPurpose =
    GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));

/// A callback crypto failure; every message says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "EncodingAESKey must be exactly 43 characters from [A-Za-z0-9], got {len} characters{detail}; \
         copy it again from the DingTalk developer console (event subscription page)"
    )]
    InvalidAesKey { len: usize, detail: String },
    #[error(
        "callback signature does not match; check that the Token configured in dingbridge equals the \
         Token of the DingTalk event subscription"
    )]
    SignatureMismatch,
    #[error(
        "the `encrypt` field is not valid base64 ({reason}); the request was corrupted or is not a DingTalk callback"
    )]
    Base64 { reason: String },
    #[error("ciphertext is {len} bytes, not a positive multiple of 16; the `encrypt` field is truncated or corrupted")]
    CiphertextLength { len: usize },
    #[error(
        "decrypted data has invalid padding (last byte {last}); the EncodingAESKey configured in dingbridge \
         probably differs from the one in the DingTalk console"
    )]
    BadPadding { last: u8 },
    #[error(
        "decrypted message is truncated: it declares {declared} message bytes but only {available} follow; \
         the EncodingAESKey probably differs from the one in the DingTalk console"
    )]
    Truncated { declared: usize, available: usize },
    #[error(
        "decrypted data is {len} bytes, shorter than the 20-byte header; the EncodingAESKey probably differs \
         from the one in the DingTalk console"
    )]
    TooShort { len: usize },
    #[error("decrypted message is not valid UTF-8; the EncodingAESKey probably differs from the one in the DingTalk console")]
    NotUtf8,
    #[error(
        "owner key mismatch: expected {expected:?}, found {found:?}; the owner key is the AppKey for an \
         internal app's event subscription, the CorpId for legacy register_call_back, the SuiteKey for \
         a third-party app"
    )]
    OwnerKeyMismatch { expected: String, found: String },
}

/// Token, AES key and owner key of one callback subscription.
#[derive(Clone)]
pub struct CallbackCrypto {
    token: String,
    aes_key: [u8; 32],
    owner_key: String,
}

// Token and AES key are credentials; only the owner key (an AppKey/CorpId, not secret) is shown.
impl std::fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("token", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .field("owner_key", &self.owner_key)
            .finish()
    }
}

impl CallbackCrypto {
    /// `encoding_aes_key` must be the 43-character console value; `owner_key` is the AppKey,
    /// CorpId or SuiteKey the plaintexts end with (reference §6.2).
    pub fn new(token: &str, encoding_aes_key: &str, owner_key: &str) -> Result<Self, CryptoError> {
        let len = encoding_aes_key.chars().count();
        if len != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::InvalidAesKey { len, detail: String::new() });
        }
        if let Some(bad) = encoding_aes_key.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(CryptoError::InvalidAesKey {
                len,
                detail: format!(" (character {} is not a letter or digit)", bad + 1),
            });
        }
        let decoded = LENIENT_BASE64
            .decode(format!("{encoding_aes_key}="))
            .map_err(|e| CryptoError::InvalidAesKey { len, detail: format!(" ({e})") })?;
        let aes_key: [u8; 32] = decoded.as_slice().try_into().map_err(|_| CryptoError::InvalidAesKey {
            len,
            detail: format!(" (decodes to {} bytes instead of 32)", decoded.len()),
        })?;
        Ok(Self { token: token.to_owned(), aes_key, owner_key: owner_key.to_owned() })
    }

    pub fn owner_key(&self) -> &str {
        &self.owner_key
    }

    /// `sha1_hex(concat(sort_bytewise([token, timestamp, nonce, encrypt])))`, lower-case.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypt];
        // `str` ordering is byte-wise, which is what DingTalk's sort does.
        parts.sort_unstable();
        let mut sha = Sha1::new();
        for part in parts {
            sha.update(part.as_bytes());
        }
        hex::encode(sha.finalize())
    }

    /// Constant-time check of a received signature (hex, any case) against the expected one.
    pub fn verify_signature(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = self.signature(timestamp, nonce, encrypt);
        if connect::secret::matches(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
            Ok(())
        } else {
            Err(CryptoError::SignatureMismatch)
        }
    }

    /// Encrypts with fresh random bytes (ASCII alphanumerics, like the official samples).
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with_random(plaintext, &random_alnum16())
    }

    /// Deterministic encryption for test vectors: single-line standard base64.
    pub fn encrypt_with_random(&self, plaintext: &str, random16: &[u8; 16]) -> String {
        let msg = plaintext.as_bytes();
        // A callback body is far below 4 GiB; saturating keeps this total without a panic path.
        let msg_len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(RANDOM_LEN + LEN_PREFIX + msg.len() + self.owner_key.len() + PAD_BLOCK);
        buf.extend_from_slice(random16);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.owner_key.as_bytes());
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        // `pad` is 1..=32, so it fits a byte.
        buf.resize(buf.len() + pad, pad as u8);
        let ciphertext =
            Aes256CbcEnc::new(&self.aes_key.into(), &self.iv().into()).encrypt_padded_vec_mut::<NoPadding>(&buf);
        STANDARD.encode(ciphertext)
    }

    /// Decrypts an `encrypt` value and checks the owner key. Line breaks and other ASCII
    /// whitespace are ignored, so the Python sample's 76-column output is accepted too.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let compact: String = encrypt.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let ciphertext = STANDARD.decode(compact).map_err(|e| CryptoError::Base64 { reason: e.to_string() })?;
        if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
            return Err(CryptoError::CiphertextLength { len: ciphertext.len() });
        }
        let plain = Aes256CbcDec::new(&self.aes_key.into(), &self.iv().into())
            .decrypt_padded_vec_mut::<NoPadding>(&ciphertext)
            .map_err(|_| CryptoError::CiphertextLength { len: ciphertext.len() })?;
        let content = unpad(&plain)?;
        let header = RANDOM_LEN + LEN_PREFIX;
        let Some(len_bytes) = content.get(RANDOM_LEN..header) else {
            return Err(CryptoError::TooShort { len: content.len() });
        };
        let declared = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let available = content.len() - header;
        if declared > available {
            return Err(CryptoError::Truncated { declared, available });
        }
        let (msg, owner) = content[header..].split_at(declared);
        if owner != self.owner_key.as_bytes() {
            let found: String = String::from_utf8_lossy(owner).chars().take(FOUND_OWNER_KEY_SHOWN).collect();
            return Err(CryptoError::OwnerKeyMismatch { expected: self.owner_key.clone(), found });
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }

    /// The mandatory reply body of §6.3: the literal `success`, encrypted with fresh random
    /// bytes and signed with `timestamp` and `nonce`.
    pub fn reply_success(&self, timestamp: &str, nonce: &str) -> Value {
        self.reply_with_random("success", timestamp, nonce, &random_alnum16())
    }

    fn reply_with_random(&self, plaintext: &str, timestamp: &str, nonce: &str, random16: &[u8; 16]) -> Value {
        let encrypt = self.encrypt_with_random(plaintext, random16);
        json!({
            "msg_signature": self.signature(timestamp, nonce, &encrypt),
            "timeStamp": timestamp,
            "nonce": nonce,
            "encrypt": encrypt,
        })
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.aes_key[..16]);
        iv
    }
}

/// A fresh random alphanumeric string, for nonces.
pub fn random_alnum(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn random_alnum16() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (slot, byte) in out.iter_mut().zip(rand::thread_rng().sample_iter(&Alphanumeric)) {
        *slot = byte;
    }
    out
}

/// Strips the 32-block padding, insisting every pad byte carries the pad length: a wrong key
/// almost always fails here rather than producing plausible garbage.
fn unpad(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let last = *plain.last().ok_or(CryptoError::BadPadding { last: 0 })?;
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::BadPadding { last });
    }
    let (content, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| b != last) {
        return Err(CryptoError::BadPadding { last });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn vectors() -> Vec<Value> {
        let all = fixture("callback_crypto_vectors.json")["vectors"].as_array().cloned().unwrap_or_default();
        assert_eq!(all.len(), 9, "the fixture documents 9 vectors");
        all
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("vector {} lacks string {key}", v["id"]))
    }

    fn crypto_of(v: &Value) -> CallbackCrypto {
        CallbackCrypto::new(s(v, "token"), s(v, "encoding_aes_key"), s(v, "owner_key")).expect("vector key is valid")
    }

    fn random_of(v: &Value) -> [u8; 16] {
        s(v, "random16").as_bytes().try_into().expect("random16 is 16 ASCII bytes")
    }

    fn vector(id: &str) -> Value {
        vectors().into_iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("no vector {id}"))
    }

    #[test]
    fn every_vector_signature_matches_and_verifies() {
        for v in vectors() {
            let c = crypto_of(&v);
            let sig = c.signature(s(&v, "timestamp"), s(&v, "nonce"), s(&v, "encrypt"));
            assert_eq!(sig, s(&v, "msg_signature"), "vector {}", v["id"]);
            c.verify_signature(s(&v, "msg_signature"), s(&v, "timestamp"), s(&v, "nonce"), s(&v, "encrypt"))
                .unwrap_or_else(|e| panic!("vector {}: {e}", v["id"]));
            // Upper-case hex is the same signature.
            let upper = s(&v, "msg_signature").to_ascii_uppercase();
            assert!(c.verify_signature(&upper, s(&v, "timestamp"), s(&v, "nonce"), s(&v, "encrypt")).is_ok());
        }
    }

    #[test]
    fn every_vector_decrypts_to_its_plaintext() {
        for v in vectors() {
            let plain = crypto_of(&v).decrypt(s(&v, "encrypt")).unwrap_or_else(|e| panic!("vector {}: {e}", v["id"]));
            assert_eq!(plain, s(&v, "plaintext"), "vector {}", v["id"]);
            assert_eq!(plain.len() as u64, v["plaintext_utf8_len"].as_u64().unwrap_or(0), "vector {}", v["id"]);
        }
    }

    #[test]
    fn every_vector_reencrypts_to_the_identical_ciphertext() {
        for v in vectors() {
            let enc = crypto_of(&v).encrypt_with_random(s(&v, "plaintext"), &random_of(&v));
            assert_eq!(enc, s(&v, "encrypt"), "vector {}", v["id"]);
        }
    }

    #[test]
    fn success_replies_are_reproduced_exactly() {
        let mut seen = 0;
        for v in vectors().into_iter().filter(|v| v["is_success_response"] == true) {
            let example = &v["http_response_example"];
            let reply = crypto_of(&v).reply_with_random("success", s(&v, "timestamp"), s(&v, "nonce"), &random_of(&v));
            assert_eq!(&reply, example, "vector {}", v["id"]);
            seen += 1;
        }
        assert_eq!(seen, 3, "three encrypted success replies in the fixture");
    }

    #[test]
    fn fresh_success_reply_decrypts_and_verifies() {
        let v = vector("gen-java-success-response");
        let c = crypto_of(&v);
        let reply = c.reply_success("1767223009999", "abcd1234");
        let obj = reply.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["encrypt", "msg_signature", "nonce", "timeStamp"]);
        assert_eq!(reply["timeStamp"], "1767223009999");
        assert_eq!(reply["nonce"], "abcd1234");
        let encrypt = reply["encrypt"].as_str().expect("encrypt");
        assert_ne!(encrypt, s(&v, "encrypt"), "fresh random bytes give a different ciphertext");
        c.verify_signature(reply["msg_signature"].as_str().expect("sig"), "1767223009999", "abcd1234", encrypt)
            .expect("reply signature verifies");
        assert_eq!(c.decrypt(encrypt).expect("decrypts"), "success");
    }

    #[test]
    fn non_ascii_payload_counts_utf8_bytes() {
        let v = vector("gen-java-bpms-task-change-nonascii");
        let plain = s(&v, "plaintext");
        assert!(plain.len() > plain.chars().count(), "fixture really has multi-byte characters");
        let c = crypto_of(&v);
        assert_eq!(c.decrypt(s(&v, "encrypt")).expect("decrypt"), plain);
        assert_eq!(c.encrypt_with_random(plain, &random_of(&v)), s(&v, "encrypt"));
        // And a fresh-random round trip through emoji and CJK.
        let text = "採購 – HK$12,800 ✅ 🎉";
        assert_eq!(c.decrypt(&c.encrypt(text)).expect("round trip"), text);
    }

    #[test]
    fn long_message_with_length_byte_over_0x80_round_trips() {
        let v = vector("gen-java-bpms-instance-finish");
        let c = crypto_of(&v);
        let plain = c.decrypt(s(&v, "encrypt")).expect("decrypt");
        assert!(plain.len() % 256 >= 0x80, "low length byte is >= 0x80");
        let long = "x".repeat(70_000);
        assert_eq!(c.decrypt(&c.encrypt(&long)).expect("round trip"), long);
    }

    #[test]
    fn python_newline_wrapped_base64_is_accepted() {
        for v in vectors().into_iter().filter(|v| v.get("python_sample_raw_output").is_some()) {
            let raw = &v["python_sample_raw_output"];
            let wrapped = s(raw, "encrypt_with_newlines");
            assert!(wrapped.contains('\n'));
            let c = crypto_of(&v);
            assert_eq!(c.decrypt(wrapped).expect("decrypt wrapped"), s(&v, "plaintext"), "vector {}", v["id"]);
            // The sample signs the text with its newlines, so verification uses it verbatim.
            c.verify_signature(s(raw, "msg_signature_over_newline_text"), s(&v, "timestamp"), s(&v, "nonce"), wrapped)
                .unwrap_or_else(|e| panic!("vector {}: {e}", v["id"]));
        }
    }

    #[test]
    fn every_pad_length_from_1_to_32_round_trips() {
        let c = crypto_of(&vector("official-check-url"));
        // header 20 + owner key 20 bytes: message lengths 0..32 cover every pad value.
        for n in 0..40 {
            let msg = "a".repeat(n);
            let enc = c.encrypt_with_random(&msg, b"0123456789abcdef");
            assert_eq!(STANDARD.decode(&enc).expect("b64").len() % 32, 0);
            assert_eq!(c.decrypt(&enc).expect("decrypt"), msg);
        }
    }

    #[test]
    fn wrong_owner_key_names_expected_and_found() {
        let v = vector("gen-py-user-add-org");
        let c =
            CallbackCrypto::new(s(&v, "token"), s(&v, "encoding_aes_key"), "dingcorp0123456789abcdef").expect("key");
        let err = c.decrypt(s(&v, "encrypt")).expect_err("owner key differs");
        assert_eq!(
            err,
            CryptoError::OwnerKeyMismatch {
                expected: "dingcorp0123456789abcdef".into(),
                found: "dingappkey0000000001".into()
            }
        );
        let text = err.to_string();
        assert!(text.contains("dingcorp0123456789abcdef") && text.contains("dingappkey0000000001"), "{text}");
    }

    #[test]
    fn wrong_aes_key_is_bad_padding_or_garbage_not_a_plaintext() {
        let v = vector("gen-py-check-url");
        let other =
            CallbackCrypto::new(s(&v, "token"), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456", s(&v, "owner_key"))
                .expect("key");
        assert!(other.decrypt(s(&v, "encrypt")).is_err());
    }

    #[test]
    fn bad_padding_is_refused() {
        let c = crypto_of(&vector("official-check-url"));
        let raw = |bytes: &[u8]| {
            STANDARD
                .encode(Aes256CbcEnc::new(&c.aes_key.into(), &c.iv().into()).encrypt_padded_vec_mut::<NoPadding>(bytes))
        };
        let mut block = vec![b'A'; 64];
        // last byte 0
        block[63] = 0;
        assert_eq!(c.decrypt(&raw(&block)), Err(CryptoError::BadPadding { last: 0 }));
        // last byte 33 (> 32)
        block[63] = 33;
        assert_eq!(c.decrypt(&raw(&block)), Err(CryptoError::BadPadding { last: 33 }));
        // last byte says 4 but the pad bytes before it differ
        block[60..64].copy_from_slice(&[4, 4, 9, 4]);
        assert_eq!(c.decrypt(&raw(&block)), Err(CryptoError::BadPadding { last: 4 }));
    }

    #[test]
    fn truncated_ciphertexts_are_refused() {
        let v = vector("official-check-url");
        let c = crypto_of(&v);
        let bytes = STANDARD.decode(s(&v, "encrypt")).expect("b64");
        // Not a multiple of 16 bytes.
        let cut = STANDARD.encode(&bytes[..bytes.len() - 5]);
        assert_eq!(c.decrypt(&cut), Err(CryptoError::CiphertextLength { len: bytes.len() - 5 }));
        assert_eq!(c.decrypt(""), Err(CryptoError::CiphertextLength { len: 0 }));
        // Whole blocks dropped: the remaining tail no longer ends in valid padding.
        let first_block_only = STANDARD.encode(&bytes[..32]);
        assert!(c.decrypt(&first_block_only).is_err());
        // Declared length beyond the data.
        let raw = Aes256CbcEnc::new(&c.aes_key.into(), &c.iv().into()).encrypt_padded_vec_mut::<NoPadding>(&{
            let mut b = b"0123456789abcdef".to_vec();
            b.extend_from_slice(&1000u32.to_be_bytes());
            b.extend_from_slice(b"short");
            let pad = 32 - b.len() % 32;
            b.resize(b.len() + pad, pad as u8);
            b
        });
        assert_eq!(c.decrypt(&STANDARD.encode(raw)), Err(CryptoError::Truncated { declared: 1000, available: 5 }));
        assert!(matches!(c.decrypt("not base64 !!"), Err(CryptoError::Base64 { .. })));
        // A single padded block: 16 random bytes, no room for the length field.
        let mut block = b"0123456789abcdef".to_vec();
        block.resize(32, 16);
        let raw = Aes256CbcEnc::new(&c.aes_key.into(), &c.iv().into()).encrypt_padded_vec_mut::<NoPadding>(&block);
        assert_eq!(c.decrypt(&STANDARD.encode(raw)), Err(CryptoError::TooShort { len: 16 }));
    }

    #[test]
    fn tampered_signature_or_inputs_are_refused() {
        let v = vector("gen-java-bpms-instance-finish");
        let c = crypto_of(&v);
        let (sig, ts, nonce, enc) = (s(&v, "msg_signature"), s(&v, "timestamp"), s(&v, "nonce"), s(&v, "encrypt"));
        let mut flipped = sig.to_owned();
        flipped.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(c.verify_signature(&flipped, ts, nonce, enc), Err(CryptoError::SignatureMismatch));
        assert_eq!(c.verify_signature(&sig[..39], ts, nonce, enc), Err(CryptoError::SignatureMismatch));
        assert_eq!(c.verify_signature("", ts, nonce, enc), Err(CryptoError::SignatureMismatch));
        assert_eq!(c.verify_signature(sig, "1767223001235", nonce, enc), Err(CryptoError::SignatureMismatch));
        assert_eq!(c.verify_signature(sig, ts, "Zx9Yw8Vv", enc), Err(CryptoError::SignatureMismatch));
        let other_token = CallbackCrypto::new("other", s(&v, "encoding_aes_key"), s(&v, "owner_key")).expect("key");
        assert_eq!(other_token.verify_signature(sig, ts, nonce, enc), Err(CryptoError::SignatureMismatch));
    }

    #[test]
    fn aes_key_must_be_43_alphanumerics() {
        let good = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456";
        assert!(CallbackCrypto::new("t", good, "o").is_ok());
        let short = CallbackCrypto::new("t", &good[..42], "o").expect_err("42 chars");
        assert!(matches!(short, CryptoError::InvalidAesKey { len: 42, .. }), "{short:?}");
        assert!(short.to_string().contains("43 characters"), "{short}");
        assert!(matches!(
            CallbackCrypto::new("t", &format!("{good}7"), "o"),
            Err(CryptoError::InvalidAesKey { len: 44, .. })
        ));
        let symbol = format!("{}+", &good[..42]);
        let err = CallbackCrypto::new("t", &symbol, "o").expect_err("+ is not alphanumeric");
        assert!(err.to_string().contains("character 43"), "{err}");
    }

    #[test]
    fn debug_output_hides_token_and_key() {
        let c = CallbackCrypto::new("topsecret-token", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456", "dingappkey")
            .expect("key");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecret") && dbg.contains("dingappkey"), "{dbg}");
    }
}
