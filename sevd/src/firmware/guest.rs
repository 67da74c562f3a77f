//! Guest commands, ASIDs and the launch flow (firmware-semantics.md §2, §3, §5–§8).
//!
//! Unless a command says otherwise, its checks run in this order: platform WORKING, a valid
//! handle, then the command's own (§2.2 "Errors (order)").

use crate::crypto::{Digest, Sha256};
use zeroize::Zeroizing;

use uapi::cert::{algo, curve, usage, Certificate, CERT_LEN};
use uapi::launch::{
    Measurement, SecretHeader, Session, MEASUREMENT_LEN, SECRET_HEADER_LEN, SESSION_LEN,
};
use uapi::Status;

use super::{internal, Firmware, FwResult, PlatformState};
use crate::crypto::ecc::EcPublic;
use crate::crypto::{aes128_ctr, mac_eq};
use crate::memctl::{GuestAddress, GuestMemory, MemctlError, Vek};
use crate::owner::measurement::{measure, MeasuredPlatform};
use crate::owner::secret::secret_mac;
use crate::owner::session::{unwrap, SessionError, TransportKeys};

/// Guest policy bits (firmware-semantics.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy(pub u32);

impl Policy {
    /// Debugging (DBG_DECRYPT/ENCRYPT) is disallowed.
    pub const NODBG: u32 = uapi::policy::NODBG;
    /// Key sharing is disallowed.
    pub const NOKS: u32 = uapi::policy::NOKS;
    /// SEV-ES is required.
    pub const ES: u32 = uapi::policy::ES;
    /// Sending to another platform is disallowed.
    pub const NOSEND: u32 = uapi::policy::NOSEND;
    /// Sending only to a platform of the same owner (OCA).
    pub const DOMAIN: u32 = uapi::policy::DOMAIN;
    /// Sending only to a platform whose chain verifies to AMD's root.
    pub const SEV: u32 = uapi::policy::SEV;
    /// Bits 15:6, which must be zero.
    pub const RESERVED: u32 = uapi::policy::RESERVED;

    pub(super) fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// The minimum firmware API the policy asks for: (major, minor) from bits 23:16, 31:24.
    pub fn api(self) -> (u8, u8) {
        uapi::policy::api(self.0)
    }
}

/// Guest states (firmware-semantics.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GuestState {
    /// No context.
    Uninit = 0,
    /// Launching: data and VMSAs are being imported.
    Lupdate = 1,
    /// Measured; secrets may be injected.
    Lsecret = 2,
    /// Launched.
    Running = 3,
    /// Being sent.
    Supdate = 4,
    /// Being received.
    Rupdate = 5,
    /// Sent.
    Sent = 6,
}

/// Per-ASID state in the firmware (§2.3): what ACTIVATE may bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsidState {
    /// Usable.
    Clean,
    /// Bound to a guest (by handle).
    Bound(u32),
    /// Was in use; needs WBINVD and DF_FLUSH before reuse.
    Dirty,
}

/// GUEST_STATUS output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestStatus {
    /// Handle asked about.
    pub handle: u32,
    /// Its policy.
    pub policy: u32,
    /// Its ASID, 0 if none.
    pub asid: u32,
    /// Its state (0 for an invalid handle).
    pub state: GuestState,
}

/// LAUNCH_SECRET's inputs: the packet header, where the secret goes, the ciphertext.
#[derive(Debug, Clone, Copy)]
pub struct LaunchSecret<'a> {
    /// FLAGS ‖ IV ‖ MAC (must be 52 bytes).
    pub header: &'a [u8],
    /// Guest physical address of the secret.
    pub guest_gpa: GuestAddress,
    /// GUEST_LENGTH.
    pub guest_len: u32,
    /// The encrypted payload (TRANS_LENGTH bytes).
    pub trans: &'a [u8],
}

/// The firmware's buffer for LAUNCH_SECRET (Genoa).
const SECRET_MAX: u32 = 0x5000;
/// One VMSA page.
pub(super) const VMSA_LEN: u32 = 4096;

