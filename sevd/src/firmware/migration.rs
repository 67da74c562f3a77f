//! Guest migration (migration.md §2, §4, §7): SEND_* on the source platform, RECEIVE_* on
//! the target. The source firmware plays the guest owner's part: it wraps fresh transport
//! keys for the target's PDH, and every page travels as AES-128-CTR under the TEK with an
//! HMAC-SHA256 under the TIK. The hypervisor between them only ever holds ciphertext.
//!
//! As in shipping firmware, a packet is bound to its session and nothing else: no sequence
//! number, no guest address. A packet of the current session is accepted any number of
//! times, at any address, in any order (§4.5) — which is what lets a live migration resend a
//! dirtied page, and lets a hostile host replay one.

use zeroize::Zeroizing;

use uapi::ca::CaCertificate;
use uapi::cert::{Certificate, CERT_LEN};
use uapi::launch::SESSION_LEN;
use uapi::Status;

use super::guest::{GuestState, Policy, VMSA_LEN};
use super::{internal, Firmware, FwResult};
use crate::certs::{check_ecc, verify_ca, verify_cek, verify_sev, CertError};
use crate::crypto::{aes128_ctr, hmac_sha256, mac_eq, sha256, CryptoError};
use crate::memctl::{GuestAddress, GuestMemory};
use crate::owner::session::{wrap, TransportKeys};

/// The packet header: FLAGS ‖ IV ‖ MAC.
pub const PACKET_HEADER_LEN: usize = 52;
/// The most one update moves: the firmware's scratch buffer (FW `SEV_SCRATCH_BUF_LEN`).
pub const UPDATE_MAX: u32 = 0x5000;
/// PEK ‖ OCA ‖ CEK.
const PLAT_CERTS_LEN: usize = 3 * CERT_LEN;
/// The MAC's channel context; shipping firmware uses it for VMSA packets too (§4.4).
const CTX_DATA: u8 = 0x02;
/// Header FLAGS bit 0: the firmware never compresses, and refuses what is.
const FLAG_COMPRESSED: u32 = 1;
/// ASK ‖ ARK lengths the firmware accepts (2K/2K, 2K/4K, 4K/2K, 4K/4K keys).
const AMD_CHAIN_LENS: [usize; 4] = [0x680, 0xA80, 0x880, 0xC80];

/// What SEND_START is told about the target platform.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The target's PDH certificate.
    pub pdh: &'a [u8],
    /// Its PEK ‖ OCA ‖ CEK.
    pub plat_certs: &'a [u8],
    /// AMD's ASK ‖ ARK for its chip.
    pub amd_certs: &'a [u8],
}

/// SEND_START's output.
#[derive(Debug, Clone)]
pub struct SendStarted {
    /// The guest's policy, for the target's RECEIVE_START.
    pub policy: u32,
    /// The session the target opens with its PDH.
    pub session: [u8; SESSION_LEN],
}

/// One packet: its header and its transport bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// FLAGS ‖ IV ‖ MAC.
    pub header: [u8; PACKET_HEADER_LEN],
    /// The ciphertext.
    pub trans: Vec<u8>,
}

/// HMAC-SHA256(TIK, ctx ‖ FLAGS ‖ IV ‖ uncompressed size ‖ transport size ‖ ciphertext).
fn packet_mac(
    tik: &[u8; 16],
    flags: u32,
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<[u8; 32], CryptoError> {
    let len = (ciphertext.len() as u32).to_le_bytes();
    hmac_sha256(
        tik,
        &[
            &[CTX_DATA],
            &flags.to_le_bytes(),
            iv,
            &len,
            &len,
            ciphertext,
        ],
    )
}

/// Encrypts and MACs `plain` under `keys` with `iv`.
pub fn seal_packet(
    keys: &TransportKeys,
    iv: [u8; 16],
    plain: &[u8],
) -> Result<Packet, CryptoError> {
    let trans = aes128_ctr(&keys.tek, &iv, plain)?;
    let mac = packet_mac(&keys.tik, 0, &iv, &trans)?;
    let mut header = [0u8; PACKET_HEADER_LEN];
    header[4..20].copy_from_slice(&iv);
    header[20..].copy_from_slice(&mac);
    Ok(Packet { header, trans })
}

/// Checks a packet's MAC, then decrypts it: BAD_MEASUREMENT for a MAC that fails,
/// UNSUPPORTED for a compressed one.
pub fn open_packet(
    keys: &TransportKeys,
    header: &[u8; PACKET_HEADER_LEN],
    trans: &[u8],
) -> FwResult<Zeroizing<Vec<u8>>> {
    let flags = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if flags & FLAG_COMPRESSED != 0 {
        return Err(Status::Unsupported);
    }
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&header[4..20]);
    let mac = packet_mac(&keys.tik, flags, &iv, trans).map_err(|e| internal("packet MAC", e))?;
    if !mac_eq(&mac, &header[20..]) {
        return Err(Status::BadMeasurement);
    }
    let plain = aes128_ctr(&keys.tek, &iv, trans).map_err(|e| internal("packet", e))?;
    Ok(Zeroizing::new(plain))
}

