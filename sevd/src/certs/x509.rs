//! AMD's SEV-SNP certificates in X.509, in the shape AMD's key server hands out (snp.md §8.2):
//! the ARK (self-signed) and the ASK, RSA-4096 with RSASSA-PSS SHA-384 (salt 48) and CA
//! extensions, and the VCEK, a P-384 key signed by the ASK and carrying, instead of standard
//! extensions, AMD's: product name, the TCB's SPLs and the chip's HWID.

use crate::part::Product;
use std::time::Duration;

use der::asn1::{
    BitString, Ia5StringRef, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef,
};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
pub use x509_cert::Certificate;

use uapi::snp::TcbVersion;

use crate::crypto::ca::{verify_pss_sha384_be, RsaKeyPair};
use crate::crypto::ecc::EcPublic;
use crate::crypto::CryptoError;

/// Why an X.509 certificate was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// Not DER, or not the certificate expected.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify under the issuer's key.
    #[error("the {0} certificate's signature does not verify")]
    BadSignature(&'static str),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn malformed(e: impl std::fmt::Display) -> X509Error {
    X509Error::Malformed(e.to_string())
}

/// AMD's arc for its extensions (1.3.6.1.4.1.3704.1).
const AMD_ARC: &str = "1.3.6.1.4.1.3704.1";

fn amd_oid(suffix: &str) -> Result<ObjectIdentifier, X509Error> {
    ObjectIdentifier::new(&format!("{AMD_ARC}.{suffix}")).map_err(malformed)
}

/// The subject's common name (CN), if it has one in UTF-8 or printable form.
pub fn subject_cn(cert: &Certificate) -> Option<String> {
    let cn = ObjectIdentifier::new("2.5.4.3").ok()?;
    let value = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|a| a.oid == cn)?
        .value
        .clone();
    value
        .decode_as::<der::asn1::Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            value
                .decode_as::<der::asn1::PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

/// `OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices, CN=<cn>`, in that
/// order, C as a PrintableString and the rest UTF8String, as AMD's certificates have them.
pub fn amd_name(cn: &str) -> Result<Name, X509Error> {
    const OU: &str = "2.5.4.11";
    const C: &str = "2.5.4.6";
    const L: &str = "2.5.4.7";
    const ST: &str = "2.5.4.8";
    const O: &str = "2.5.4.10";
    const CN: &str = "2.5.4.3";
    let mut rdns = vec![];
    for (oid, value) in [
        (OU, "Engineering"),
        (C, "US"),
        (L, "Santa Clara"),
        (ST, "CA"),
        (O, "Advanced Micro Devices"),
        (CN, cn),
    ] {
        let value = if oid == C {
            Any::encode_from(&PrintableStringRef::new(value).map_err(malformed)?)
        } else {
            Any::encode_from(&Utf8StringRef::new(value).map_err(malformed)?)
        }
        .map_err(malformed)?;
        let atv = AttributeTypeAndValue {
            oid: ObjectIdentifier::new(oid).map_err(malformed)?,
            value,
        };
        let set = SetOfVec::try_from(vec![atv]).map_err(malformed)?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

fn extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, X509Error> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(malformed)?).map_err(malformed)?,
    })
}

/// A key identifier: the first 20 bytes of SHA-256 of the key (RFC 7093, method 1).
fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Result<OctetString, X509Error> {
    OctetString::new(&Sha256::digest(spki.subject_public_key.raw_bytes())[..20]).map_err(malformed)
}

fn rsa_spki(key: &RsaKeyPair) -> Result<SubjectPublicKeyInfoOwned, X509Error> {
    use rsa::pkcs8::EncodePublicKey;
    let der = key.public().to_public_key_der().map_err(malformed)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(malformed)
}

fn pss_sha384() -> Result<AlgorithmIdentifierOwned, X509Error> {
    rsa::pss::get_default_pss_signature_algo_id::<sha2::Sha384>().map_err(malformed)
}