/// A guest context.
pub(super) struct Guest {
    pub(super) policy: Policy,
    pub(super) state: GuestState,
    vek: Vek,
    pub(super) asid: Option<u32>,
    /// Activation is pending until the launch (or the receive) finishes (§2.3).
    pub(super) pending: bool,
    /// The transport keys of a launch or a migration in progress.
    pub(super) keys: Option<TransportKeys>,
    digest: Option<Sha256>,
    measure: Option<[u8; 32]>,
    /// The launch digest LAUNCH_MEASURE finalised, for ATTESTATION (zero for a guest that
    /// was received: it was measured on its first platform).
    pub(super) launch_digest: [u8; 32],
    /// The save areas the firmware protects, by guest address, with a digest of each as it
    /// was protected: what stands here for the hardware's per-vCPU CRC record (a save area
    /// changes only when the CPU saves state, and no CPU runs here).
    pub(super) vmsas: std::collections::BTreeMap<u64, [u8; 32]>,
}

fn aligned(v: u64) -> bool {
    v % 16 == 0
}

impl Firmware {
    pub(super) fn guest(&self, handle: u32) -> FwResult<&Guest> {
        self.require_working()?;
        self.guests.get(&handle).ok_or(Status::InvalidGuest)
    }

    pub(super) fn guest_mut(&mut self, handle: u32) -> FwResult<&mut Guest> {
        self.require_working()?;
        self.guests.get_mut(&handle).ok_or(Status::InvalidGuest)
    }

    pub(super) fn require_working(&self) -> FwResult<()> {
        if self.state == PlatformState::Working {
            Ok(())
        } else {
            Err(Status::InvalidPlatformState)
        }
    }

    /// INIT or WORKING: what a command that may make the first guest needs.
    pub(super) fn require_initialised(&self) -> FwResult<()> {
        if matches!(self.state, PlatformState::Init | PlatformState::Working) {
            Ok(())
        } else {
            Err(Status::InvalidPlatformState)
        }
    }

    fn measured_platform(&self) -> MeasuredPlatform {
        let v = self.config.version;
        MeasuredPlatform {
            api_major: v.api_major,
            api_minor: v.api_minor,
            build: v.build,
        }
    }

    /// Checks the guest owner's DH certificate as the firmware does: VERSION 1, usage PDH,
    /// algo ECDH_SHA256, curve P-384, a point on the curve; no signature check (§5.1).
    pub(super) fn godh_key(godh: &[u8]) -> FwResult<EcPublic> {
        let cert = Certificate::decode(godh).map_err(|_| Status::InvalidLength)?;
        let ok = cert.version == 1
            && cert.usage == usage::PDH
            && cert.algo == algo::ECDH_SHA256
            && cert.ecc_pubkey().map(|k| k.0) == Some(curve::P384);
        if !ok {
            return Err(Status::InvalidCertificate);
        }
        EcPublic::from_certificate(&cert).ok_or(Status::InvalidCertificate)
    }

    /// LAUNCH_START: a new guest in LUPDATE. `share` is a handle to share keys with (0 for
    /// a new key); `session` is the owner's (GODH certificate, session buffer), if any.
    pub fn launch_start(
        &mut self,
        share: u32,
        policy: u32,
        session: Option<(&[u8], &[u8])>,
    ) -> FwResult<u32> {
        self.require_initialised()?;
        let keys = match session {
            None => TransportKeys::zero(),
            Some((godh, session)) => {
                if godh.len() != CERT_LEN || session.len() != SESSION_LEN {
                    return Err(Status::InvalidLength);
                }
                self.open_session(godh, session, policy)?
            }
        };
        self.new_guest(share, Policy(policy), keys, GuestState::Lupdate)
    }

    /// Opens a session wrapped for this platform's PDH by the holder of `their_pdh` (a guest
    /// owner at LAUNCH_START, the source platform at RECEIVE_START), and checks the policy
    /// it was made for.
    pub(super) fn open_session(
        &self,
        their_pdh: &[u8],
        session: &[u8],
        policy: u32,
    ) -> FwResult<TransportKeys> {
        let theirs = Self::godh_key(their_pdh)?;
        let z = self
            .keys()?
            .pdh_key
            .ecdh(&theirs)
            .map_err(|e| internal("ECDH", e))?;
        let session = Session::decode(session).map_err(|_| Status::InvalidLength)?;
        let keys = match unwrap(&z, &session, policy) {
            Ok(keys) => keys,
            Err(SessionError::BadMac(_)) => return Err(Status::BadMeasurement),
            Err(SessionError::Crypto(e)) => return Err(internal("session", e)),
        };
        let v = self.config.version;
        if policy & Policy::RESERVED != 0 || Policy(policy).api() > (v.api_major, v.api_minor) {
            return Err(Status::PolicyFailure);
        }
        Ok(keys)
    }

