//! Vendor credentials that rotate (a Salesforce refresh token with rotation on, anything a vendor
//! replaces when it is used), kept encrypted in a store every instance shares.
//!
//! The connectors stay store-agnostic: they see a [`TokenVault`] (load and compare-and-swap save
//! of an opaque text per connection and credential name) that the server implements over the
//! store, and a [`TokenKey`] that seals the value before it leaves the process:
//!
//! - AES-256-GCM, a random 96-bit nonce per write, the key derived from the operator's
//!   `[store] token_key` secret (HMAC-SHA256 over a fixed label, so any secret of at least
//!   [`MIN_TOKEN_KEY_BYTES`] bytes gives a full 256-bit key);
//! - the associated data names the row (connection and credential name), so a ciphertext copied
//!   to another row does not open;
//! - a wrong key, an altered row or a moved one is [`VaultError::Undecryptable`] (DB0309), never a
//!   panic or garbage.
//!
//! A [`RotatingSecret`] is one credential of one connection: the configured value until the
//! vault holds a newer one, the version of the row it last saw, and the rules of the fetchers:
//! load the stored value at first use and when the vendor refuses the grant, save a rotated one
//! before its access token is used, and never overwrite a row that another instance changed
//! since it was read (the other instance's value is at least as new).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The operator's key material must be at least this long (32 random bytes, or a long
/// passphrase).
pub const MIN_TOKEN_KEY_BYTES: usize = 32;

/// First byte of every sealed value: the format (AES-256-GCM, 12-byte nonce, this AAD layout).
const FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Why a rotated credential could not be loaded or saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The row does not open with the configured key.
    #[error(
        "DB0309: the stored {name} of connection `{connection}` cannot be decrypted with the configured \
         `[store] token_key` (another key wrote it, or the row was altered or copied from another row)"
    )]
    Undecryptable { connection: String, name: String },
    /// The store could not be read or written.
    #[error("the token store failed: {0}")]
    Store(String),
}

impl VaultError {
    /// Every code a vault error can carry (each has a page under `docs/errors/`).
    pub const CODES: [&'static str; 1] = ["DB0309"];

    /// The stable code of this error (a page under `docs/errors/`), where it has one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Undecryptable { .. } => Some("DB0309"),
            Self::Store(_) => None,
        }
    }
}

/// One stored row as the store holds it: sealed text and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    pub sealed: String,
    pub version: i64,
}

/// Opaque storage of sealed credentials, one row per connection and credential name, shared by
/// every instance. Implemented by the server over the store.
#[async_trait::async_trait]
pub trait TokenVault: Send + Sync + 'static {
    async fn load(&self, connection: &str, name: &str) -> Result<Option<VaultRecord>, VaultError>;

    /// Compare and swap: writes `sealed` only if the row is still at `expected` (`None`: only if
    /// there is no row). The new version, or `None` when the row had moved on.
    async fn save(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
    ) -> Result<Option<i64>, VaultError>;
}

/// The AES-256-GCM key for sealed credentials. `Debug` never shows it.
#[derive(Clone)]
pub struct TokenKey(Aes256Gcm);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

