//! SNP_GUEST_REQUEST (snp.md §7.3; ASPFW `snp_mcmd_guest_request`): a message page sealed by
//! the guest under one of its VMPCKs. The firmware checks the header, opens the payload,
//! checks the sequence number, answers the request and seals the answer under the same key.
//! The checks run in the firmware's order: the tag before the sequence number.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use uapi::snp::guest_msg::*;
use uapi::Status;

use super::guest::SnpGuestState;
use crate::firmware::{internal, Firmware, FwResult};

/// One page: a message and its answer each fit in one.
pub const PAGE: usize = 4096;
/// The newest message version of each type: 1, and 2 for KEY_REQ (with its launch
/// mitigation vector, as firmware from ABI 1.58 takes it).
fn max_version(msg_type: u8) -> u8 {
    if msg_type == msg_type::KEY_REQ {
        2
    } else {
        1
    }
}

impl Firmware {
    /// SNP_GUEST_REQUEST: `request` is the guest's message page; the answer is the response
    /// page. A firmware status is the command's; statuses of the request itself (a bad
    /// VMPL, an unknown key) travel inside the sealed answer.
    pub fn snp_guest_request(&mut self, gctx: u32, request: &[u8]) -> FwResult<Vec<u8>> {
        let guest = self.snp_guest(gctx)?;
        if guest.state != SnpGuestState::Running {
            return Err(Status::InvalidGuestState);
        }
        if request.len() < HDR_LEN {
            return Err(Status::InvalidParam);
        }
        let hdr = &request[..HDR_LEN];
        let msg_sz = u16::from_le_bytes([hdr[MSG_SZ_AT], hdr[MSG_SZ_AT + 1]]) as usize;
        let hdr_sz = u16::from_le_bytes([hdr[HDR_SZ_AT], hdr[HDR_SZ_AT + 1]]) as usize;
        if hdr[HDR_VERSION_AT] != 1
            || hdr_sz != HDR_LEN
            || hdr[ALGO_AT] != ALGO_AES_256_GCM
            || msg_sz == 0
            || msg_sz % 16 != 0
            || HDR_LEN + msg_sz > PAGE.min(request.len())
        {
            return Err(Status::InvalidParam);
        }
        let vmpck = hdr[MSG_VMPCK_AT] as usize;
        if vmpck > 3 {
            return Err(Status::InvalidParam);
        }
        let seqno = u64::from_le_bytes(hdr[SEQNO_AT..SEQNO_AT + 8].try_into().unwrap_or_default());
        let key = Zeroizing::new(guest.vmpck[vmpck]);
        let cipher = Aes256Gcm::new_from_slice(&*key).map_err(|e| internal("VMPCK", e))?;
        let mut payload = Zeroizing::new(request[HDR_LEN..HDR_LEN + msg_sz].to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&iv(seqno)),
                &hdr[AAD],
                &mut payload,
                Tag::from_slice(&hdr[TAG]),
            )
            .map_err(|_| Status::BadMeasurement)?;
        let count = guest.msg_count[vmpck];
        if count == u64::MAX - 1 || seqno != count.wrapping_add(1) {
            return Err(Status::AeadOflow);
        }
        let version = hdr[MSG_VERSION_AT];
        if version == 0 || version > max_version(hdr[MSG_TYPE_AT]) {
            return Err(Status::InvalidParam);
        }
        let (rsp_type, mut answer) = match hdr[MSG_TYPE_AT] {
            msg_type::REPORT_REQ if msg_sz >= report_req::LEN => (
                msg_type::REPORT_RSP,
                self.report_response(gctx, vmpck as u32, &payload)?,
            ),
            // Linux's `snp_derived_key_req` is 32 bytes whatever the version; a version-2
            // request that short has no launch mitigation vector (taken as 0).
            msg_type::KEY_REQ if msg_sz >= key_req::LEN_V1 => (
                msg_type::KEY_RSP,
                self.key_response(gctx, vmpck as u32, version, &payload)?,
            ),
            _ => return Err(Status::InvalidParam),
        };
        // The answer, sealed under the same key, one sequence number on.
        let mut page = header_page(
            seqno + 1,
            rsp_type,
            version,
            answer.len() as u16,
            vmpck as u8,
        )
        .to_vec();
        let aad = page[AAD].to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&iv(seqno + 1)), &aad, &mut answer)
            .map_err(|e| internal("sealing a guest message", e))?;
        page[TAG].copy_from_slice(&tag);
        page[HDR_LEN..HDR_LEN + answer.len()].copy_from_slice(&answer);
        self.snp_guest_mut(gctx)?.msg_count[vmpck] = seqno + 1;
        Ok(page)
    }
}