    /// A new guest context in `state` (LUPDATE or RUPDATE): its memory key shared with
    /// `share` or new, the first free handle; the platform is then WORKING.
    pub(super) fn new_guest(
        &mut self,
        share: u32,
        policy: Policy,
        keys: TransportKeys,
        state: GuestState,
    ) -> FwResult<u32> {
        let vek = if share != 0 {
            let other = self.guests.get(&share).ok_or(Status::InvalidGuest)?;
            if other.policy != policy || other.policy.has(Policy::NOKS) {
                return Err(Status::PolicyFailure);
            }
            other.vek.clone()
        } else {
            let rng = &mut self.rng;
            Vek::generate_with(&mut |buf: &mut [u8]| rng.fill(buf))
                .map_err(|e| internal("VEK", e))?
        };
        let handle = (1..=self.config.max_guests)
            .find(|h| !self.guests.contains_key(h))
            .ok_or(Status::ResourceLimit)?;
        if policy.has(Policy::ES) && !self.config_es {
            return Err(Status::Unsupported);
        }
        // A received guest has no launch digest: it was measured on its first platform.
        let digest = (state == GuestState::Lupdate).then(Sha256::new);
        self.guests.insert(
            handle,
            Guest {
                policy,
                state,
                vek,
                asid: None,
                pending: false,
                keys: Some(keys),
                digest,
                measure: None,
                launch_digest: [0; 32],
                vmsas: Default::default(),
            },
        );
        self.state = PlatformState::Working;
        Ok(handle)
    }

    /// Measures and encrypts one LAUNCH_UPDATE_DATA or _VMSA range in place.
    fn launch_update(
        &mut self,
        handle: u32,
        gpa: GuestAddress,
        len: u64,
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let guest = self.guests.get_mut(&handle).ok_or(Status::InvalidGuest)?;
        let asid = guest.asid.ok_or(Status::Inactive)?;
        let digest = guest.digest.as_mut().ok_or(Status::InvalidGuestState)?;
        match self
            .memctl
            .encrypt_range(asid, mem, gpa, len, &mut |plain: &[u8]| {
                digest.update(plain)
            }) {
            Ok(()) => Ok(()),
            Err(MemctlError::Memory(_)) | Err(MemctlError::Unaligned { .. }) => {
                Err(Status::InvalidAddress)
            }
            Err(MemctlError::NoKey(_)) => Err(Status::Inactive),
            Err(e) => Err(internal("LAUNCH_UPDATE", e)),
        }
    }

    /// LAUNCH_UPDATE_DATA: measures the plaintext at `gpa` and encrypts it in place.
    pub fn launch_update_data(
        &mut self,
        handle: u32,
        gpa: GuestAddress,
        len: u32,
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let guest = self.guest(handle)?;
        if guest.state != GuestState::Lupdate {
            return Err(Status::InvalidGuestState);
        }
        if guest.asid.is_none() {
            return Err(Status::Inactive);
        }
        if !aligned(gpa.0) {
            return Err(Status::InvalidAddress);
        }
        if len == 0 || !aligned(len as u64) {
            return Err(Status::InvalidLength);
        }
        self.launch_update(handle, gpa, len as u64, mem)
    }