/// A chain failure as the firmware reports it.
fn cert_status(e: CertError) -> Status {
    if e.is_signature() {
        Status::BadSignature
    } else {
        Status::InvalidCertificate
    }
}

fn decode_cert(bytes: &[u8]) -> FwResult<Certificate> {
    Certificate::decode(bytes).map_err(|_| Status::InvalidCertificate)
}

impl Firmware {
    /// SEND_START: a RUNNING guest → SUPDATE, with fresh transport keys wrapped for the
    /// target's PDH. `session_len` is the buffer's length in and 128 out (INVALID_LENGTH
    /// unless it was 128: the length probe).
    pub fn send_start(
        &mut self,
        handle: u32,
        target: &Target<'_>,
        session_len: &mut u32,
    ) -> FwResult<SendStarted> {
        let guest = self.guest(handle)?;
        let given = *session_len;
        *session_len = SESSION_LEN as u32;
        if given != SESSION_LEN as u32 {
            return Err(Status::InvalidLength);
        }
        if guest.state != GuestState::Running {
            return Err(Status::InvalidGuestState);
        }
        let policy = guest.policy;
        if policy.has(Policy::NOSEND) {
            return Err(Status::PolicyFailure);
        }
        if policy.has(Policy::SEV) {
            self.validate_platform(target, policy)?;
        }
        if policy.has(Policy::DOMAIN) {
            self.validate_domain(target)?;
        }
        if target.pdh.len() != CERT_LEN {
            return Err(Status::InvalidLength);
        }
        let their_pdh = Self::godh_key(target.pdh)?;
        let z = self
            .keys()?
            .pdh_key
            .ecdh(&their_pdh)
            .map_err(|e| internal("ECDH", e))?;
        let mut nonce = [0u8; 16];
        let mut wrap_iv = [0u8; 16];
        let mut tek = Zeroizing::new([0u8; 16]);
        let mut tik = Zeroizing::new([0u8; 16]);
        for buf in [&mut nonce[..], &mut wrap_iv[..], &mut tek[..], &mut tik[..]] {
            self.rng.fill(buf).map_err(|e| internal("TRNG", e))?;
        }
        let keys = TransportKeys { tek, tik };
        let session = wrap(&z, nonce, wrap_iv, &keys, policy.0)
            .map_err(|e| internal("session", e))?
            .encode();
        let guest = self.guest_mut(handle)?;
        guest.keys = Some(keys);
        guest.state = GuestState::Supdate;
        Ok(SendStarted {
            policy: policy.0,
            session,
        })
    }

    /// The SEV policy bit's check (§7.2): the target's chain verifies to this chip's ARK,
    /// and its PEK's API version is at least the policy's.
    fn validate_platform(&self, target: &Target<'_>, policy: Policy) -> FwResult<()> {
        if target.plat_certs.len() != PLAT_CERTS_LEN
            || target.pdh.len() != CERT_LEN
            || !AMD_CHAIN_LENS.contains(&target.amd_certs.len())
        {
            return Err(Status::InvalidLength);
        }
        let (ask, rest) =
            CaCertificate::decode_prefix(target.amd_certs).map_err(|_| Status::InvalidLength)?;
        let ark = CaCertificate::decode(rest).map_err(|_| Status::InvalidLength)?;
        // The fused root: only this chip's own ARK is AMD's here.
        let ours = &self.chip.ark;
        if ark.key_id != ours.key_id || ark.modulus != ours.modulus || ark.pubexp != ours.pubexp {
            return Err(Status::InvalidCertificate);
        }
        verify_ca(&ark, "ARK", &ark, "ARK").map_err(cert_status)?;
        verify_ca(&ark, "ARK", &ask, "ASK").map_err(cert_status)?;
        let pdh = decode_cert(target.pdh)?;
        let pek = decode_cert(&target.plat_certs[..CERT_LEN])?;
        let cek = decode_cert(&target.plat_certs[2 * CERT_LEN..])?;
        verify_cek(&ask, &cek).map_err(cert_status)?;
        verify_sev(&cek, "CEK", &pek, "PEK").map_err(cert_status)?;
        verify_sev(&pek, "PEK", &pdh, "PDH").map_err(cert_status)?;
        if (pek.api_major, pek.api_minor) < policy.api() {
            return Err(Status::PolicyFailure);
        }
        Ok(())
    }

