//! The audit chain: its key, its hash, its head and the verifier both backends share.
//!
//! Each row's hash is HMAC-SHA256, keyed with the operator's audit key (`[audit] key`), over the
//! previous row's hash and the row's own fields. Without the key nobody can produce a row that
//! verifies, so whoever can write to the database cannot rewrite history and hash it again.
//!
//! A chain is keyed from its first row or not at all. A chain written without a key (a gateway
//! run without `[audit] key`, or a store older than keys) is hashed with plain SHA-256: that
//! still shows accidental damage and edits by someone who did not re-hash, but not a deliberate
//! rewrite. The head records the key's id (never the key), so verifying with another key answers
//! "wrong audit key" rather than "tampered at row 1".

use crate::{AuditEntry, AuditVerification, Millis, NewAuditEntry, Store, StoreError};
use hmac::digest::Update;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `prev_hash` of the first audit row.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A shorter key could be guessed offline from the rows it signs, which anyone reading the
/// database has.
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// The message whose HMAC names a key: the first 16 hex characters are the key id.
const KEY_ID_MESSAGE: &[u8] = b"dingbridge audit key id";

/// The secret the audit chain is keyed with. `Debug` prints only its id; the bytes are zeroed
/// when the last copy is dropped.
#[derive(Clone)]
pub struct AuditKey {
    secret: SecretSlice<u8>,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditKeyError {
    #[error(
        "the audit key is {len} bytes long; it must be at least {MIN_AUDIT_KEY_BYTES} bytes \
         (e.g. the output of `openssl rand -hex 32`)"
    )]
    TooShort { len: usize },
}

impl AuditKey {
    /// A key from its bytes (a secret's text as read from the environment or a file).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuditKeyError> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.len() < MIN_AUDIT_KEY_BYTES {
            return Err(AuditKeyError::TooShort { len: bytes.len() });
        }
        let secret = SecretSlice::from(bytes);
        let mut mac = mac(&secret);
        Mac::update(&mut mac, KEY_ID_MESSAGE);
        let id = hex::encode(mac.finalize().into_bytes()).chars().take(16).collect();
        Ok(Self { secret, id })
    }

    /// 16 hex characters naming this key (safe to print and store; it reveals nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn mac(secret: &SecretSlice<u8>) -> Hmac<Sha256> {
    // Invariant: HMAC accepts keys of any length (longer ones are hashed first), so this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret()).expect("HMAC takes a key of any length")
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey(id {}, [redacted])", self.id)
    }
}

impl AuditEntry {
    /// The hash this row must carry in a chain keyed with `key` (`None`: an unkeyed chain): hex
    /// HMAC-SHA256 (plain SHA-256 without a key) over `prev_hash, seq, at, actor, action, subject,
    /// detail`, each field length-prefixed (u64 big-endian byte length, then the bytes; `seq` and
    /// `at` as 8-byte big-endian two's complement), so no two different rows hash the same input.
    /// The row's own `hash` is not part of it.
    pub fn chain_hash(&self, key: Option<&AuditKey>) -> String {
        match key {
            Some(key) => {
                let mut mac = mac(&key.secret);
                feed(&mut mac, self);
                hex::encode(mac.finalize().into_bytes())
            }
            None => {
                let mut h = Sha256::new();
                feed(&mut h, self);
                hex::encode(h.finalize())
            }
        }
    }
}

fn feed(h: &mut impl Update, e: &AuditEntry) {
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(e.prev_hash.as_bytes());
    field(&e.seq.to_be_bytes());
    field(&e.at.to_be_bytes());
    field(e.actor.as_bytes());
    field(e.action.as_bytes());
    field(e.subject.as_bytes());
    field(e.detail.as_bytes());
}

/// Where the chain ends, and which key it is written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Seq of the last row; 0 when there is none.
    pub seq: i64,
    /// The last row's hash; [`ZERO_HASH`] when there is none.
    pub hash: String,
    /// The last row's time; `None` when there is no row (or it was removed).
    pub at: Option<Millis>,
    /// Id of the key the chain is written with ([`AuditKey::id`]). `None`: the rows were written
    /// without a key, or there are no rows and no key was bound yet.
    pub key_id: Option<String>,
}

