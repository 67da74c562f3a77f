//! Guest messages (snp.md §7.3): seal a request under VMPCK `n` with the next sequence
//! number, open the answer with the one after it.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use uapi::snp::guest_msg::*;
use uapi::snp::{report, secrets_page};

/// Why a guest request failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestRequestError {
    /// The VMM or the firmware refused the request (`exitinfo2`).
    #[error("the guest request failed: firmware status {}, VMM error {}", .0 & 0xffff_ffff, .0 >> 32)]
    Refused(u64),
    /// The answer is not a sealed answer to this request.
    #[error("the firmware's answer does not open: {0}")]
    BadAnswer(&'static str),
    /// The transport failed.
    #[error("{0}")]
    Transport(String),
    /// The request would wrap the 32-bit sequence numbers Linux keeps.
    #[error("the message sequence numbers are used up")]
    SequenceExhausted,
}

/// A guest's channel to the firmware under one VMPCK.
pub struct GuestChannel {
    key: Zeroizing<[u8; 32]>,
    vmpck: u8,
    /// The sequence number of the last message (0 before the first request).
    seqno: u64,
}

impl std::fmt::Debug for GuestChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestChannel")
            .field("vmpck", &self.vmpck)
            .field("seqno", &self.seqno)
            .finish_non_exhaustive()
    }
}

/// A report the firmware answered with.
#[derive(Debug, Clone)]
pub struct ReportResponse {
    /// STATUS of MSG_REPORT_RSP (0 when a report is there).
    pub status: u32,
    /// The report (zero when `status` is not 0).
    pub report: Vec<u8>,
}

impl ReportResponse {
    /// MEASUREMENT: the launch digest.
    pub fn measurement(&self) -> [u8; 48] {
        let mut m = [0u8; 48];
        m.copy_from_slice(&self.report[report::MEASUREMENT]);
        m
    }
}

/// What MSG_KEY_REQ asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRequest {
    /// ROOT_KEY_SELECT: bit 0 the VMRK instead of the VCEK (or VLEK); bits 2:1 KEY_SEL.
    pub root_key_select: u32,
    /// GUEST_FIELD_SELECT: which of the guest's fields the key is bound to.
    pub guest_field_select: u64,
    /// VMPL.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// TCB_VERSION.
    pub tcb_version: u64,
    /// LAUNCH_MIT_VECTOR: `Some` sends message version 2.
    pub launch_mit_vector: Option<u64>,
}

impl GuestChannel {
    /// The channel of VMPCK `vmpck` (0..=3) as the secrets page holds it: its key, and the
    /// sequence number of the last message, which the guest keeps in the page's OS area
    /// (Linux's `msg_seqno_N`, [`GuestChannel::seqno_field`]).
    pub fn from_secrets_page(page: &[u8], vmpck: u8) -> Option<Self> {
        let range = secrets_page::VMPCK.get(vmpck as usize)?.clone();
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(page.get(range)?);
        if key.iter().all(|b| *b == 0) {
            return None;
        }
        let at = secrets_page::OS_AREA.start + 4 * vmpck as usize;
        let seqno = u32::from_le_bytes(page.get(at..at + 4)?.try_into().ok()?) as u64;
        Some(GuestChannel { key, vmpck, seqno })
    }

    /// Where in the secrets page the sequence number goes, and its value now: what a guest
    /// writes back so the next user of the key continues in step.
    pub fn seqno_field(&self) -> (u64, [u8; 4]) {
        let at = secrets_page::OS_AREA.start + 4 * self.vmpck as usize;
        (at as u64, (self.seqno as u32).to_le_bytes())
    }

