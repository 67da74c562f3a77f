//! The ID block a guest owner signs for LAUNCH_FINISH (SEV-SNP ABI "ID_BLOCK" and
//! "ID_AUTH"; snp.md §4.4): the expected launch digest and policy, signed with the owner's ID
//! key, and optionally the ID key signed with an author key.

use uapi::snp::{id_auth, id_block};

use crate::crypto::ecc::EcKeyPair;
use crate::crypto::CryptoError;

/// What the block binds the guest to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// The launch digest the guest must reach.
    pub ld: [u8; 48],
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// The policy the guest must be launched with.
    pub policy: u64,
}

impl IdBlock {
    /// The 96 bytes (VERSION 1).
    pub fn encode(&self) -> [u8; id_block::LEN] {
        let mut b = [0u8; id_block::LEN];
        b[id_block::LD].copy_from_slice(&self.ld);
        b[id_block::FAMILY_ID].copy_from_slice(&self.family_id);
        b[id_block::IMAGE_ID].copy_from_slice(&self.image_id);
        b[id_block::VERSION].copy_from_slice(&1u32.to_le_bytes());
        b[id_block::GUEST_SVN].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[id_block::POLICY].copy_from_slice(&self.policy.to_le_bytes());
        b
    }

    /// The block and its ID auth structure: signed by `id_key`, whose public half `author`
    /// signs in turn when given.
    pub fn sign(
        &self,
        id_key: &EcKeyPair,
        author: Option<&EcKeyPair>,
    ) -> Result<([u8; id_block::LEN], Box<[u8; id_auth::LEN]>), CryptoError> {
        let block = self.encode();
        let mut auth = Box::new([0u8; id_auth::LEN]);
        let algo = id_auth::ALGO_ECDSA_P384_SHA384.to_le_bytes();
        auth[id_auth::ID_KEY_ALGO].copy_from_slice(&algo);
        auth[id_auth::AUTH_KEY_ALGO].copy_from_slice(&algo);
        let sig = id_key.sign_sha384(&block)?;
        auth[id_auth::ID_BLOCK_SIG][..sig.len()].copy_from_slice(&sig);
        let key = id_key.public()?.amd_key()?;
        auth[id_auth::ID_KEY].copy_from_slice(&key);
        if let Some(author) = author {
            let sig = author.sign_sha384(&key)?;
            auth[id_auth::ID_KEY_SIG][..sig.len()].copy_from_slice(&sig);
            auth[id_auth::AUTHOR_KEY].copy_from_slice(&author.public()?.amd_key()?);
        }
        Ok((block, auth))
    }
}