    /// LAUNCH_UPDATE_VMSA: as LAUNCH_UPDATE_DATA for one 4096-byte save area of an SEV-ES guest.
    pub fn launch_update_vmsa(
        &mut self,
        handle: u32,
        gpa: GuestAddress,
        len: u32,
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let guest = self.guest(handle)?;
        if len != VMSA_LEN {
            return Err(Status::InvalidLength);
        }
        if guest.state != GuestState::Lupdate {
            return Err(Status::InvalidGuestState);
        }
        if !guest.policy.has(Policy::ES) {
            return Err(Status::Unsupported);
        }
        if guest.asid.is_none() {
            return Err(Status::Inactive);
        }
        if !aligned(gpa.0) {
            return Err(Status::InvalidAddress);
        }
        let mut page = Zeroizing::new(vec![0u8; VMSA_LEN as usize]);
        mem.read(gpa, &mut page)
            .map_err(|_| Status::InvalidAddress)?;
        self.launch_update(handle, gpa, len as u64, mem)?;
        let digest = crate::crypto::sha256(&page);
        self.guest_mut(handle)?.vmsas.insert(gpa.0, digest);
        Ok(())
    }

    /// LAUNCH_MEASURE: MEASURE ‖ MNONCE; LUPDATE → LSECRET. `len` is the buffer's in/out
    /// length (48 is written back on success and on INVALID_LENGTH).
    pub fn launch_measure(
        &mut self,
        handle: u32,
        len: &mut u32,
    ) -> FwResult<[u8; MEASUREMENT_LEN]> {
        let platform = self.measured_platform();
        if self.guest(handle)?.state != GuestState::Lupdate {
            return Err(Status::InvalidGuestState);
        }
        let given = *len;
        *len = MEASUREMENT_LEN as u32;
        if given < MEASUREMENT_LEN as u32 {
            return Err(Status::InvalidLength);
        }
        let mut mnonce = [0u8; 16];
        self.rng
            .fill(&mut mnonce)
            .map_err(|e| internal("MNONCE", e))?;
        let guest = self.guest_mut(handle)?;
        let digest: [u8; 32] = guest
            .digest
            .take()
            .ok_or(Status::InvalidGuestState)?
            .finalize()
            .into();
        let tik = guest.keys.as_ref().map(|k| *k.tik).unwrap_or([0; 16]);
        let m = measure(&tik, platform, guest.policy.0, &digest, &mnonce)
            .map_err(|e| internal("measurement", e))?;
        guest.measure = Some(m);
        guest.launch_digest = digest;
        guest.state = GuestState::Lsecret;
        Ok(Measurement { measure: m, mnonce }.encode())
    }

    /// LAUNCH_SECRET: verifies and decrypts a secret and writes it into guest memory under
    /// the guest's key. Repeatable while in LSECRET.
    pub fn launch_secret(
        &mut self,
        handle: u32,
        secret: LaunchSecret<'_>,
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let guest = self.guest(handle)?;
        // Alignment and lengths come before the guest state in the firmware.
        if !aligned(secret.guest_gpa.0) {
            return Err(Status::InvalidAddress);
        }
        let len = secret.guest_len;
        if secret.header.len() != SECRET_HEADER_LEN
            || len == 0
            || !aligned(len as u64)
            || len > SECRET_MAX
            || len as usize != secret.trans.len()
        {
            return Err(Status::InvalidLength);
        }
        if guest.state != GuestState::Lsecret {
            return Err(Status::InvalidGuestState);
        }
        let asid = guest.asid.ok_or(Status::Inactive)?;
        let header = SecretHeader::decode(secret.header).map_err(|_| Status::InvalidLength)?;
        let keys = guest.keys.as_ref().ok_or(Status::InvalidGuestState)?;
        let measure = guest.measure.ok_or(Status::InvalidGuestState)?;
        let mac = secret_mac(
            &keys.tik,
            header.flags,
            &header.iv,
            len,
            secret.trans,
            &measure,
        )
        .map_err(|e| internal("secret MAC", e))?;
        if !mac_eq(&mac, &header.mac) {
            return Err(Status::BadMeasurement);
        }
        if header.flags & 1 != 0 {
            return Err(Status::Unsupported);
        }
        let mut plain = Zeroizing::new(
            aes128_ctr(&keys.tek, &header.iv, secret.trans).map_err(|e| internal("secret", e))?,
        );
        self.memctl
            .encrypt(asid, secret.guest_gpa, &mut plain)
            .map_err(|e| internal("secret encryption", e))?;
        mem.write(secret.guest_gpa, &plain)
            .map_err(|_| Status::InvalidAddress)
    }