    /// The DOMAIN policy bit's check (§7.3): the target's PDH chains to an OCA
    /// byte-identical to this platform's.
    fn validate_domain(&self, target: &Target<'_>) -> FwResult<()> {
        if target.plat_certs.len() != PLAT_CERTS_LEN || target.pdh.len() != CERT_LEN {
            return Err(Status::InvalidLength);
        }
        let pdh = decode_cert(target.pdh)?;
        let pek = decode_cert(&target.plat_certs[..CERT_LEN])?;
        let oca_bytes = &target.plat_certs[CERT_LEN..2 * CERT_LEN];
        let oca = decode_cert(oca_bytes)?;
        check_ecc(&oca, "OCA", uapi::cert::usage::OCA).map_err(cert_status)?;
        verify_sev(&oca, "OCA", &oca, "OCA").map_err(cert_status)?;
        verify_sev(&oca, "OCA", &pek, "PEK").map_err(cert_status)?;
        verify_sev(&pek, "PEK", &pdh, "PDH").map_err(cert_status)?;
        if oca_bytes != self.keys()?.oca.encode().as_slice() {
            return Err(Status::PolicyFailure);
        }
        Ok(())
    }

    /// SEND_UPDATE_DATA: `guest_len` bytes of the guest's memory at `gpa`, decrypted with
    /// its key and sealed for the target. `hdr_len` is the header buffer's length in and 52
    /// out (INVALID_LENGTH if it was shorter, before anything else is looked at).
    pub fn send_update_data(
        &mut self,
        handle: u32,
        hdr_len: &mut u32,
        gpa: GuestAddress,
        guest_len: u32,
        trans_len: u32,
        mem: &dyn GuestMemory,
    ) -> FwResult<Packet> {
        self.send_update(handle, hdr_len, gpa, guest_len, trans_len, mem, false)
    }

    /// SEND_UPDATE_VMSA: as SEND_UPDATE_DATA, for a save area of an SEV-ES guest that the
    /// firmware protects and that is unchanged since (else INVALID_PARAM).
    pub fn send_update_vmsa(
        &mut self,
        handle: u32,
        hdr_len: &mut u32,
        gpa: GuestAddress,
        guest_len: u32,
        trans_len: u32,
        mem: &dyn GuestMemory,
    ) -> FwResult<Packet> {
        self.send_update(handle, hdr_len, gpa, guest_len, trans_len, mem, true)
    }

    #[allow(clippy::too_many_arguments)] // the firmware's buffer, field by field
    fn send_update(
        &mut self,
        handle: u32,
        hdr_len: &mut u32,
        gpa: GuestAddress,
        guest_len: u32,
        trans_len: u32,
        mem: &dyn GuestMemory,
        vmsa: bool,
    ) -> FwResult<Packet> {
        self.require_working()?;
        let given = *hdr_len;
        *hdr_len = PACKET_HEADER_LEN as u32;
        if given < PACKET_HEADER_LEN as u32 {
            return Err(Status::InvalidLength);
        }
        let guest = self.guest(handle)?;
        if guest.state != GuestState::Supdate {
            return Err(Status::InvalidGuestState);
        }
        if vmsa && !guest.policy.has(Policy::ES) {
            return Err(Status::Unsupported);
        }
        let asid = guest.asid.ok_or(Status::Inactive)?;
        if guest_len == 0
            || guest_len > UPDATE_MAX
            || guest_len % 16 != 0
            || trans_len == 0
            || trans_len < guest_len
        {
            return Err(Status::InvalidLength);
        }
        if gpa.0 % 16 != 0 {
            return Err(Status::InvalidAddress);
        }
        let mut plain = Zeroizing::new(vec![0u8; guest_len as usize]);
        mem.read(gpa, &mut plain)
            .map_err(|_| Status::InvalidAddress)?;
        self.memctl
            .decrypt(asid, gpa, &mut plain)
            .map_err(|e| internal("SEND_UPDATE_DATA", e))?;
        if vmsa {
            let protected = self.guest(handle)?.vmsas.get(&gpa.0);
            let intact = plain.len() >= VMSA_LEN as usize
                && protected == Some(&sha256(&plain[..VMSA_LEN as usize]));
            if !intact {
                return Err(Status::InvalidParam);
            }
        }
        let mut iv = [0u8; 16];
        self.rng.fill(&mut iv).map_err(|e| internal("TRNG", e))?;
        let keys = self.guest(handle)?.keys.as_ref();
        let keys = keys.ok_or(Status::InvalidGuestState)?;
        seal_packet(keys, iv, &plain).map_err(|e| internal("packet", e))
    }

    /// SEND_FINISH: SUPDATE → SENT; the transport keys are wiped. The ASID stays bound
    /// until the hypervisor deactivates the guest.
    pub fn send_finish(&mut self, handle: u32) -> FwResult<()> {
        self.end_send(handle, GuestState::Sent)
    }

