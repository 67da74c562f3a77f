//! What a real part has fused into it: the chip-unique seed (from which the CEK and the chip
//! id are derived) and the AMD roots, ARK and ASK, whose ASK has signed the CEK; and the
//! security patch levels of the firmware and microcode installed on it (its SNP TCB).
//!
//! The software firmware mints its own ARK and ASK (RSA-4096, AMD's CA format) when a chip is
//! made, signs the CEK with the ASK, and throws both private keys away, as a real PSP never
//! holds them either. Tools that pin AMD's roots cannot validate this chain; tools that take
//! the chain from the caller (`sevctl verify --ca`, `Session::start`) can.

use zeroize::Zeroizing;

use uapi::ca::CaCertificate;
use uapi::cert::{algo, usage, Certificate, CERT_LEN};
use uapi::snp::TcbVersion;

use crate::crypto::ca::{PssHash, RsaKeyPair};
use crate::crypto::ecc::EcKeyPair;
use crate::crypto::{kdf, sha256, CryptoError};
use crate::part::Product;

/// Format 1: no TCB (read as [`DEFAULT_TCB`]).
const MAGIC_V1: &[u8; 8] = b"SEVDCHP1";
/// Format 2: the installed TCB follows the CEK (read as a Milan).
const MAGIC_V2: &[u8; 8] = b"SEVDCHP2";
/// Format 3: the product's code follows the TCB.
const MAGIC: &[u8; 8] = b"SEVDCHP3";
const SEED_LEN: usize = 32;

/// The TCB of a new Milan unless told otherwise (and of chip files of format 1).
pub const DEFAULT_TCB: TcbVersion = Product::Milan.default_tcb();

/// Why a chip file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChipError {
    /// The file is not a chip file, is truncated, or fails its checksum.
    #[error("chip identity is corrupt: {0}")]
    Corrupt(&'static str),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A chip's fused identity.
pub struct Chip {
    seed: Zeroizing<[u8; SEED_LEN]>,
    /// AMD root key certificate (self-signed).
    pub ark: CaCertificate,
    /// AMD SEV signing key certificate (signed by the ARK).
    pub ask: CaCertificate,
    /// Chip endorsement key certificate (signed by the ASK).
    pub cek: Certificate,
    /// The SPLs of the boot loader, TEE, SNP firmware and microcode installed on the part:
    /// what the firmware reports as its current TCB. Only an update changes them.
    pub tcb: TcbVersion,
    /// The EPYC generation the part is, fixed when it is made.
    pub product: Product,
}

impl std::fmt::Debug for Chip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chip").finish_non_exhaustive()
    }
}

impl Chip {
    /// Makes a new chip: a random seed, a fresh RSA-4096 ARK and ASK, and the CEK signed by
    /// the ASK. Takes seconds (two RSA-4096 key generations).
    pub fn generate(api: (u8, u8), tcb: TcbVersion, product: Product) -> Result<Self, CryptoError> {
        let seed = Zeroizing::new(crate::crypto::random_bytes::<SEED_LEN>()?);
        let ark_key = RsaKeyPair::generate(4096)?;
        let ask_key = RsaKeyPair::generate(4096)?;
        let ark_id = crate::crypto::random_bytes::<16>()?;
        let ask_id = crate::crypto::random_bytes::<16>()?;
        let mut ark = ark_key.ca_certificate(0x00, ark_id, ark_id)?;
        ark_key.sign_ca_certificate(&mut ark)?;
        let mut ask = ask_key.ca_certificate(usage::ASK, ask_id, ark_id)?;
        ark_key.sign_ca_certificate(&mut ask)?;

        let cek_key = cek_from_seed(&*seed)?;
        let mut cek = cek_key.certificate(api, usage::CEK, algo::ECDSA_SHA256)?;
        let sig = ask_key.sign_pss(PssHash::Sha384, &cek.body())?;
        let slot = &mut cek.sigs[0];
        slot.usage = usage::ASK;
        slot.algo = algo::RSA_SHA384;
        slot.sig[..sig.len()].copy_from_slice(&sig);
        Ok(Chip {
            seed,
            ark,
            ask,
            cek,
            tcb,
            product,
        })
    }

    /// The CEK's private key, derived from the seed each time it is needed.
    pub fn cek_key(&self) -> Result<EcKeyPair, CryptoError> {
        cek_from_seed(&*self.seed)
    }

    /// The 64-byte chip id GET_ID returns (any stable value will do: it is only a lookup key
    /// for AMD's key server, which cannot know this chip). Only the product's first
    /// [`Product::chip_id_len`] bytes are set.
    pub fn id(&self) -> Result<[u8; 64], CryptoError> {
        let bytes = kdf(&*self.seed, b"sevd-chip-id", &[], 64)?;
        let mut id = [0u8; 64];
        let n = self.product.chip_id_len();
        id[..n].copy_from_slice(&bytes[..n]);
        Ok(id)
    }