    /// One exchange: `payload` as a message of `msg_type` at `version`, sent by `send`
    /// (which returns the answer page, or the `exitinfo2` of a refusal); the opened answer.
    pub fn exchange(
        &mut self,
        msg_type: u8,
        version: u8,
        payload: &[u8],
        send: impl FnOnce(&[u8]) -> Result<Vec<u8>, GuestRequestError>,
    ) -> Result<Zeroizing<Vec<u8>>, GuestRequestError> {
        let seqno = self.seqno + 1;
        if seqno + 1 > u32::MAX as u64 {
            return Err(GuestRequestError::SequenceExhausted);
        }
        let cipher = Aes256Gcm::new_from_slice(&*self.key)
            .map_err(|_| GuestRequestError::Transport("VMPCK".into()))?;
        let mut page =
            header_page(seqno, msg_type, version, payload.len() as u16, self.vmpck).to_vec();
        let aad = page[AAD].to_vec();
        let mut body = payload.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&iv(seqno)), &aad, &mut body)
            .map_err(|_| GuestRequestError::Transport("sealing".into()))?;
        page[TAG].copy_from_slice(&tag);
        page[HDR_LEN..HDR_LEN + body.len()].copy_from_slice(&body);
        // Linux advances its count whether or not the answer arrives; so does this.
        let answer = send(&page);
        self.seqno = seqno + 1;
        let answer = answer?;
        let bad = GuestRequestError::BadAnswer;
        if answer.len() < HDR_LEN {
            return Err(bad("short"));
        }
        let hdr = &answer[..HDR_LEN];
        let rsp_seqno =
            u64::from_le_bytes(hdr[SEQNO_AT..SEQNO_AT + 8].try_into().unwrap_or_default());
        let msg_sz = u16::from_le_bytes([hdr[MSG_SZ_AT], hdr[MSG_SZ_AT + 1]]) as usize;
        if rsp_seqno != seqno + 1 {
            return Err(bad("wrong sequence number"));
        }
        if hdr[MSG_TYPE_AT] != msg_type + 1 || hdr[MSG_VERSION_AT] != version {
            return Err(bad("wrong type or version"));
        }
        if HDR_LEN + msg_sz > answer.len() {
            return Err(bad("too long"));
        }
        let mut body = Zeroizing::new(answer[HDR_LEN..HDR_LEN + msg_sz].to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&iv(rsp_seqno)),
                &hdr[AAD],
                &mut body,
                Tag::from_slice(&hdr[TAG]),
            )
            .map_err(|_| bad("the tag does not verify"))?;
        Ok(body)
    }

    /// MSG_KEY_REQ: the payload's STATUS and the derived key.
    pub fn derived_key(
        &mut self,
        r: &KeyRequest,
        send: impl FnOnce(&[u8]) -> Result<Vec<u8>, GuestRequestError>,
    ) -> Result<(u32, Zeroizing<[u8; 32]>), GuestRequestError> {
        let (version, len) = match r.launch_mit_vector {
            Some(_) => (2, key_req::LEN_V2),
            None => (1, key_req::LEN_V1),
        };
        let mut req = [0u8; key_req::LEN_V2];
        req[key_req::ROOT_KEY_SELECT_AT..][..4].copy_from_slice(&r.root_key_select.to_le_bytes());
        req[key_req::GUEST_FIELD_SELECT_AT..][..8]
            .copy_from_slice(&r.guest_field_select.to_le_bytes());
        req[key_req::VMPL_AT..][..4].copy_from_slice(&r.vmpl.to_le_bytes());
        req[key_req::GUEST_SVN_AT..][..4].copy_from_slice(&r.guest_svn.to_le_bytes());
        req[key_req::TCB_VERSION_AT..][..8].copy_from_slice(&r.tcb_version.to_le_bytes());
        req[key_req::LAUNCH_MIT_VECTOR_AT..][..8]
            .copy_from_slice(&r.launch_mit_vector.unwrap_or(0).to_le_bytes());
        // The payload is sealed in 16-byte multiples.
        let padded = len.div_ceil(16) * 16;
        let mut payload = vec![0u8; padded];
        payload[..len].copy_from_slice(&req[..len]);
        let rsp = self.exchange(msg_type::KEY_REQ, version, &payload, send)?;
        if rsp.len() < key_rsp::LEN {
            return Err(GuestRequestError::BadAnswer("short key"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&rsp[key_rsp::KEY]);
        Ok((report::u32_at(&rsp, 0), key))
    }

    /// MSG_REPORT_REQ with `report_data` at `vmpl` (message version 1).
    pub fn report(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
        send: impl FnOnce(&[u8]) -> Result<Vec<u8>, GuestRequestError>,
    ) -> Result<ReportResponse, GuestRequestError> {
        self.report_at(1, report_data, vmpl, send)
    }

    /// MSG_REPORT_REQ at message version `version`, as a caller of Linux's driver asks.
    pub fn report_at(
        &mut self,
        version: u8,
        report_data: &[u8; 64],
        vmpl: u32,
        send: impl FnOnce(&[u8]) -> Result<Vec<u8>, GuestRequestError>,
    ) -> Result<ReportResponse, GuestRequestError> {
        let mut req = [0u8; report_req::LEN];
        req[report_req::REPORT_DATA].copy_from_slice(report_data);
        req[report_req::VMPL_AT..report_req::VMPL_AT + 4].copy_from_slice(&vmpl.to_le_bytes());
        let rsp = self.exchange(msg_type::REPORT_REQ, version, &req, send)?;
        if rsp.len() < report_rsp::LEN {
            return Err(GuestRequestError::BadAnswer("short report"));
        }
        Ok(ReportResponse {
            status: report::u32_at(&rsp, report_rsp::STATUS_AT),
            report: rsp[report_rsp::REPORT_AT..report_rsp::REPORT_AT + report::LEN].to_vec(),
        })
    }
}
