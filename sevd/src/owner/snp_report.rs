//! The owner's check of an SNP attestation report (snp.md §9): the VCEK chain to a trusted
//! ARK, the VCEK's signature over bytes 0x000–0x29F, the report's TCB against the VCEK's,
//! then the fields the owner expects. `sevctl snp verify` and `sevctl launch` share it.

use uapi::snp::report as r;
use uapi::snp::{TcbLayout, TcbVersion};

use crate::certs::x509::X509Error;
use crate::crypto::ecc::EcPublic;
use crate::kds::VcekChain;

/// What the owner expects the report to say; `None` is not checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// MEASUREMENT, the launch digest.
    pub measurement: Option<[u8; 48]>,
    /// POLICY.
    pub policy: Option<u64>,
    /// HOST_DATA, from SNP_LAUNCH_FINISH.
    pub host_data: Option<[u8; 32]>,
    /// REPORT_DATA, from the guest's request.
    pub report_data: Option<[u8; 64]>,
}

/// Why a report is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Too short to be a report.
    #[error("{0} bytes, not a report ({len} bytes)", len = r::LEN)]
    Short(usize),
    /// The chain does not verify.
    #[error("{0}")]
    Chain(X509Error),
    /// The VCEK holds no P-384 key.
    #[error("the VCEK holds no P-384 key")]
    NoKey,
    /// The signature does not verify under the VCEK.
    #[error("the VCEK did not sign the report")]
    Signature,
    /// The report's TCB is not the one the VCEK was made for.
    #[error("the report's TCB {report} is not the VCEK's {vcek}")]
    Tcb {
        /// REPORTED_TCB.
        report: String,
        /// The VCEK's SPL extensions.
        vcek: String,
    },
    /// A field is not what the owner expects.
    #[error("{field}: the report has {have}, not {want}")]
    Field {
        /// The field.
        field: &'static str,
        /// The report's value.
        have: String,
        /// The expected value.
        want: String,
    },
}

/// Checks `report` against `chain` and `expected`; returns each check passed, said for a
/// person, in order.
pub fn verify(
    report: &[u8],
    chain: &VcekChain,
    expected: &Expected,
) -> Result<Vec<String>, ReportError> {
    if report.len() < r::LEN {
        return Err(ReportError::Short(report.len()));
    }
    let mut checks = vec![];
    chain.verify().map_err(ReportError::Chain)?;
    checks.push("chain: ARK self-signed, ARK -> ASK -> VCEK".to_string());

    let vcek = der::Encode::to_der(&chain.vcek.tbs_certificate.subject_public_key_info)
        .ok()
        .and_then(|d| EcPublic::from_spki_der(&d))
        .ok_or(ReportError::NoKey)?;
    let sig: &[u8; 512] = report[r::SIGNATURE.start..r::LEN]
        .try_into()
        .map_err(|_| ReportError::Short(report.len()))?;
    if !vcek.verify(uapi::cert::algo::ECDSA_SHA384, &report[r::SIGNED], sig) {
        return Err(ReportError::Signature);
    }
    checks.push("signature: the VCEK signed the report".into());

    // The VCEK's TCB says whether the part has an FMC, and so how the u64 reads.
    let vcek_tcb = chain.vcek_tcb();
    let layout = vcek_tcb.map_or(TcbLayout::Legacy, |t| t.layout());
    let reported = TcbVersion::from_u64(r::u64_at(report, r::REPORTED_TCB_AT), layout);
    let show = |t: Option<TcbVersion>| t.map_or_else(|| "?".into(), |t| t.to_string());
    if reported.is_none() || vcek_tcb != reported {
        return Err(ReportError::Tcb {
            report: show(reported),
            vcek: show(vcek_tcb),
        });
    }
    checks.push(format!(
        "TCB: {} in the report and the VCEK",
        show(reported)
    ));

    let mut field = |name: &'static str, want: Option<&[u8]>, range: std::ops::Range<usize>| {
        let Some(want) = want else { return Ok(()) };
        if report[range.clone()] != *want {
            return Err(ReportError::Field {
                field: name,
                have: hex::encode(&report[range]),
                want: hex::encode(want),
            });
        }
        checks.push(format!("{name}: as expected"));
        Ok(())
    };
    field(
        "measurement",
        expected.measurement.as_ref().map(|v| &v[..]),
        r::MEASUREMENT,
    )?;
    field(
        "host-data",
        expected.host_data.as_ref().map(|v| &v[..]),
        r::HOST_DATA,
    )?;
    field(
        "report-data",
        expected.report_data.as_ref().map(|v| &v[..]),
        r::REPORT_DATA,
    )?;
    if let Some(want) = expected.policy {
        let have = r::u64_at(report, r::POLICY_AT);
        if want != have {
            return Err(ReportError::Field {
                field: "policy",
                have: format!("{have:#x}"),
                want: format!("{want:#x}"),
            });
        }
        checks.push("policy: as expected".into());
    }
    Ok(checks)
}