    /// The key that MACed the non-volatile store of format 1 (older sevd).
    pub fn nv_v1_mac_key(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        kdf(&*self.seed, b"sevd-nv-integrity", &[], 32)
    }

    /// The key that seals the non-volatile store (AES-256-GCM): the platform's private keys
    /// are on disk only under it.
    pub fn nv_seal_key(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        kdf(&*self.seed, b"sevd-nv-seal", &[], 32)
    }

    /// The VCEK at `tcb`: the chip's versioned endorsement key. As the firmware does, each
    /// part's seed (FMC where there is one, boot loader, TEE, SNP firmware, microcode) is
    /// hashed once for each security version below the top (255 − SPL times) and chained
    /// into the next, and the key is derived from the result; a key for a higher TCB says
    /// nothing of a lower one's.
    pub fn vcek(&self, tcb: TcbVersion) -> Result<EcKeyPair, CryptoError> {
        let chain = self.vcek_seed(tcb)?;
        let material = kdf(&chain, b"sev-versioned-chip-endorsement-key", &[], 56)?;
        EcKeyPair::from_seed(&material)
    }

    /// The VCEK's seed at `tcb` (the firmware's `vcek_hash`): also the root of the keys
    /// MSG_KEY_REQ derives for guests.
    pub fn vcek_seed(&self, tcb: TcbVersion) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        use sha2::{Digest, Sha384};
        let mut chain = Zeroizing::new([0u8; 48]);
        let fmc = tcb.fmc.map(|spl| (&b"fmc"[..], spl));
        for (name, spl) in fmc.into_iter().chain([
            (&b"bootloader"[..], tcb.bootloader),
            (b"tee", tcb.tee),
            (b"snp", tcb.snp),
            (b"microcode", tcb.microcode),
        ]) {
            let seed = kdf(&*self.seed, b"sevd-hash-stick", name, 48)?;
            let mut h = Zeroizing::new(
                Sha384::new()
                    .chain_update(*chain)
                    .chain_update(&*seed)
                    .finalize()
                    .into(),
            );
            for _ in spl..u8::MAX {
                *h = Sha384::digest(*h).into();
            }
            chain = h;
        }
        Ok(Zeroizing::new(chain.to_vec()))
    }

    /// The same chip with another seed: a different part with the same roots (tests).
    #[cfg(test)]
    pub(crate) fn with_seed(&self, seed: [u8; SEED_LEN]) -> Chip {
        Chip {
            seed: Zeroizing::new(seed),
            ark: self.ark.clone(),
            ask: self.ask.clone(),
            cek: self.cek.clone(),
            tcb: self.tcb,
            product: self.product,
        }
    }

    /// The key that seals the SNP half of the store (committed TCB, SNP_CONFIG).
    pub fn snp_nv_seal_key(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        kdf(&*self.seed, b"sevd-snp-nv-seal", &[], 32)
    }

    /// The key a VLEK hashstick for this chip at `tcb` is wrapped under (AES-256-GCM): the
    /// firmware's "VLEK wrapping key", derived from the chip's secret and the TCB, so only
    /// this part at this TCB can unwrap it.
    pub fn vlek_wrapping_key(&self, tcb: TcbVersion) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        kdf(
            &*self.seed,
            b"sevd-vlek-wrap",
            &tcb.to_u64().to_le_bytes(),
            32,
        )
    }

    /// The file form: magic ‖ seed ‖ ARK ‖ ASK ‖ CEK ‖ TCB (u64) ‖ product (u8) ‖ SHA-256 of
    /// all before it.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&*self.seed);
        for ca in [&self.ark, &self.ask] {
            let bytes = ca.encode();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(&self.cek.encode());
        out.extend_from_slice(&self.tcb.to_u64().to_le_bytes());
        out.push(self.product.code());
        let sum = sha256(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads the file form back, checking its checksum and every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChipError> {
        if bytes.len() < MAGIC.len() + SEED_LEN + 32 {
            return Err(ChipError::Corrupt("not a sevd chip file"));
        }
        let format = match &bytes[..MAGIC.len()] {
            m if m == MAGIC => 3,
            m if m == MAGIC_V2 => 2,
            m if m == MAGIC_V1 => 1,
            _ => return Err(ChipError::Corrupt("not a sevd chip file")),
        };
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if sha256(body) != sum {
            return Err(ChipError::Corrupt("checksum mismatch"));
        }
        let mut rest = &body[MAGIC.len()..];
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        seed.copy_from_slice(&rest[..SEED_LEN]);
        rest = &rest[SEED_LEN..];
        let mut cas = vec![];
        for _ in 0..2 {
            if rest.len() < 4 {
                return Err(ChipError::Corrupt("truncated"));
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let bytes = rest
                .get(4..4 + len)
                .ok_or(ChipError::Corrupt("truncated"))?;
            cas.push(
                CaCertificate::decode(bytes)
                    .map_err(|_| ChipError::Corrupt("bad CA certificate"))?,
            );
            rest = &rest[4 + len..];
        }
        let product = if format == 3 {
            let (code, before) = rest.split_last().ok_or(ChipError::Corrupt("truncated"))?;
            rest = before;
            Product::from_code(*code).ok_or(ChipError::Corrupt("an unknown product"))?
        } else {
            Product::Milan
        };
        let tcb = if format == 1 {
            DEFAULT_TCB
        } else {
            let at = rest
                .len()
                .checked_sub(8)
                .ok_or(ChipError::Corrupt("truncated"))?;
            let (cek, tcb) = rest.split_at(at);
            rest = cek;
            let tcb = u64::from_le_bytes(tcb.try_into().map_err(|_| ChipError::Corrupt("TCB"))?);
            product
                .tcb(tcb)
                .ok_or(ChipError::Corrupt("TCB has reserved bits set"))?
        };
        if rest.len() != CERT_LEN {
            return Err(ChipError::Corrupt("bad CEK certificate"));
        }
        let cek =
            Certificate::decode(rest).map_err(|_| ChipError::Corrupt("bad CEK certificate"))?;
        let ask = cas.pop().ok_or(ChipError::Corrupt("truncated"))?;
        let ark = cas.pop().ok_or(ChipError::Corrupt("truncated"))?;
        Ok(Chip {
            seed,
            ark,
            ask,
            cek,
            tcb,
            product,
        })
    }
}

fn cek_from_seed(seed: &[u8]) -> Result<EcKeyPair, CryptoError> {
    // As the Genoa firmware does: key material = KDF(seed, "sev-chip-endorsement-key"),
    // 48 bytes plus 8 extra to make the reduction mod n uniform.
    let material = kdf(seed, b"sev-chip-endorsement-key", &[], 56)?;
    EcKeyPair::from_seed(&material)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcb_round_trips_and_format_1_reads_as_the_default() {
        let mut chip = crate::firmware::test_support::chip();
        chip.tcb = "1:2:3:4".parse().unwrap();
        chip.product = Product::Genoa;
        let bytes = chip.encode();
        let back = Chip::decode(&bytes).unwrap();
        assert_eq!((back.tcb, back.product), (chip.tcb, Product::Genoa));

        // Format 2: no product (a Milan); format 1: no TCB either.
        let body = &bytes[MAGIC.len()..bytes.len() - 32 - 1];
        let mut v2 = MAGIC_V2.to_vec();
        v2.extend_from_slice(body);
        let sum = sha256(&v2);
        v2.extend_from_slice(&sum);
        let old = Chip::decode(&v2).unwrap();
        assert_eq!((old.tcb, old.product), (chip.tcb, Product::Milan));
        let body = &bytes[MAGIC.len()..bytes.len() - 32 - 1 - 8];
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(body);
        let sum = sha256(&v1);
        v1.extend_from_slice(&sum);
        let old = Chip::decode(&v1).unwrap();
        assert_eq!(old.tcb, DEFAULT_TCB);
        assert_eq!(old.id().unwrap(), chip.id().unwrap());

        let mut bad = bytes.to_vec();
        bad[MAGIC.len() + SEED_LEN] ^= 1;
        assert!(Chip::decode(&bad).is_err());
    }

    /// A Turin's chip id is 8 bytes and zeros; its TCB has an FMC, which its VCEK is bound
    /// to; the file keeps both.
    #[test]
    fn a_turin_has_an_8_byte_id_and_an_fmc() {
        let mut chip = crate::firmware::test_support::chip();
        chip.product = Product::Turin;
        chip.tcb = Product::Turin.default_tcb();
        let id = chip.id().unwrap();
        assert!(id[..8].iter().any(|b| *b != 0) && id[8..].iter().all(|b| *b == 0));
        let at = |fmc| {
            chip.vcek(TcbVersion {
                fmc: Some(fmc),
                ..chip.tcb
            })
            .unwrap()
        };
        let key = |k: EcKeyPair| k.public().unwrap().to_spki_der().unwrap();
        assert_ne!(key(at(0)), key(at(1)));
        let back = Chip::decode(&chip.encode()).unwrap();
        assert_eq!((back.tcb, back.product), (chip.tcb, Product::Turin));
    }
}
