//! Certificate-chain verification, as a guest owner does it (firmware-semantics.md §4.1, §4.2):
//! ARK self-signed → ASK by ARK → CEK by ASK → PEK by CEK; OCA self-signed → PEK by OCA;
//! PEK → PDH. The firmware uses the same checks on PEK_CERT_IMPORT.

pub mod x509;

use uapi::ca::CaCertificate;
use uapi::cert::{algo, usage, Certificate};

use crate::crypto::ca::{ca_digest, ca_public_key, verify_pss, PssHash};
use crate::crypto::ecc::EcPublic;

/// Why a certificate or a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The certificate itself is malformed or of the wrong kind.
    #[error("{name} certificate is invalid: {why}")]
    Invalid {
        /// Which certificate.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// No signature slot holds the expected signer.
    #[error("{signee} certificate carries no signature by the {signer}")]
    NotSigned {
        /// Expected signer.
        signer: &'static str,
        /// Certificate checked.
        signee: &'static str,
    },
    /// The signature is there but wrong.
    #[error("the {signer}'s signature on the {signee} certificate does not verify")]
    BadSignature {
        /// Signer.
        signer: &'static str,
        /// Certificate checked.
        signee: &'static str,
    },
}

impl CertError {
    /// Whether the failure is a bad signature (the firmware's BAD_SIGNATURE) rather than a
    /// malformed certificate (INVALID_CERTIFICATE).
    pub fn is_signature(&self) -> bool {
        matches!(self, CertError::BadSignature { .. })
    }
}

fn invalid(name: &'static str, why: impl Into<String>) -> CertError {
    CertError::Invalid {
        name,
        why: why.into(),
    }
}

/// Checks that `cert` is a version-1 certificate with an EC P-384 key of `want_usage`.
pub fn check_ecc(
    cert: &Certificate,
    name: &'static str,
    want_usage: u32,
) -> Result<EcPublic, CertError> {
    if cert.version != 1 {
        return Err(invalid(name, format!("version {} is not 1", cert.version)));
    }
    if cert.usage != want_usage {
        return Err(invalid(
            name,
            format!("usage {:#x}, expected {want_usage:#x}", cert.usage),
        ));
    }
    EcPublic::from_certificate(cert)
        .ok_or_else(|| invalid(name, "public key is not a point on P-384"))
}

/// Verifies that `signer` (an ECDSA key) signed `signee`.
pub fn verify_sev(
    signer: &Certificate,
    signer_name: &'static str,
    signee: &Certificate,
    signee_name: &'static str,
) -> Result<(), CertError> {
    let key = EcPublic::from_certificate(signer)
        .ok_or_else(|| invalid(signer_name, "public key is not a point on P-384"))?;
    let slot = signee
        .signature_by(signer.usage, signer.algo)
        .ok_or(CertError::NotSigned {
            signer: signer_name,
            signee: signee_name,
        })?;
    if key.verify(signer.algo, &signee.body(), &slot.sig) {
        Ok(())
    } else {
        Err(CertError::BadSignature {
            signer: signer_name,
            signee: signee_name,
        })
    }
}

/// Verifies that the CA key `signer` signed the CA certificate `signee`.
pub fn verify_ca(
    signer: &CaCertificate,
    signer_name: &'static str,
    signee: &CaCertificate,
    signee_name: &'static str,
) -> Result<(), CertError> {
    if signee.version != 1 {
        return Err(invalid(signee_name, "version is not 1"));
    }
    if signee.pubexp.len() != signee.modulus.len() {
        return Err(invalid(
            signee_name,
            "PUBEXP_SIZE differs from MODULUS_SIZE",
        ));
    }
    if signee.certifying_id != signer.key_id {
        return Err(invalid(
            signee_name,
            format!("CERTIFYING_ID is not the {signer_name}'s KEY_ID"),
        ));
    }
    let key = ca_public_key(signer).map_err(|_| invalid(signer_name, "RSA key is malformed"))?;
    let digest = ca_digest(signer.modulus_bits());
    if verify_pss(&key, digest, &signee.signed_part(), &signee.signature) {
        Ok(())
    } else {
        Err(CertError::BadSignature {
            signer: signer_name,
            signee: signee_name,
        })
    }
}

/// Verifies the ASK's RSA signature on the CEK (RSA_SHA256 on Naples, RSA_SHA384 later).
pub fn verify_cek(ask: &CaCertificate, cek: &Certificate) -> Result<(), CertError> {
    let slot = cek
        .sigs
        .iter()
        .find(|s| s.usage == usage::ASK && matches!(s.algo, algo::RSA_SHA256 | algo::RSA_SHA384))
        .ok_or(CertError::NotSigned {
            signer: "ASK",
            signee: "CEK",
        })?;
    let digest = if slot.algo == algo::RSA_SHA256 {
        PssHash::Sha256
    } else {
        PssHash::Sha384
    };
    let key = ca_public_key(ask).map_err(|_| invalid("ASK", "RSA key is malformed"))?;
    if verify_pss(&key, digest, &cek.body(), &slot.sig) {
        Ok(())
    } else {
        Err(CertError::BadSignature {
            signer: "ASK",
            signee: "CEK",
        })
    }
}

/// AMD's part of a chain: ASK and ARK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaChain {
    /// AMD SEV signing key.
    pub ask: CaCertificate,
    /// AMD root key.
    pub ark: CaCertificate,
}

impl CaChain {
    /// ARK self-signed, ASK signed by the ARK.
    pub fn verify(&self) -> Result<(), CertError> {
        if self.ark.key_usage != 0x00 {
            return Err(invalid("ARK", "KEY_USAGE is not ARK (0x00)"));
        }
        if self.ask.key_usage != usage::ASK {
            return Err(invalid("ASK", "KEY_USAGE is not ASK (0x13)"));
        }
        verify_ca(&self.ark, "ARK", &self.ark, "ARK")?;
        verify_ca(&self.ark, "ARK", &self.ask, "ASK")
    }
}

/// The platform's part of a chain, as PDH_CERT_EXPORT gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformChain {
    /// Platform Diffie-Hellman key.
    pub pdh: Certificate,
    /// Platform endorsement key.
    pub pek: Certificate,
    /// Owner certificate authority.
    pub oca: Certificate,
    /// Chip endorsement key.
    pub cek: Certificate,
}

impl PlatformChain {
    /// OCA self-signed, PEK by OCA and by CEK, PDH by PEK. The CEK is not checked here.
    pub fn verify(&self) -> Result<(), CertError> {
        check_ecc(&self.oca, "OCA", usage::OCA)?;
        check_ecc(&self.pek, "PEK", usage::PEK)?;
        check_ecc(&self.cek, "CEK", usage::CEK)?;
        check_ecc(&self.pdh, "PDH", usage::PDH)?;
        verify_sev(&self.oca, "OCA", &self.oca, "OCA")?;
        verify_sev(&self.oca, "OCA", &self.pek, "PEK")?;
        verify_sev(&self.cek, "CEK", &self.pek, "PEK")?;
        verify_sev(&self.pek, "PEK", &self.pdh, "PDH")
    }
}

/// A whole chain from the ARK to the PDH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullChain {
    /// ASK and ARK.
    pub ca: CaChain,
    /// PDH, PEK, OCA and CEK.
    pub platform: PlatformChain,
}

impl FullChain {
    /// Every link.
    pub fn verify(&self) -> Result<(), CertError> {
        self.ca.verify()?;
        verify_cek(&self.ca.ask, &self.platform.cek)?;
        self.platform.verify()
    }
}
