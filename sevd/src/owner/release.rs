//! Releasing secrets to an attested SNP guest (README, "Secrets for SNP guests"). SNP has no
//! LAUNCH_SECRET: the guest asks for a report, and the owner answers a verified report with
//! secrets wrapped for a key only that guest holds.
//!
//! The guest makes an ephemeral P-384 key `Q_g` and binds it to its report:
//!
//! ```text
//! REPORT_DATA = SHA-512(LABEL ‖ nonce ‖ Q_g)        nonce: the owner's 32 fresh bytes
//! ```
//!
//! The owner verifies the report (chain, signature, TCB, measurement, policy, host data,
//! REPORT_DATA recomputed from `Q_g`), makes its own ephemeral key `Q_o` and sends
//!
//! ```text
//! packet = Q_o (SEC 1, 97) ‖ IV (12) ‖ AES-256-GCM(K, IV, aad = REPORT_DATA, secrets) ‖ tag (16)
//! K      = KDF(ECDH(d_o, Q_g), LABEL, REPORT_DATA, 32)   (SP 800-108, HMAC-SHA256, as SEV's)
//! ```
//!
//! A key the guest derives with MSG_KEY_REQ would not do: only the chip and the guest can
//! compute it, so the owner could not wrap anything for it. REPORT_DATA is the one field the
//! guest chooses that the firmware signs, which is what key brokers use it for.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::crypto::ecc::{EcKeyPair, EcPublic, SEC1_LEN};
use crate::crypto::{kdf, random_bytes, CryptoError};

/// Domain separation for the binding and the key.
pub const LABEL: &[u8] = b"sevctl-snp-release-v1";
/// The owner's nonce.
pub const NONCE_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a packet does not open.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Shorter than a key, an IV and a tag.
    #[error("the secret packet is {0} bytes, too short")]
    Short(usize),
    /// The owner's key is not a P-384 point.
    #[error("the secret packet holds no P-384 key")]
    BadKey,
    /// Not wrapped for this key and this report.
    #[error("the secret packet was not wrapped for this guest's key and report")]
    Tag,
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// REPORT_DATA binding the guest's key `guest` to the owner's `nonce`.
pub fn binding(nonce: &[u8; NONCE_LEN], guest: &EcPublic) -> [u8; 64] {
    Sha512::new()
        .chain_update(LABEL)
        .chain_update(nonce)
        .chain_update(guest.to_sec1())
        .finalize()
        .into()
}

fn cipher(shared: &[u8], report_data: &[u8; 64]) -> Result<Aes256Gcm, CryptoError> {
    let key = kdf(shared, LABEL, report_data, 32)?;
    Aes256Gcm::new_from_slice(&key).map_err(|_| CryptoError::Seal)
}

/// The owner's half: `secrets` wrapped for `guest`, whose verified report carried
/// `report_data`.
pub fn wrap(
    guest: &EcPublic,
    report_data: &[u8; 64],
    secrets: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ours = EcKeyPair::generate()?;
    let shared = ours.ecdh(guest)?;
    let iv: [u8; IV_LEN] = random_bytes()?;
    let sealed = cipher(&shared, report_data)?
        .encrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: secrets,
                aad: report_data,
            },
        )
        .map_err(|_| CryptoError::Seal)?;
    let mut packet = ours.public()?.to_sec1().to_vec();
    packet.extend_from_slice(&iv);
    packet.extend_from_slice(&sealed);
    Ok(packet)
}

/// The guest's half: the secrets of a `packet` wrapped for `key` and `report_data`.
pub fn unwrap(
    key: &EcKeyPair,
    report_data: &[u8; 64],
    packet: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ReleaseError> {
    if packet.len() < SEC1_LEN + IV_LEN + TAG_LEN {
        return Err(ReleaseError::Short(packet.len()));
    }
    let (point, rest) = packet.split_at(SEC1_LEN);
    let (iv, sealed) = rest.split_at(IV_LEN);
    let owner = EcPublic::from_sec1(point).ok_or(ReleaseError::BadKey)?;
    let shared = key.ecdh(&owner)?;
    cipher(&shared, report_data)?
        .decrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: sealed,
                aad: report_data,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| ReleaseError::Tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_opens_only_for_its_key_and_report() {
        let guest = EcKeyPair::generate().unwrap();
        let q = guest.public().unwrap();
        let nonce = [7u8; NONCE_LEN];
        let rd = binding(&nonce, &q);
        assert_ne!(rd, binding(&[8u8; NONCE_LEN], &q), "the nonce is bound");
        let packet = wrap(&q, &rd, b"the disk passphrase").unwrap();
        assert_eq!(packet.len(), SEC1_LEN + IV_LEN + 19 + TAG_LEN);
        assert_eq!(
            &unwrap(&guest, &rd, &packet).unwrap()[..],
            b"the disk passphrase"
        );

        let other = EcKeyPair::generate().unwrap();
        assert!(matches!(
            unwrap(&other, &rd, &packet),
            Err(ReleaseError::Tag)
        ));
        let mut rd2 = rd;
        rd2[0] ^= 1;
        assert!(matches!(
            unwrap(&guest, &rd2, &packet),
            Err(ReleaseError::Tag)
        ));
        for at in [0usize, 1, SEC1_LEN, SEC1_LEN + IV_LEN, packet.len() - 1] {
            let mut bad = packet.clone();
            bad[at] ^= 0x40;
            assert!(unwrap(&guest, &rd, &bad).is_err(), "byte {at} is covered");
        }
        assert!(matches!(
            unwrap(&guest, &rd, &packet[..SEC1_LEN + IV_LEN + TAG_LEN - 1]),
            Err(ReleaseError::Short(_))
        ));
    }
}
