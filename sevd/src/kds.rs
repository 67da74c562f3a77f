//! This project's stand-in for AMD's key distribution server (KDS): the SNP ARK and ASK with
//! their private keys, which sign a VCEK certificate for any TCB of a chip, as AMD's server
//! does for AMD's parts. It lives beside the chip, in the state directory (`kds.bin`, mode
//! 0600), and never inside the firmware: a PSP holds no root key.
//!
//! File form: `SEVDKDS1` ‖ (u32 length ‖ bytes) for the ARK's and ASK's PKCS #8 keys and
//! their certificates' DER ‖ SHA-256 of all before it.

use crate::part::Product;
use zeroize::Zeroizing;

use uapi::snp::TcbVersion;
use x509_cert::Certificate;

use crate::certs::x509::{self, X509Error};
use crate::crypto::ca::RsaKeyPair;
use crate::crypto::sha256;
use crate::firmware::chip::Chip;

const MAGIC: &[u8; 8] = b"SEVDKDS1";

/// The key server's keys and certificates.
pub struct KeyServer {
    ark_key: RsaKeyPair,
    ask_key: RsaKeyPair,
    /// The ARK certificate (self-signed).
    pub ark: Certificate,
    /// The ASK certificate (signed by the ARK).
    pub ask: Certificate,
}

impl std::fmt::Debug for KeyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServer").finish_non_exhaustive()
    }
}

impl KeyServer {
    /// A new ARK and ASK (two RSA-4096 keys: seconds).
    pub fn generate(product: Product) -> Result<Self, X509Error> {
        let ark_key = RsaKeyPair::generate(4096)?;
        let ask_key = RsaKeyPair::generate(4096)?;
        let ark = x509::ark(&ark_key, product)?;
        let ask = x509::ask(&ark_key, &ark, &ask_key, product)?;
        Ok(KeyServer {
            ark_key,
            ask_key,
            ark,
            ask,
        })
    }

    /// The VCEK certificate of `chip` at `tcb`: its versioned key, its CHIP_ID as hwID.
    pub fn vcek(&self, chip: &Chip, tcb: TcbVersion) -> Result<Certificate, X509Error> {
        let key = chip.vcek(tcb)?.public()?;
        x509::vcek(
            &self.ask_key,
            &self.ask,
            &key,
            tcb,
            &chip.id()?,
            chip.product,
        )
    }

    /// The product its ARK names (`ARK-Milan`).
    pub fn product(&self) -> Option<Product> {
        x509::subject_cn(&self.ark)?
            .strip_prefix("ARK-")
            .and_then(Product::from_name)
    }

    /// The file form.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, X509Error> {
        let mut out = Zeroizing::new(MAGIC.to_vec());
        for blob in [
            self.ark_key.to_pkcs8_der()?,
            self.ask_key.to_pkcs8_der()?,
            Zeroizing::new(x509::to_der(&self.ark)?),
            Zeroizing::new(x509::to_der(&self.ask)?),
        ] {
            out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
            out.extend_from_slice(&blob);
        }
        let sum = sha256(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Reads the file form back: its checksum, every field, and the chain.
    pub fn decode(bytes: &[u8]) -> Result<Self, X509Error> {
        let bad = |why: &str| X509Error::Malformed(format!("key server store: {why}"));
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a sevd key server store"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if sha256(body) != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut rest = &body[MAGIC.len()..];
        let mut blobs = vec![];
        for _ in 0..4 {
            let len = rest.get(..4).ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let blob = rest.get(4..4 + len).ok_or_else(|| bad("truncated"))?;
            blobs.push(blob);
            rest = &rest[4 + len..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let ks = KeyServer {
            ark_key: RsaKeyPair::from_pkcs8_der(blobs[0])?,
            ask_key: RsaKeyPair::from_pkcs8_der(blobs[1])?,
            ark: x509::from_der(blobs[2])?,
            ask: x509::from_der(blobs[3])?,
        };
        x509::verify(&ks.ark, &ks.ark, "ARK")?;
        x509::verify(&ks.ark, &ks.ask, "ASK")?;
        Ok(ks)
    }
}

/// The certificates a person fetches from the key server for a platform: ARK, ASK and the
/// VCEK at its reported TCB.
#[derive(Debug, Clone)]
pub struct VcekChain {
    /// The ARK.
    pub ark: Certificate,
    /// The ASK.
    pub ask: Certificate,
    /// The VCEK.
    pub vcek: Certificate,
}

impl VcekChain {
    /// Checks every link: ARK self-signed, ARK → ASK, ASK → VCEK.
    pub fn verify(&self) -> Result<(), X509Error> {
        x509::verify(&self.ark, &self.ark, "ARK")?;
        x509::verify(&self.ark, &self.ask, "ASK")?;
        x509::verify(&self.ask, &self.vcek, "VCEK")
    }

    /// The certificates by the names they are published under ([`NAMES`]).
    pub fn named(&self) -> [(&'static str, &Certificate); 3] {
        [
            (NAMES[0], &self.ark),
            (NAMES[1], &self.ask),
            (NAMES[2], &self.vcek),
        ]
    }

    /// The TCB the VCEK was made for, from its SPL extensions.
    pub fn vcek_tcb(&self) -> Option<TcbVersion> {
        x509::vcek_tcb(&self.vcek)
    }
}

/// The file names the certificates are published under in a state directory: `ark`, `ask`
/// and `vcek`, each `.pem` and `.der`.
pub const NAMES: [&str; 3] = ["ark", "ask", "vcek"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_round_trips_and_mints_vceks() {
        let ks = KeyServer::generate(Product::Milan).unwrap();
        let bytes = ks.encode().unwrap();
        let back = KeyServer::decode(&bytes).unwrap();
        let chip = crate::firmware::test_support::chip();
        let tcb: TcbVersion = "3:0:8:115".parse().unwrap();
        let chain = VcekChain {
            ark: back.ark.clone(),
            ask: back.ask.clone(),
            vcek: back.vcek(&chip, tcb).unwrap(),
        };
        chain.verify().unwrap();
        assert_eq!(chain.vcek_tcb(), Some(tcb));
        let mut bad = bytes.to_vec();
        bad[20] ^= 1;
        assert!(KeyServer::decode(&bad).is_err());
    }
}