    /// LAUNCH_FINISH: LSECRET → RUNNING; completes the activation and wipes the transport
    /// keys and the launch digest.
    pub fn launch_finish(&mut self, handle: u32) -> FwResult<()> {
        let guest = self.guest_mut(handle)?;
        if guest.state != GuestState::Lsecret {
            return Err(Status::InvalidGuestState);
        }
        guest.pending = false;
        guest.keys = None;
        guest.digest = None;
        guest.measure = None;
        guest.state = GuestState::Running;
        Ok(())
    }

    /// ACTIVATE: binds the guest to `asid` and programs its key into the memory controller.
    pub fn activate(&mut self, handle: u32, asid: u32) -> FwResult<()> {
        let es_guest = self.guest(handle)?.policy.has(Policy::ES);
        if asid == 0 || asid > self.config.max_asid {
            return Err(Status::InvalidAsid);
        }
        let guest = self.guest(handle)?;
        match self.asids[asid as usize] {
            AsidState::Bound(h) if h == handle => return Ok(()),
            AsidState::Bound(_) => return Err(Status::AsidOwned),
            _ => {}
        }
        if guest.asid.is_some() {
            return Err(Status::Active);
        }
        if guest.state == GuestState::Sent {
            return Err(Status::InvalidGuestState);
        }
        if self.asids[asid as usize] == AsidState::Dirty {
            return Err(Status::DfFlushRequired);
        }
        if es_guest != (asid < self.config.min_sev_asid) {
            return Err(Status::InvalidAsid);
        }
        // Activation completes at once for a launched guest, even while it is being sent;
        // for one being launched or received, when that finishes.
        let running = matches!(guest.state, GuestState::Running | GuestState::Supdate);
        let vek = guest.vek.clone();
        self.memctl.install(asid, vek);
        self.asids[asid as usize] = AsidState::Bound(handle);
        let guest = self.guest_mut(handle)?;
        guest.asid = Some(asid);
        guest.pending = !running;
        Ok(())
    }

    /// DEACTIVATE: unbinds the ASID; it needs DF_FLUSH before reuse.
    pub fn deactivate(&mut self, handle: u32) -> FwResult<()> {
        let guest = self.guest_mut(handle)?;
        let asid = guest.asid.take().ok_or(Status::Inactive)?;
        guest.pending = false;
        self.memctl.clear(asid);
        self.asids[asid as usize] = AsidState::Dirty;
        Ok(())
    }

    /// DECOMMISSION: frees the guest (its key is zeroized); the platform returns to INIT
    /// with the last guest.
    pub fn decommission(&mut self, handle: u32) -> FwResult<()> {
        if self.guest(handle)?.asid.is_some() {
            return Err(Status::Active);
        }
        self.guests.remove(&handle);
        if self.guests.is_empty() {
            self.state = PlatformState::Init;
        }
        Ok(())
    }

    /// GUEST_STATUS: an invalid handle is not an error (state 0).
    pub fn guest_status(&self, handle: u32) -> FwResult<GuestStatus> {
        if !matches!(self.state, PlatformState::Init | PlatformState::Working) {
            return Err(Status::InvalidPlatformState);
        }
        Ok(match self.guests.get(&handle) {
            Some(g) => GuestStatus {
                handle,
                policy: g.policy.0,
                asid: g.asid.unwrap_or(0),
                state: g.state,
            },
            None => GuestStatus {
                handle,
                policy: 0,
                asid: 0,
                state: GuestState::Uninit,
            },
        })
    }

    fn debug_access(&self, handle: u32, gpa: GuestAddress, len: u32) -> FwResult<u32> {
        if !aligned(gpa.0) {
            return Err(Status::InvalidAddress);
        }
        if !aligned(len as u64) {
            return Err(Status::InvalidLength);
        }
        let guest = self.guest(handle)?;
        if guest.policy.has(Policy::NODBG) {
            return Err(Status::PolicyFailure);
        }
        guest.asid.ok_or(Status::Inactive)
    }