fn aad(connection: &str, name: &str) -> Vec<u8> {
    // Lengths first, so no (connection, name) pair can be read as another.
    let mut out = Vec::with_capacity(32 + connection.len() + name.len());
    out.extend_from_slice(b"dingbridge credential v1");
    out.extend_from_slice(&u64::try_from(connection.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(connection.as_bytes());
    out.extend_from_slice(&u64::try_from(name.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

impl TokenKey {
    /// The key derived from the operator's secret (at least [`MIN_TOKEN_KEY_BYTES`] bytes, else
    /// `None`).
    pub fn derive(secret: &[u8]) -> Option<TokenKey> {
        if secret.len() < MIN_TOKEN_KEY_BYTES {
            return None;
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
        mac.update(b"dingbridge [store] token_key: AES-256-GCM v1");
        let key = mac.finalize().into_bytes();
        Aes256Gcm::new_from_slice(&key).ok().map(TokenKey)
    }

    /// `value` sealed for the row (`connection`, `name`): base64 of format byte, nonce and
    /// ciphertext with its tag.
    pub fn seal(&self, connection: &str, name: &str, value: &SecretString) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(connection, name);
        // Encryption fails only past the cipher's size limit (~64 GiB), far above any token.
        let sealed =
            self.0.encrypt(&nonce, Payload { msg: value.expose_secret().as_bytes(), aad: &aad }).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Opens what [`TokenKey::seal`] sealed for the same row with the same key.
    pub fn open(&self, connection: &str, name: &str, sealed: &str) -> Result<SecretString, VaultError> {
        let refused = || VaultError::Undecryptable { connection: connection.to_owned(), name: name.to_owned() };
        let bytes = B64.decode(sealed.trim()).map_err(|_| refused())?;
        if bytes.len() < 1 + NONCE_BYTES + TAG_BYTES || bytes[0] != FORMAT_V1 {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes[1..].split_at(NONCE_BYTES);
        let aad = aad(connection, name);
        let plain =
            self.0.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad }).map_err(|_| refused())?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| refused())
    }
}

/// The vault and its key: what the server hands the connectors once the store is open.
#[derive(Clone)]
pub struct Keeper {
    pub vault: Arc<dyn TokenVault>,
    pub key: TokenKey,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").finish_non_exhaustive()
    }
}

/// Filled once, after the store opens; empty when no `[store] token_key` is configured (rotated
/// credentials then live in memory only, as before).
pub type KeeperSlot = Arc<OnceLock<Keeper>>;

#[derive(Debug)]
struct Current {
    value: SecretString,
    /// The version of the row `value` came from or was saved as; `None` before any row.
    version: Option<i64>,
    /// The vault was read since the keeper arrived.
    loaded: bool,
    /// A rotated value the vault has not taken yet (the store failed); saved at the next chance.
    unsaved: bool,
}

/// One rotating credential of one connection.
#[derive(Debug)]
pub struct RotatingSecret {
    connection: String,
    name: &'static str,
    slot: KeeperSlot,
    current: Mutex<Current>,
}

impl RotatingSecret {
    /// `configured`: the value from the configuration, used until the vault holds one.
    pub fn new(connection: &str, name: &'static str, configured: SecretString, slot: KeeperSlot) -> Self {
        Self {
            connection: connection.to_owned(),
            name,
            slot,
            current: Mutex::new(Current { value: configured, version: None, loaded: false, unsaved: false }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value to present to the vendor now.
    pub fn current(&self) -> SecretString {
        self.lock().value.clone()
    }

    /// Whether a vault is attached (rotations are shared and survive a restart).
    pub fn is_persistent(&self) -> bool {
        self.slot.get().is_some()
    }

    /// Reads the vault unless that was done already; call before each use of the credential.
    /// Also retries saving a rotated value the store refused before.
    pub async fn prepare(&self) -> Result<(), VaultError> {
        let Some(keeper) = self.slot.get() else { return Ok(()) };
        let (loaded, unsaved) = {
            let c = self.lock();
            (c.loaded, c.unsaved)
        };
        if unsaved {
            let value = self.current();
            self.save(keeper, value).await?;
        }
        if !loaded {
            self.reload().await?;
        }
        Ok(())
    }

    /// Reads the vault's row and adopts it; `true` when the value changed (another instance or
    /// an earlier run rotated it). Without a vault: `false`.
    pub async fn reload(&self) -> Result<bool, VaultError> {
        let Some(keeper) = self.slot.get() else { return Ok(false) };
        let record = keeper.vault.load(&self.connection, self.name).await?;
        let mut c = self.lock();
        let Some(record) = record else {
            c.loaded = true;
            return Ok(false);
        };
        if c.version == Some(record.version) {
            c.loaded = true;
            return Ok(false);
        }
        // A row that does not open is reported at every use until the operator fixes the key.
        let value = keeper.key.open(&self.connection, self.name, &record.sealed)?;
        c.loaded = true;
        let changed = value.expose_secret() != c.value.expose_secret();
        c.value = value;
        c.version = Some(record.version);
        c.unsaved = false;
        Ok(changed)
    }

    /// The vendor replaced the credential with `value`: it is saved before it is used (so a
    /// crash right after cannot lose it) and adopted. If the store fails, the value is kept in
    /// memory (the old one is already dead at the vendor) and saved at the next chance; the error
    /// is returned for the caller to log.
    pub async fn rotated(&self, value: SecretString) -> Result<(), VaultError> {
        {
            let mut c = self.lock();
            c.value = value.clone();
            c.unsaved = true;
        }
        match self.slot.get() {
            Some(keeper) => self.save(keeper, value).await,
            None => {
                self.lock().unsaved = false;
                Ok(())
            }
        }
    }

    async fn save(&self, keeper: &Keeper, value: SecretString) -> Result<(), VaultError> {
        let sealed = keeper.key.seal(&self.connection, self.name, &value);
        let expected = self.lock().version;
        let saved = keeper.vault.save(&self.connection, self.name, &sealed, expected).await?;
        let mut c = self.lock();
        c.unsaved = false;
        match saved {
            Some(version) => {
                // Only if nothing replaced the value meanwhile (calls are single-flight per
                // connection, so this is the value just sealed).
                if c.value.expose_secret() == value.expose_secret() {
                    c.version = Some(version);
                }
            }
            None => {
                // Another instance wrote the row after we read it: its value is at least as new
                // as the one we rotated from, so it is not overwritten. Ours works now; if the
                // vendor refuses it later, the grant reloads the row.
                tracing::warn!(
                    connection = %self.connection,
                    credential = self.name,
                    "Another instance saved a newer {} meanwhile; keeping the stored one.",
                    self.name
                );
            }
        }
        Ok(())
    }
}

/// A vault in this process's memory, with the same compare-and-swap as the store's: what a
/// connector's tests share between two "instances", and nothing more (it is not durable).
#[derive(Debug, Default)]
pub struct MemoryVault(std::sync::Mutex<std::collections::BTreeMap<(String, String), VaultRecord>>);

#[async_trait::async_trait]
impl TokenVault for MemoryVault {
    async fn load(&self, connection: &str, name: &str) -> Result<Option<VaultRecord>, VaultError> {
        let rows = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(rows.get(&(connection.to_owned(), name.to_owned())).cloned())
    }

    async fn save(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
    ) -> Result<Option<i64>, VaultError> {
        let mut rows = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (connection.to_owned(), name.to_owned());
        if rows.get(&key).map(|r| r.version) != expected {
            return Ok(None);
        }
        let version = expected.unwrap_or(0) + 1;
        rows.insert(key, VaultRecord { sealed: sealed.to_owned(), version });
        Ok(Some(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::derive(&[byte; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_fresh_nonce_per_write() {
        let k = key(7);
        let value = SecretString::from("5Aep861rotated".to_owned());
        let a = k.seal("crm", "refresh_token", &value);
        let b = k.seal("crm", "refresh_token", &value);
        assert_ne!(a, b, "a random nonce per write");
        assert!(!a.contains("5Aep861"));
        assert_eq!(k.open("crm", "refresh_token", &a).unwrap().expose_secret(), "5Aep861rotated");
        assert_eq!(k.open("crm", "refresh_token", &b).unwrap().expose_secret(), "5Aep861rotated");
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(TokenKey::derive(&[1; 31]).is_none());
        assert!(TokenKey::derive(b"").is_none());
    }

    #[test]
    fn wrong_key_tampering_and_moved_rows_are_coded_errors() {
        let k = key(7);
        let sealed = k.seal("crm", "refresh_token", &SecretString::from("secret".to_owned()));
        let err = key(8).open("crm", "refresh_token", &sealed).unwrap_err();
        assert_eq!(err.code(), Some("DB0309"));
        assert!(err.to_string().contains("connection `crm`"), "{err}");
        assert!(!err.to_string().contains("secret\""), "{err}");
        // Moved to another connection or another credential name.
        assert!(matches!(k.open("erp", "refresh_token", &sealed), Err(VaultError::Undecryptable { .. })));
        assert!(matches!(k.open("crm", "access_token", &sealed), Err(VaultError::Undecryptable { .. })));
        // Every single bit flipped anywhere fails.
        let raw = B64.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert!(k.open("crm", "refresh_token", &B64.encode(&bad)).is_err(), "byte {i}");
        }
        // Truncated, empty, not base64.
        for junk in ["", "AQ==", "not base64 !", &B64.encode(&raw[..raw.len() - 1])] {
            assert_eq!(k.open("crm", "refresh_token", junk).unwrap_err().code(), Some("DB0309"), "{junk}");
        }
    }

    type MemVault = MemoryVault;

    fn slot(vault: &Arc<MemVault>) -> KeeperSlot {
        let slot = KeeperSlot::default();
        slot.set(Keeper { vault: vault.clone(), key: key(3) }).unwrap();
        slot
    }

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[tokio::test]
    async fn rotations_are_shared_and_an_older_value_never_overwrites_a_newer_one() {
        let vault = Arc::new(MemVault::default());
        let a = RotatingSecret::new("crm", "refresh_token", secret("rt-0"), slot(&vault));
        let b = RotatingSecret::new("crm", "refresh_token", secret("rt-0"), slot(&vault));
        a.prepare().await.unwrap();
        b.prepare().await.unwrap();
        assert_eq!(a.current().expose_secret(), "rt-0", "nothing stored yet: the configured value");
        a.rotated(secret("rt-1")).await.unwrap();
        // B saw no row; its own rotation must not overwrite A's.
        b.rotated(secret("rt-b")).await.unwrap();
        let stored = vault.load("crm", "refresh_token").await.unwrap().unwrap();
        assert_eq!(stored.version, 1);
        assert_eq!(key(3).open("crm", "refresh_token", &stored.sealed).unwrap().expose_secret(), "rt-1");
        // B reloads (as after an invalid_grant) and follows A from then on.
        assert!(b.reload().await.unwrap());
        assert_eq!(b.current().expose_secret(), "rt-1");
        b.rotated(secret("rt-2")).await.unwrap();
        assert!(a.reload().await.unwrap());
        assert_eq!(a.current().expose_secret(), "rt-2");
        // A restart: a new secret with the configured value picks up the stored one.
        let c = RotatingSecret::new("crm", "refresh_token", secret("rt-0"), slot(&vault));
        c.prepare().await.unwrap();
        assert_eq!(c.current().expose_secret(), "rt-2");
    }

    #[tokio::test]
    async fn without_a_keeper_rotations_stay_in_memory() {
        let s = RotatingSecret::new("crm", "refresh_token", secret("rt-0"), KeeperSlot::default());
        s.prepare().await.unwrap();
        assert!(!s.is_persistent());
        s.rotated(secret("rt-1")).await.unwrap();
        assert!(!s.reload().await.unwrap());
        assert_eq!(s.current().expose_secret(), "rt-1");
    }

    #[tokio::test]
    async fn a_row_sealed_with_another_key_is_a_coded_error() {
        let vault = Arc::new(MemVault::default());
        let sealed = key(9).seal("crm", "refresh_token", &secret("rt-x"));
        vault.save("crm", "refresh_token", &sealed, None).await.unwrap();
        let s = RotatingSecret::new("crm", "refresh_token", secret("rt-0"), slot(&vault));
        assert_eq!(s.prepare().await.unwrap_err().code(), Some("DB0309"));
        assert_eq!(s.current().expose_secret(), "rt-0", "the configured value is kept");
    }
}