    /// SEND_CANCEL: SUPDATE → RUNNING; the guest may be sent again, elsewhere.
    pub fn send_cancel(&mut self, handle: u32) -> FwResult<()> {
        self.end_send(handle, GuestState::Running)
    }

    fn end_send(&mut self, handle: u32, to: GuestState) -> FwResult<()> {
        let guest = self.guest_mut(handle)?;
        if guest.state != GuestState::Supdate {
            return Err(Status::InvalidGuestState);
        }
        guest.keys = None;
        guest.state = to;
        Ok(())
    }

    /// RECEIVE_START: a new guest in RUPDATE whose transport keys come from the source's
    /// session, opened with this platform's PDH and the source's. `share` is a handle to
    /// share the memory key with (0 for a new key).
    pub fn receive_start(
        &mut self,
        share: u32,
        policy: u32,
        pdh: &[u8],
        session: &[u8],
    ) -> FwResult<u32> {
        self.require_initialised()?;
        if session.len() != SESSION_LEN || pdh.len() != CERT_LEN {
            return Err(Status::InvalidLength);
        }
        let keys = self.open_session(pdh, session, policy)?;
        self.new_guest(share, Policy(policy), keys, GuestState::Rupdate)
    }

    /// RECEIVE_UPDATE_DATA: checks a packet and writes its plaintext at `gpa` under this
    /// guest's own key. Nothing is written when the MAC fails.
    pub fn receive_update_data(
        &mut self,
        handle: u32,
        header: &[u8],
        gpa: GuestAddress,
        guest_len: u32,
        trans: &[u8],
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        self.receive_update(handle, header, gpa, guest_len, trans, mem, false)
    }

    /// RECEIVE_UPDATE_VMSA: as RECEIVE_UPDATE_DATA, for a save area (at least a page) of an
    /// SEV-ES guest, which the firmware then protects.
    pub fn receive_update_vmsa(
        &mut self,
        handle: u32,
        header: &[u8],
        gpa: GuestAddress,
        guest_len: u32,
        trans: &[u8],
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        self.receive_update(handle, header, gpa, guest_len, trans, mem, true)
    }

    #[allow(clippy::too_many_arguments)] // the firmware's buffer, field by field
    fn receive_update(
        &mut self,
        handle: u32,
        header: &[u8],
        gpa: GuestAddress,
        guest_len: u32,
        trans: &[u8],
        mem: &dyn GuestMemory,
        vmsa: bool,
    ) -> FwResult<()> {
        let guest = self.guest(handle)?;
        if guest.state != GuestState::Rupdate {
            return Err(Status::InvalidGuestState);
        }
        if vmsa && !guest.policy.has(Policy::ES) {
            return Err(Status::Unsupported);
        }
        let asid = guest.asid.ok_or(Status::Inactive)?;
        let trans_len = trans.len() as u64;
        if trans_len == 0
            || trans_len > UPDATE_MAX as u64
            || guest_len == 0
            || guest_len as u64 != trans_len
            || guest_len % 16 != 0
            || header.len() < PACKET_HEADER_LEN
        {
            return Err(Status::InvalidLength);
        }
        if gpa.0 % 16 != 0 {
            return Err(Status::InvalidAddress);
        }
        let mut head = [0u8; PACKET_HEADER_LEN];
        head.copy_from_slice(&header[..PACKET_HEADER_LEN]);
        let keys = guest.keys.as_ref().ok_or(Status::InvalidGuestState)?;
        let mut plain = open_packet(keys, &head, trans)?;
        let protect = if vmsa {
            if plain.len() < VMSA_LEN as usize {
                return Err(Status::InvalidLength);
            }
            Some(sha256(&plain[..VMSA_LEN as usize]))
        } else {
            None
        };
        self.memctl
            .encrypt(asid, gpa, &mut plain)
            .map_err(|e| internal("RECEIVE_UPDATE_DATA", e))?;
        mem.write(gpa, &plain).map_err(|_| Status::InvalidAddress)?;
        if let Some(digest) = protect {
            self.guest_mut(handle)?.vmsas.insert(gpa.0, digest);
        }
        Ok(())
    }

    /// RECEIVE_FINISH: RUPDATE → RUNNING, completing a pending activation. No measurement is
    /// checked: a received guest's launch digest is all zero.
    pub fn receive_finish(&mut self, handle: u32) -> FwResult<()> {
        let guest = self.guest_mut(handle)?;
        if guest.state != GuestState::Rupdate {
            return Err(Status::InvalidGuestState);
        }
        guest.pending = false;
        guest.keys = None;
        guest.state = GuestState::Running;
        Ok(())
    }
}

#[path = "migration_runs.rs"]
mod runs;
pub use runs::RunStop;

#[cfg(test)]
#[path = "migration_tests.rs"]
pub(super) mod tests;
