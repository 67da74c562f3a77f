//! MSG_REPORT_REQ's answer: the attestation report (snp.md §6, §9.6), filled from the guest
//! context, the platform's TCBs and versions, and signed with the VCEK at the reported TCB
//! (or the VLEK, when one is loaded).

use uapi::snp::guest_msg::report_req;
use uapi::snp::guest_msg::report_rsp;
use uapi::snp::report::*;
use uapi::Status;

use crate::crypto::ecc::EcKeyPair;
use crate::firmware::{internal, Firmware, FwResult};

/// The request's KEY_SEL (bits 1:0 after VMPL): 0 the VLEK if loaded else the VCEK, 1 the
/// VCEK, 2 the VLEK.
const KEY_SEL_MASK: u32 = 0b11;

impl Firmware {
    /// The payload of MSG_REPORT_RSP for a request sealed with VMPCK `vmpck`.
    pub(super) fn report_response(&self, gctx: u32, vmpck: u32, req: &[u8]) -> FwResult<Vec<u8>> {
        let mut rsp = vec![0u8; report_rsp::LEN];
        let status = match self.report(gctx, vmpck, req) {
            Ok(report) => {
                rsp[report_rsp::REPORT_AT..].copy_from_slice(&report);
                rsp[report_rsp::REPORT_SIZE_AT..report_rsp::REPORT_SIZE_AT + 4]
                    .copy_from_slice(&(LEN as u32).to_le_bytes());
                Status::Success
            }
            Err(Status::HwerrorPlatform) => return Err(Status::HwerrorPlatform),
            Err(s) => s,
        };
        rsp[..4].copy_from_slice(&(status as u32).to_le_bytes());
        Ok(rsp)
    }

    fn report(&self, gctx: u32, vmpck: u32, req: &[u8]) -> FwResult<Vec<u8>> {
        let vmpl = u32_at(req, report_req::VMPL_AT);
        let key_sel = u32_at(req, report_req::KEY_SEL_AT);
        if vmpl < vmpck
            || vmpl > 3
            || key_sel & !KEY_SEL_MASK != 0
            || req[report_req::KEY_SEL_AT + 4..report_req::LEN]
                .iter()
                .any(|b| *b != 0)
        {
            return Err(Status::InvalidParam);
        }
        let guest = self.snp_guest(gctx)?;
        let store = &self.snp.store;
        let reported = store.reported_tcb();
        // Which key signs: the VLEK when there is one and the request allows it.
        let use_vlek = match key_sel {
            0 => self.snp.vlek.is_some(),
            1 => false,
            2 if self.snp.vlek.is_some() => true,
            _ => return Err(Status::InvalidKey),
        };
        if !use_vlek && guest.vcek_disabled && !store.mask_chip_key {
            return Err(Status::InvalidKey);
        }
        let mut r = vec![0u8; LEN];
        let put32 =
            |r: &mut [u8], at: usize, v: u32| r[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |r: &mut [u8], at: usize, v: u64| r[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put32(&mut r, VERSION_AT, VERSION);
        put64(&mut r, POLICY_AT, guest.policy);
        if let Some(id) = &guest.identity {
            put32(&mut r, GUEST_SVN_AT, id.guest_svn);
            r[FAMILY_ID].copy_from_slice(&id.family_id);
            r[IMAGE_ID].copy_from_slice(&id.image_id);
            r[ID_KEY_DIGEST].copy_from_slice(&id.id_key_digest);
            if let Some(author) = id.author_key_digest {
                r[AUTHOR_KEY_DIGEST].copy_from_slice(&author);
            }
        }
        put32(&mut r, VMPL_AT, vmpl);
        put32(&mut r, SIGNATURE_ALGO_AT, 1);
        put64(&mut r, CURRENT_TCB_AT, self.current_tcb().to_u64());
        let alias = if self.alias_check_complete() {
            PLATFORM_INFO_ALIAS_CHECK_COMPLETE
        } else {
            0
        };
        put64(
            &mut r,
            PLATFORM_INFO_AT,
            PLATFORM_INFO_SMT_EN | PLATFORM_INFO_TSME_EN | alias,
        );
        let signing = if store.mask_chip_key {
            SIGNING_KEY_NONE
        } else if use_vlek {
            SIGNING_KEY_VLEK
        } else {
            SIGNING_KEY_VCEK
        };
        let author_en = guest
            .identity
            .is_some_and(|i| i.author_key_digest.is_some());
        put32(
            &mut r,
            KEY_INFO_AT,
            author_en as u32 | (store.mask_chip_key as u32) << 1 | signing << 2,
        );
        r[REPORT_DATA].copy_from_slice(&req[report_req::REPORT_DATA]);
        r[MEASUREMENT].copy_from_slice(&guest.ld.bytes());
        r[HOST_DATA].copy_from_slice(&guest.host_data);
        r[REPORT_ID].copy_from_slice(&guest.report_id);
        r[REPORT_ID_MA].copy_from_slice(&guest.report_id_ma);
        put64(&mut r, REPORTED_TCB_AT, reported.to_u64());
        r[CPUID_FAM_ID_AT..CPUID_FAM_ID_AT + 3].copy_from_slice(&self.chip.product.fms());
        if !store.mask_chip_id {
            r[CHIP_ID].copy_from_slice(&self.chip.id().map_err(|e| internal("chip id", e))?);
        }
        put64(&mut r, COMMITTED_TCB_AT, store.committed_tcb.to_u64());
        let v = self.config.version;
        r[CURRENT_VERSION_AT..CURRENT_VERSION_AT + 3].copy_from_slice(&[
            v.build,
            v.api_minor,
            v.api_major,
        ]);
        let c = store.committed_version;
        r[COMMITTED_VERSION_AT..COMMITTED_VERSION_AT + 3].copy_from_slice(&[
            c.build,
            c.api_minor,
            c.api_major,
        ]);
        put64(&mut r, LAUNCH_TCB_AT, guest.launch_tcb.to_u64());
        if signing != SIGNING_KEY_NONE {
            let sig = if use_vlek {
                self.vlek_key()?.sign_sha384(&r[SIGNED])
            } else {
                let mut vcek = self.snp.vcek.lock().unwrap_or_else(|e| e.into_inner());
                let key = match &*vcek {
                    Some((tcb, key)) if *tcb == reported => key,
                    _ => {
                        let key = self.chip.vcek(reported).map_err(|e| internal("VCEK", e))?;
                        &vcek.insert((reported, key)).1
                    }
                };
                key.sign_sha384(&r[SIGNED])
            }
            .map_err(|e| internal("report signature", e))?;
            r[SIGNATURE.start..SIGNATURE.start + sig.len()].copy_from_slice(&sig);
        }
        Ok(r)
    }

    /// The VLEK's signing key, from the last hash stick of the loaded seed.
    fn vlek_key(&self) -> FwResult<EcKeyPair> {
        let vlek = self.snp.vlek.as_ref().ok_or(Status::InvalidKey)?;
        let stick = &vlek[vlek.len() - 48..];
        let material = crate::crypto::kdf(stick, b"sev-versioned-loaded-endorsement-key", &[], 56)
            .map_err(|e| internal("VLEK", e))?;
        EcKeyPair::from_seed(&material).map_err(|e| internal("VLEK", e))
    }
}
