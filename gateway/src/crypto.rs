//! Encryption at rest: every object's fragments are encrypted in the gateway
//! before they leave it, so a storage-node operator, or anyone reading IPFS,
//! sees only ciphertext.
//!
//! Each piece of stored data (a PUT, or one part of a multipart upload) has
//! its own random 256-bit [`DataKey`]. Its zstd frames are sealed one by one
//! with AES-256-GCM (nonce: segment and frame number), so a Range GET opens
//! only the frames it reads. The data key is wrapped by the operator's
//! [`MasterKey`] and kept in the index with the master key's id; a
//! [`Keyring`] holds the current master key (wraps new data keys) and older
//! ones (still unwrap), so the master key can be rotated.

use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::error::Unspecified;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes an AES-GCM tag adds to each sealed frame.
pub const TAG_LEN: usize = 16;
/// Bytes of a random nonce.
const NONCE_LEN: usize = 12;
/// Associated data of a wrapped data key: a wrapped key is never mistaken
/// for anything else sealed with the master key.
const WRAP_AAD: &[u8] = b"tenfold data key v1";
/// Associated data of a sealed secret (a node's credentials).
const SECRET_AAD: &[u8] = b"tenfold secret v1";
/// How a sealed secret starts in the index: `tfsealed1:KEYID:HEX`.
const SEALED_PREFIX: &str = "tfsealed1:";

/// A master key: wraps data keys. Its id (derived from the key) is recorded
/// beside every key it wraps.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: LessSafeKey,
    /// The key share links are signed with (HMAC-SHA256), derived from the
    /// master key so that every gateway holding it verifies the same links.
    link_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from its text form: 64 hex digits (32 bytes).
    ///
    /// # Errors
    /// [`GatewayError::Config`] when it is not 32 bytes of hex.
    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .ok_or_else(|| {
                GatewayError::Config("a master key is 64 hex digits (32 random bytes)".into())
            })?;
        let id = hex::encode(
            &Sha256::digest([b"tenfold master key id\0".as_slice(), &bytes].concat())[..8],
        );
        let link_key = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .expect("HMAC takes any key length")
            .chain_update(b"tenfold share-link key v1")
            .finalize()
            .into_bytes()
            .into();
        Ok(Self {
            id,
            cipher: aes_key(&bytes),
            link_key,
        })
    }

    /// A new random master key, in its text form.
    pub fn generate() -> String {
        hex::encode(rand::random::<[u8; KEY_LEN]>())
    }

    /// The key's id, as recorded in the index.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `msg` under a fresh random nonce: the nonce, then the
    /// ciphertext and its tag.
    fn seal(&self, msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, Unspecified> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = Vec::with_capacity(NONCE_LEN + msg.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(msg);
        seal_tail(&self.cipher, nonce, Aad::from(aad), &mut sealed, NONCE_LEN)?;
        Ok(sealed)
    }

    /// Opens what [`Self::seal`] made with the same `aad`.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Unsealed> {
        let (nonce, msg) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(Unsealed::Truncated)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::Truncated)?;
        let mut buf = msg.to_vec();
        let len = self
            .cipher
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| Unsealed::Forged)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Encrypts `buf[start..]` in place under `nonce` and appends the tag.
fn seal_tail(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: Aad<&[u8]>,
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<(), Unspecified> {
    let plain = buf.get_mut(start..).ok_or(Unspecified)?;
    let tag = key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad, plain)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(())
}

/// An AES-256-GCM key (ring's, whose assembly is several times faster than
/// a portable implementation: opening frames is a large share of a GET).
fn aes_key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

fn link_mac(key: &[u8; KEY_LEN], payload: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC takes any key length")
        .chain_update(payload)
}

/// Why sealed bytes did not open.
enum Unsealed {
    /// Shorter than a nonce.
    Truncated,
    /// The tag does not verify: another key, or altered bytes.
    Forged,
}