impl AuditHead {
    /// Whether a writer or verifier holding `key` (or none) works on this chain: a keyed chain
    /// takes only its own key, an unkeyed chain with rows only no key, and a chain with neither
    /// rows nor key either (the first keyed append binds the key).
    pub fn check_key(&self, key: Option<&AuditKey>) -> Result<(), StoreError> {
        let given = key.map(AuditKey::id);
        match (self.key_id.as_deref(), given) {
            (Some(chain), Some(given)) if chain == given => Ok(()),
            (None, None) => Ok(()),
            (None, Some(_)) if self.seq == 0 => Ok(()),
            (chain, given) => Err(StoreError::AuditKeyMismatch {
                chain: chain.map(str::to_owned),
                given: given.map(str::to_owned),
                rows: self.seq,
            }),
        }
    }

    /// The key id to record in the head after a write with `key`.
    pub(crate) fn bound_key_id(&self, key: Option<&AuditKey>) -> Option<String> {
        self.key_id.clone().or_else(|| key.map(|k| k.id().to_owned()))
    }
}

/// What became of an anchor: a head recorded earlier (`dingbridge audit anchor`) and kept where
/// the store's writers cannot reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorCheck {
    /// The chain still holds the anchored row as recorded.
    Held,
    /// It does not: rows were removed or rewritten since the anchor was taken.
    Lost { reason: String },
}

impl AuditHead {
    /// Check that the chain in `store` still holds this head, recorded earlier as an anchor: the
    /// chain is written with the same key and its row `seq` is there with the same hash and time.
    /// Together with an intact chain, a held anchor proves every row up to it unchanged (each
    /// hash covers all earlier rows); this catches what the chain alone cannot, the last rows
    /// removed and the head moved back, or the whole chain rewritten by someone with the key.
    pub async fn check_anchor(&self, store: &dyn Store) -> Result<AnchorCheck, StoreError> {
        let lost = |reason: String| Ok(AnchorCheck::Lost { reason });
        if self.seq == 0 {
            // Anchored before the first row: every chain starts there.
            return Ok(AnchorCheck::Held);
        }
        let now = store.audit_head().await?;
        if now.key_id != self.key_id {
            let name = |k: &Option<String>| k.as_deref().map_or("no key".to_owned(), |k| format!("key {k}"));
            return lost(format!(
                "the chain is now written with {}, the anchor recorded {}: it was rewritten since",
                name(&now.key_id),
                name(&self.key_id)
            ));
        }
        if now.seq < self.seq {
            return lost(format!(
                "the chain ends at row {}, before the anchored row {}: rows were removed since the anchor",
                now.seq, self.seq
            ));
        }
        let row = store.audit_list(Millis::MIN, self.seq - 1, 1).await?.into_iter().next();
        let Some(row) = row.filter(|r| r.seq == self.seq) else {
            return lost(format!("the anchored row {} is missing from the chain", self.seq));
        };
        if row.hash != self.hash {
            return lost(format!(
                "row {} now has hash {}, the anchor recorded {}: the chain was rewritten since the anchor",
                self.seq, row.hash, self.hash
            ));
        }
        if self.at.is_some_and(|at| at != row.at) {
            return lost(format!("row {} has another time than the anchor recorded", self.seq));
        }
        Ok(AnchorCheck::Held)
    }
}

/// What `StoreError::AuditKeyMismatch` says, by case (references: thiserror passes fields so).
pub(crate) fn key_mismatch_message(chain: &Option<String>, given: &Option<String>, rows: &i64) -> String {
    match (chain.as_deref(), given.as_deref()) {
        (Some(chain), Some(given)) => {
            format!("wrong audit key: the audit chain is written with key {chain}, the key given is {given}")
        }
        (Some(chain), None) => format!(
            "the audit chain is keyed (key {chain}) and no audit key was given; set `[audit] key` in \
             the config (or give the key to the command)"
        ),
        (None, Some(given)) => format!(
            "the audit chain has {rows} rows written without an audit key, so it cannot be continued \
             or verified with key {given} (a chain is keyed from its first row or not at all)"
        ),
        (None, None) => "the audit chain is not keyed".to_owned(),
    }
}