/// What varies between AMD's three certificates.
struct Template {
    serial: u32,
    issuer: Name,
    subject: Name,
    years: u64,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
}

/// Signs `t` with `signer`'s RSA key (RSASSA-PSS SHA-384, salt 48).
fn sign(t: Template, signer: &RsaKeyPair) -> Result<Certificate, X509Error> {
    let serial = t.serial.to_be_bytes();
    let first = serial.iter().position(|b| *b != 0).unwrap_or(3);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial[first..]).map_err(malformed)?,
        signature: pss_sha384()?,
        issuer: t.issuer,
        validity: Validity::from_now(Duration::from_secs(t.years * 365 * 86_400))
            .map_err(malformed)?,
        subject: t.subject,
        subject_public_key_info: t.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!t.extensions.is_empty()).then_some(t.extensions),
    };
    let der = tbs.to_der().map_err(malformed)?;
    let sig = signer.sign_pss_sha384_be(&der)?;
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: pss_sha384()?,
        signature: BitString::from_bytes(&sig).map_err(malformed)?,
    })
}

/// The ARK: self-signed, serial 0x10000, 25 years, keyUsage certSign and cRLSign, CA.
pub fn ark(key: &RsaKeyPair, product: Product) -> Result<Certificate, X509Error> {
    let spki = rsa_spki(key)?;
    let name = amd_name(&format!("ARK-{}", product.name()))?;
    let usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
    let ski = SubjectKeyIdentifier(key_id(&spki)?);
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    let extensions = vec![
        extension(der::oid::db::rfc5280::ID_CE_KEY_USAGE, true, &usage)?,
        extension(
            der::oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
            false,
            &ski,
        )?,
        extension(der::oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS, true, &bc)?,
    ];
    sign(
        Template {
            serial: 0x10000,
            issuer: name.clone(),
            subject: name,
            years: 25,
            spki,
            extensions,
        },
        key,
    )
}

/// The ASK (`SEV-<product>`): serial 0x10001, 25 years, signed by the ARK, CA with path
/// length 0, keyUsage certSign.
pub fn ask(
    ark_key: &RsaKeyPair,
    ark: &Certificate,
    key: &RsaKeyPair,
    product: Product,
) -> Result<Certificate, X509Error> {
    let spki = rsa_spki(key)?;
    let ski = SubjectKeyIdentifier(key_id(&spki)?);
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(key_id(&ark.tbs_certificate.subject_public_key_info)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: Some(0),
    };
    let usage = KeyUsage(KeyUsages::KeyCertSign.into());
    let extensions = vec![
        extension(
            der::oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
            false,
            &ski,
        )?,
        extension(
            der::oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
            false,
            &aki,
        )?,
        extension(der::oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS, true, &bc)?,
        extension(der::oid::db::rfc5280::ID_CE_KEY_USAGE, true, &usage)?,
    ];
    sign(
        Template {
            serial: 0x10001,
            issuer: ark.tbs_certificate.subject.clone(),
            subject: amd_name(&format!("SEV-{}", product.name()))?,
            years: 25,
            spki,
            extensions,
        },
        ark_key,
    )
}

