//! The launch session (firmware-semantics.md §5.3, §5.4): the owner wraps fresh transport
//! keys (TEK, TIK) for the platform under keys derived from their ECDH secret.

use zeroize::Zeroizing;

use uapi::launch::Session;

use crate::crypto::{aes128_ctr, hmac_sha256, kdf, mac_eq, CryptoError};

/// The transport encryption key and transport integrity key.
pub struct TransportKeys {
    /// TEK: AES-128 key for secrets.
    pub tek: Zeroizing<[u8; 16]>,
    /// TIK: HMAC key for measurements and secrets.
    pub tik: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKeys(..)")
    }
}

impl TransportKeys {
    /// Fresh random keys.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(TransportKeys {
            tek: Zeroizing::new(crate::crypto::random_bytes()?),
            tik: Zeroizing::new(crate::crypto::random_bytes()?),
        })
    }

    /// All-zero keys: what a launch without a session uses.
    pub fn zero() -> Self {
        TransportKeys {
            tek: Zeroizing::new([0; 16]),
            tik: Zeroizing::new([0; 16]),
        }
    }
}

/// Why a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// WRAP_MAC or POLICY_MAC does not verify: the firmware's BAD_MEASUREMENT.
    #[error("the session's {0} does not verify")]
    BadMac(&'static str),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A 128-bit key, wiped when dropped.
type Key128 = Zeroizing<[u8; 16]>;

/// KEK and KIK from the shared secret `z` and the session nonce.
fn kek_kik(z: &[u8], nonce: &[u8; 16]) -> Result<(Key128, Key128), CryptoError> {
    let master = kdf(z, b"sev-master-secret", nonce, 16)?;
    let mut kek = Zeroizing::new([0u8; 16]);
    let mut kik = Zeroizing::new([0u8; 16]);
    kek.copy_from_slice(&kdf(&master, b"sev-kek", &[], 16)?);
    kik.copy_from_slice(&kdf(&master, b"sev-kik", &[], 16)?);
    Ok((kek, kik))
}

/// POLICY_MAC = HMAC-SHA256(TIK, policy as u32 LE).
pub fn policy_mac(tik: &[u8; 16], policy: u32) -> Result<[u8; 32], CryptoError> {
    hmac_sha256(tik, &[&policy.to_le_bytes()])
}

/// The owner's side: the 128-byte session for LAUNCH_START.
pub fn wrap(
    z: &[u8],
    nonce: [u8; 16],
    wrap_iv: [u8; 16],
    keys: &TransportKeys,
    policy: u32,
) -> Result<Session, CryptoError> {
    let (kek, kik) = kek_kik(z, &nonce)?;
    let mut plain = Zeroizing::new([0u8; 32]);
    plain[..16].copy_from_slice(&*keys.tek);
    plain[16..].copy_from_slice(&*keys.tik);
    let wrapped = aes128_ctr(&kek, &wrap_iv, &*plain)?;
    let mut wrap_tk = [0u8; 32];
    wrap_tk.copy_from_slice(&wrapped);
    Ok(Session {
        nonce,
        wrap_tk,
        wrap_iv,
        wrap_mac: hmac_sha256(&*kik, &[&wrap_tk])?,
        policy_mac: policy_mac(&keys.tik, policy)?,
    })
}

/// The firmware's side: checks WRAP_MAC, unwraps TEK and TIK, checks POLICY_MAC.
pub fn unwrap(z: &[u8], session: &Session, policy: u32) -> Result<TransportKeys, SessionError> {
    let (kek, kik) = kek_kik(z, &session.nonce)?;
    if !mac_eq(&hmac_sha256(&*kik, &[&session.wrap_tk])?, &session.wrap_mac) {
        return Err(SessionError::BadMac("WRAP_MAC"));
    }
    let plain = Zeroizing::new(aes128_ctr(&kek, &session.wrap_iv, &session.wrap_tk)?);
    let mut keys = TransportKeys::zero();
    keys.tek.copy_from_slice(&plain[..16]);
    keys.tik.copy_from_slice(&plain[16..32]);
    if !mac_eq(&policy_mac(&keys.tik, policy)?, &session.policy_mac) {
        return Err(SessionError::BadMac("POLICY_MAC"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// virtee/sev src/session/mod.rs test `session`: Z = 16 zero bytes, nonce = IV = 0,
    /// TEK = TIK = 0, policy 0.
    #[test]
    fn wrap_matches_virtee_vector() {
        let s = wrap(&[0; 16], [0; 16], [0; 16], &TransportKeys::zero(), 0).unwrap();
        assert_eq!(
            hex::encode(s.wrap_tk),
            "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
        );
        assert_eq!(
            hex::encode(s.wrap_mac),
            "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
        );
        assert_eq!(
            hex::encode(s.policy_mac),
            "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
        );
    }

    #[test]
    fn unwrap_round_trips_and_refuses_tampering() {
        let keys = TransportKeys::generate().unwrap();
        let z = [7u8; 48];
        let s = wrap(&z, [1; 16], [2; 16], &keys, 0x5).unwrap();
        let back = unwrap(&z, &s, 0x5).unwrap();
        assert_eq!((*back.tek, *back.tik), (*keys.tek, *keys.tik));
        assert!(matches!(
            unwrap(&z, &s, 0x1),
            Err(SessionError::BadMac("POLICY_MAC"))
        ));
        let mut bad = s.clone();
        bad.wrap_tk[0] ^= 1;
        assert!(matches!(
            unwrap(&z, &bad, 0x5),
            Err(SessionError::BadMac("WRAP_MAC"))
        ));
        assert!(unwrap(&[8u8; 48], &s, 0x5).is_err());
    }
}