/// The rows `entries` become when appended after `head` with `key`.
pub(crate) fn extend_chain(head: &AuditHead, entries: &[NewAuditEntry], key: Option<&AuditKey>) -> Vec<AuditEntry> {
    let mut prev_hash = head.hash.clone();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in (1..).zip(entries) {
        let mut row = AuditEntry {
            seq: head.seq + i,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            detail: e.detail.clone(),
            prev_hash,
            hash: String::new(),
        };
        row.hash = row.chain_hash(key);
        prev_hash = row.hash.clone();
        out.push(row);
    }
    out
}

/// Walks the audit chain in seq order; the first break wins.
pub(crate) struct ChainVerifier<'a> {
    key: Option<&'a AuditKey>,
    expected_seq: i64,
    prev_hash: String,
    rows: u64,
}

impl<'a> ChainVerifier<'a> {
    /// A verifier for a chain whose head is `head`, or the answer at once when `key` is not the
    /// chain's key (every row would fail, which says nothing about tampering).
    pub(crate) fn start(head: &AuditHead, key: Option<&'a AuditKey>) -> Result<Self, AuditVerification> {
        if let Err(StoreError::AuditKeyMismatch { chain, given, .. }) = head.check_key(key) {
            return Err(AuditVerification::WrongKey { chain_key_id: chain, given_key_id: given });
        }
        Ok(Self { key, expected_seq: 1, prev_hash: ZERO_HASH.to_owned(), rows: 0 })
    }

    /// Feed the next row (ascending seq); `Some` is the first break found.
    pub(crate) fn feed(&mut self, e: &AuditEntry) -> Option<AuditVerification> {
        if e.seq != self.expected_seq {
            return Some(AuditVerification::Broken {
                at_seq: self.expected_seq,
                reason: format!(
                    "row {} is missing or out of place (next row found has seq {})",
                    self.expected_seq, e.seq
                ),
            });
        }
        if e.prev_hash != self.prev_hash {
            return Some(AuditVerification::Broken {
                at_seq: e.seq,
                reason: "prev_hash does not match the previous row's hash".into(),
            });
        }
        let h = e.chain_hash(self.key);
        if h != e.hash {
            return Some(AuditVerification::Broken {
                at_seq: e.seq,
                reason: "hash does not match the row's contents (row edited, or hashed without the audit key)".into(),
            });
        }
        self.prev_hash = h;
        self.expected_seq += 1;
        self.rows += 1;
        None
    }