/// A data key wrapped by a master key, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Id of the master key that wrapped it.
    pub key_id: String,
    /// Random nonce, then the sealed key and its tag.
    pub wrapped: Vec<u8>,
}

/// The master keys a gateway holds.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl Keyring {
    /// `current` wraps new data keys; `older` only unwrap.
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Self {
        Self { current, older }
    }

    /// Id of the key that wraps new data keys.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Whether a key with this id is held.
    pub fn knows(&self, key_id: &str) -> bool {
        self.key(key_id).is_some()
    }

    fn key(&self, key_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == key_id)
    }

    /// Seals a secret (a node's secret key) for the index, as
    /// `tfsealed1:KEYID:HEX` under the current master key.
    pub fn seal_secret(&self, secret: &str) -> String {
        let sealed = self
            .current
            .seal(secret.as_bytes(), SECRET_AAD)
            .unwrap_or_default();
        format!("{SEALED_PREFIX}{}:{}", self.current.id, hex::encode(sealed))
    }

    /// Opens a secret sealed by [`Self::seal_secret`]; a secret stored
    /// before sealing existed is returned as it is.
    ///
    /// # Errors
    /// [`GatewayError::MasterKey`] when its master key is not held or it
    /// does not open.
    pub fn open_secret(&self, stored: &str) -> Result<String, GatewayError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let bad = |why: &str| GatewayError::MasterKey(format!("a sealed node secret {why}"));
        let (key_id, sealed) = rest.split_once(':').ok_or_else(|| bad("is malformed"))?;
        let master = self.key(key_id).ok_or_else(|| {
            bad(&format!(
                "needs master key {key_id}, which is not configured"
            ))
        })?;
        let bytes = hex::decode(sealed).map_err(|_| bad("is malformed"))?;
        let plain = master.open(&bytes, SECRET_AAD).map_err(|e| match e {
            Unsealed::Truncated => bad("is truncated"),
            Unsealed::Forged => bad(&format!("does not open with master key {key_id}")),
        })?;
        String::from_utf8(plain).map_err(|_| bad("is not text"))
    }

    /// Signs a share link's payload (HMAC-SHA256 with the current master
    /// key's link key).
    pub fn sign_link(&self, payload: &[u8]) -> [u8; 32] {
        link_mac(&self.current.link_key, payload)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `mac` signs `payload` under a held master key (compared in
    /// constant time).
    pub fn verify_link(&self, payload: &[u8], mac: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.older)
            .any(|k| link_mac(&k.link_key, payload).verify_slice(mac).is_ok())
    }

    /// A fresh data key and its wrapped form.
    ///
    /// # Errors
    /// [`GatewayError::Internal`] if sealing fails (it does not for 32 bytes).
    pub fn new_data_key(&self) -> Result<(DataKey, WrappedKey), GatewayError> {
        let key: [u8; KEY_LEN] = rand::random();
        let wrapped = WrappedKey {
            key_id: self.current.id.clone(),
            wrapped: self
                .current
                .seal(&key, WRAP_AAD)
                .map_err(|_| GatewayError::Internal("wrapping a data key".into()))?,
        };
        Ok((DataKey(aes_key(&key)), wrapped))
    }

    /// Unwraps a data key.
    ///
    /// # Errors
    /// [`GatewayError::MasterKey`] when its master key is not held or the
    /// wrapped key does not open with it.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, GatewayError> {
        let master = self.key(&wrapped.key_id).ok_or_else(|| {
            GatewayError::MasterKey(format!(
                "data encrypted under master key {} which is not configured",
                wrapped.key_id
            ))
        })?;
        let opened = master.open(&wrapped.wrapped, WRAP_AAD);
        if matches!(opened, Err(Unsealed::Truncated)) {
            return Err(GatewayError::MasterKey(
                "a wrapped data key is truncated".into(),
            ));
        }
        let key = opened
            .ok()
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or_else(|| {
                GatewayError::MasterKey(format!(
                    "a data key does not open with master key {}",
                    wrapped.key_id
                ))
            })?;
        Ok(DataKey(aes_key(&key)))
    }
}