    /// DBG_DECRYPT: the plaintext of guest memory (refused under NODBG).
    pub fn dbg_decrypt(
        &self,
        handle: u32,
        gpa: GuestAddress,
        len: u32,
        mem: &dyn GuestMemory,
    ) -> FwResult<Vec<u8>> {
        let asid = self.debug_access(handle, gpa, len)?;
        let mut buf = vec![0u8; len as usize];
        mem.read(gpa, &mut buf)
            .map_err(|_| Status::InvalidAddress)?;
        self.memctl
            .decrypt(asid, gpa, &mut buf)
            .map_err(|e| internal("DBG_DECRYPT", e))?;
        Ok(buf)
    }

    /// DBG_ENCRYPT: writes plaintext into guest memory under the guest's key (refused under
    /// NODBG).
    pub fn dbg_encrypt(
        &self,
        handle: u32,
        gpa: GuestAddress,
        data: &[u8],
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let asid = self.debug_access(handle, gpa, data.len() as u32)?;
        let mut buf = Zeroizing::new(data.to_vec());
        self.memctl
            .encrypt(asid, gpa, &mut buf)
            .map_err(|e| internal("DBG_ENCRYPT", e))?;
        mem.write(gpa, &buf).map_err(|_| Status::InvalidAddress)
    }

    /// The ASID whose key a guest's own accesses use: an SEV guest's by handle, an SNP
    /// guest's by context id.
    fn own_asid(&self, handle: u32) -> FwResult<u32> {
        if handle >= super::snp::GCTX_BASE {
            return self.snp_guest_asid(handle);
        }
        self.guest(handle)?.asid.ok_or(Status::Inactive)
    }

    /// Reads guest memory as the guest with this handle (or SNP context) sees it (its key,
    /// C-bit set): what only the guest can do on hardware, offered for tests and
    /// demonstrations.
    pub fn guest_view(
        &self,
        handle: u32,
        gpa: GuestAddress,
        out: &mut [u8],
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let asid = self.own_asid(handle)?;
        self.memctl
            .guest_read(asid, mem, gpa, out)
            .map_err(|_| Status::InvalidAddress)
    }

    /// Writes guest memory as the guest does.
    pub fn guest_write(
        &self,
        handle: u32,
        gpa: GuestAddress,
        data: &[u8],
        mem: &dyn GuestMemory,
    ) -> FwResult<()> {
        let asid = self.own_asid(handle)?;
        self.memctl
            .guest_write(asid, mem, gpa, data)
            .map_err(|_| Status::InvalidAddress)
    }

    /// Replaces an LSECRET guest's transport keys and measurement, so published packets made
    /// for another launch can be fed to LAUNCH_SECRET.
    #[cfg(test)]
    pub(super) fn force_launch_keys(
        &mut self,
        handle: u32,
        tek: [u8; 16],
        tik: [u8; 16],
        measure: [u8; 32],
    ) {
        let guest = self.guests.get_mut(&handle).expect("guest");
        guest.keys = Some(TransportKeys {
            tek: Zeroizing::new(tek),
            tik: Zeroizing::new(tik),
        });
        guest.measure = Some(measure);
    }

    /// The state of every ASID, index = ASID (index 0 unused).
    pub fn asid_states(&self) -> &[AsidState] {
        &self.asids
    }

    /// Marks every ASID dirty (INIT does; the host must DF_FLUSH before the first ACTIVATE).
    pub(super) fn dirty_all_asids(&mut self) {
        for a in self.asids.iter_mut() {
            *a = AsidState::Dirty;
        }
    }

    /// DF_FLUSH's effect: dirty ASIDs become clean.
    pub(super) fn flush_asids(&mut self) {
        for a in self.asids.iter_mut() {
            if *a == AsidState::Dirty {
                *a = AsidState::Clean;
            }
        }
    }

    /// SHUTDOWN's effect on guests: every context destroyed, every key slot emptied.
    pub(super) fn destroy_guests(&mut self) {
        for (_, guest) in std::mem::take(&mut self.guests) {
            if let Some(asid) = guest.asid {
                self.memctl.clear(asid);
            }
        }
        for a in self.asids.iter_mut() {
            *a = AsidState::Dirty;
        }
    }
}