/// The VCEK of chip `chip_id` at `tcb`: `vcek` signed by the ASK, serial 0, 7 years, only
/// AMD's extensions (structVersion, productName, the SPLs, hwID as a DER OCTET STRING of
/// the 64-byte CHIP_ID, the form every verifier parses). Where the TCB has an FMC (Turin)
/// they are as AMD's Turin VCEKs have them: structVersion 1, no spl_4, fmcSPL (.3.9) added;
/// but hwID stays the 64-byte OCTET STRING, as snpguest 0.11 takes no other length.
pub fn vcek(
    ask_key: &RsaKeyPair,
    ask: &Certificate,
    vcek: &EcPublic,
    tcb: TcbVersion,
    chip_id: &[u8; 64],
    product: Product,
) -> Result<Certificate, X509Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(&vcek.to_spki_der()?).map_err(malformed)?;
    let int = |v: u8| der::asn1::Uint::new(&[v]).map_err(malformed);
    let mut extensions = vec![
        extension(amd_oid("1")?, false, &int(tcb.fmc.is_some() as u8)?)?,
        extension(
            amd_oid("2")?,
            false,
            &Ia5StringRef::new(product.stepping_name()).map_err(malformed)?,
        )?,
    ];
    let spl_4 = if tcb.fmc.is_some() { None } else { Some(0) };
    let spls = [
        (9, tcb.fmc),
        (1, Some(tcb.bootloader)),
        (2, Some(tcb.tee)),
        (3, Some(tcb.snp)),
        (4, spl_4),
        (5, Some(0)),
        (6, Some(0)),
        (7, Some(0)),
        (8, Some(tcb.microcode)),
    ];
    for (n, spl) in spls {
        if let Some(spl) = spl {
            extensions.push(extension(amd_oid(&format!("3.{n}"))?, false, &int(spl)?)?);
        }
    }
    extensions.push(extension(
        amd_oid("4")?,
        false,
        &OctetString::new(&chip_id[..]).map_err(malformed)?,
    )?);
    sign(
        Template {
            serial: 0,
            issuer: ask.tbs_certificate.subject.clone(),
            subject: amd_name("SEV-VCEK")?,
            years: 7,
            spki,
            extensions,
        },
        ask_key,
    )
}

/// The TCB in a VCEK's SPL extensions (`None` if one is missing or not an INTEGER); with
/// an FMC where it has fmcSPL.
pub fn vcek_tcb(vcek: &Certificate) -> Option<TcbVersion> {
    let exts = vcek.tbs_certificate.extensions.as_ref()?;
    let spl = |n: u32| {
        let oid = amd_oid(&format!("3.{n}")).ok()?;
        let value = exts
            .iter()
            .find(|e| e.extn_id == oid)?
            .extn_value
            .as_bytes();
        match value {
            [0x02, 1, v] | [0x02, 2, 0, v] => Some(*v),
            _ => None,
        }
    };
    let has_fmc = amd_oid("3.9")
        .ok()
        .is_some_and(|oid| exts.iter().any(|e| e.extn_id == oid));
    Some(TcbVersion {
        fmc: if has_fmc { Some(spl(9)?) } else { None },
        bootloader: spl(1)?,
        tee: spl(2)?,
        snp: spl(3)?,
        microcode: spl(8)?,
    })
}

/// Whether `issuer` signed `cert` (RSASSA-PSS SHA-384, as AMD's certificates are).
pub fn verify(
    issuer: &Certificate,
    cert: &Certificate,
    what: &'static str,
) -> Result<(), X509Error> {
    if cert.signature_algorithm != pss_sha384()? {
        return Err(X509Error::Malformed(format!(
            "the {what} certificate is not signed with RSASSA-PSS SHA-384"
        )));
    }
    let key_der = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(malformed)?;
    let key = {
        use rsa::pkcs8::DecodePublicKey;
        rsa::RsaPublicKey::from_public_key_der(&key_der).map_err(malformed)?
    };
    if key.size() != 512 {
        return Err(X509Error::Malformed(format!(
            "the issuer of the {what} is not RSA-4096"
        )));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(malformed)?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature bits"))?;
    if verify_pss_sha384_be(&key, &tbs, sig) {
        Ok(())
    } else {
        Err(X509Error::BadSignature(what))
    }
}

/// DER.
pub fn to_der(cert: &Certificate) -> Result<Vec<u8>, X509Error> {
    cert.to_der().map_err(malformed)
}

/// PEM (`CERTIFICATE`).
pub fn to_pem(cert: &Certificate) -> Result<String, X509Error> {
    use der::EncodePem;
    cert.to_pem(der::pem::LineEnding::LF).map_err(malformed)
}

/// A certificate from DER.
pub fn from_der(der: &[u8]) -> Result<Certificate, X509Error> {
    Certificate::from_der(der).map_err(malformed)
}

#[cfg(test)]
mod tests;