/// One piece of data's key: seals and opens its zstd frames.
#[derive(Clone)]
pub struct DataKey(LessSafeKey);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Frame `frame` of segment `segment`: unique within one data key.
fn frame_nonce(segment: u32, frame: u32) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&segment.to_le_bytes());
    nonce[4..8].copy_from_slice(&frame.to_le_bytes());
    nonce
}

impl DataKey {
    /// Encrypts the frame `buf[start..]` in place and appends its tag.
    pub fn seal_frame(&self, segment: u32, frame: u32, buf: &mut Vec<u8>, start: usize) {
        // Encrypting in memory cannot fail for frames under 64 GiB.
        let _ = seal_tail(
            &self.0,
            frame_nonce(segment, frame),
            Aad::from(&[][..]),
            buf,
            start,
        );
    }

    /// Decrypts a sealed frame (ciphertext then tag) in place; returns the
    /// plaintext's length, or `None` when the tag does not verify.
    pub fn open_frame(&self, segment: u32, frame: u32, sealed: &mut [u8]) -> Option<usize> {
        let nonce = Nonce::assume_unique_for_key(frame_nonce(segment, frame));
        self.0
            .open_in_place(nonce, Aad::empty(), sealed)
            .ok()
            .map(|plain| plain.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(
            MasterKey::parse(&MasterKey::generate()).unwrap(),
            Vec::new(),
        )
    }

    #[test]
    fn data_keys_wrap_and_unwrap_only_with_their_master_key() {
        let old = ring();
        let (key, wrapped) = old.new_data_key().unwrap();
        let mut frame = b"some compressed frame".to_vec();
        key.seal_frame(1, 2, &mut frame, 0);
        assert_eq!(frame.len(), 21 + TAG_LEN);

        let again = old.unwrap(&wrapped).unwrap();
        let mut copy = frame.clone();
        assert_eq!(again.open_frame(1, 2, &mut copy), Some(21));
        assert_eq!(&copy[..21], b"some compressed frame");

        // Another position, a flipped bit: refused.
        let mut copy = frame.clone();
        assert_eq!(again.open_frame(1, 3, &mut copy), None);
        let mut copy = frame.clone();
        copy[0] ^= 1;
        assert_eq!(again.open_frame(1, 2, &mut copy), None);

        // A new master key does not open it; with the old one kept, it does.
        let new = ring();
        let err = new.unwrap(&wrapped).unwrap_err().to_string();
        assert!(err.contains(&wrapped.key_id), "{err}");
        let rotated = Keyring::new(new.current.clone(), vec![old.current.clone()]);
        assert!(rotated.unwrap(&wrapped).is_ok());
        assert_ne!(rotated.new_data_key().unwrap().1.key_id, wrapped.key_id);

        // A wrapped key claiming the right id but sealed by another key.
        let forged = WrappedKey {
            key_id: wrapped.key_id.clone(),
            wrapped: new.new_data_key().unwrap().1.wrapped,
        };
        assert!(old.unwrap(&forged).is_err());
        assert!(MasterKey::parse("not hex").is_err());

        // Node secrets: sealed text never shows the secret, opens with the
        // key (or a rotated keyring), and plain text from before passes.
        let sealed = old.seal_secret("node-secret-42");
        assert!(!sealed.contains("node-secret-42") && sealed.starts_with(SEALED_PREFIX));
        assert_eq!(old.open_secret(&sealed).unwrap(), "node-secret-42");
        assert_eq!(rotated.open_secret(&sealed).unwrap(), "node-secret-42");
        assert!(new.open_secret(&sealed).is_err());
        assert_eq!(
            new.open_secret("plain-from-before").unwrap(),
            "plain-from-before"
        );
        assert!(MasterKey::parse("abcd").is_err());
    }
}