    /// Compare the end of the chain with the head (last seq and hash).
    pub(crate) fn finish(self, head: &AuditHead) -> AuditVerification {
        let (head_seq, head_hash) = (head.seq, head.hash.as_str());
        let last = self.expected_seq - 1;
        if last < head_seq {
            return AuditVerification::Broken {
                at_seq: last + 1,
                reason: format!("rows {}..={head_seq} are missing at the end of the chain", last + 1),
            };
        }
        if last > head_seq {
            return AuditVerification::Broken {
                at_seq: head_seq + 1,
                reason: format!("rows after the chain head (seq {head_seq}) were added outside the store"),
            };
        }
        if self.prev_hash != head_hash {
            return AuditVerification::Broken {
                at_seq: last,
                reason: "last row's hash does not match the chain head".into(),
            };
        }
        AuditVerification::Intact { rows: self.rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AuditKey {
        AuditKey::new(vec![byte; 32]).unwrap()
    }

    fn row() -> AuditEntry {
        AuditEntry {
            seq: 1,
            at: 1_700_000_000_000,
            actor: "finance0001".into(),
            action: "approval.decided".into(),
            subject: "netsuite:PR-1".into(),
            detail: "{}".into(),
            prev_hash: ZERO_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_short_key_is_refused() {
        assert_eq!(AuditKey::new(vec![7; 31]).unwrap_err(), AuditKeyError::TooShort { len: 31 });
        assert!(AuditKey::new(vec![7; 32]).is_ok());
    }

    #[test]
    fn the_key_id_names_the_key_and_debug_hides_the_bytes() {
        let (a, b) = (key(1), key(2));
        assert_eq!(a.id().len(), 16);
        assert!(a.id().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.id(), key(1).id());
        assert_ne!(a.id(), b.id());
        let secret = AuditKey::new("correct horse battery staple 0123456789").unwrap();
        let shown = format!("{secret:?}");
        assert!(shown.contains(secret.id()) && !shown.contains("horse"), "{shown}");
    }

    #[test]
    fn the_hash_depends_on_the_key_and_on_every_field() {
        let r = row();
        let (a, b) = (key(1), key(2));
        let keyed = r.chain_hash(Some(&a));
        assert_eq!(keyed, r.chain_hash(Some(&key(1))));
        assert_ne!(keyed, r.chain_hash(Some(&b)));
        assert_ne!(keyed, r.chain_hash(None));
        assert_eq!(keyed.len(), 64);
        let edits: [fn(&mut AuditEntry); 7] = [
            |e| e.prev_hash.push('0'),
            |e| e.seq += 1,
            |e| e.at += 1,
            |e| e.actor.push('x'),
            |e| e.action.push('x'),
            |e| e.subject.push('x'),
            |e| e.detail.push(' '),
        ];
        for edit in edits {
            let mut e = row();
            edit(&mut e);
            assert_ne!(e.chain_hash(Some(&a)), keyed);
        }
        // Length prefixes: moving a byte from one field to the next changes the hash.
        let mut moved = row();
        moved.actor = "finance000".into();
        moved.action = "1approval.decided".into();
        assert_ne!(moved.chain_hash(Some(&a)), keyed);
    }

    #[test]
    fn the_unkeyed_hash_is_the_plain_sha256_chain() {
        // The value stores written before keys existed carry: unkeyed chains still verify.
        let r = row();
        let mut h = Sha256::new();
        for bytes in [
            r.prev_hash.as_bytes(),
            &r.seq.to_be_bytes()[..],
            &r.at.to_be_bytes()[..],
            r.actor.as_bytes(),
            r.action.as_bytes(),
            r.subject.as_bytes(),
            r.detail.as_bytes(),
        ] {
            Digest::update(&mut h, (bytes.len() as u64).to_be_bytes());
            Digest::update(&mut h, bytes);
        }
        assert_eq!(r.chain_hash(None), hex::encode(h.finalize()));
    }

    #[test]
    fn key_checks_by_chain_state() {
        let (a, b) = (key(1), key(2));
        let head = |seq: i64, key_id: Option<&AuditKey>| AuditHead {
            seq,
            hash: ZERO_HASH.into(),
            at: None,
            key_id: key_id.map(|k| k.id().to_owned()),
        };
        // Fresh chain: any writer.
        assert!(head(0, None).check_key(None).is_ok());
        assert!(head(0, None).check_key(Some(&a)).is_ok());
        // Keyed chain: only its key, even before its first row.
        assert!(head(0, Some(&a)).check_key(Some(&a)).is_ok());
        assert!(head(3, Some(&a)).check_key(Some(&a)).is_ok());
        for (h, k) in [(head(3, Some(&a)), Some(&b)), (head(3, Some(&a)), None), (head(0, Some(&a)), Some(&b))] {
            assert!(matches!(h.check_key(k), Err(StoreError::AuditKeyMismatch { .. })), "{h:?}");
        }
        // Unkeyed chain with rows: no key only.
        assert!(head(3, None).check_key(None).is_ok());
        let err = head(3, None).check_key(Some(&a)).unwrap_err();
        assert!(err.to_string().contains("3 rows written without an audit key"), "{err}");
        let err = head(3, Some(&a)).check_key(Some(&b)).unwrap_err();
        assert!(err.to_string().starts_with("wrong audit key"), "{err}");
    }
}
