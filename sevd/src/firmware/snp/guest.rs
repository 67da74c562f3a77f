//! SNP guest contexts and their launch (snp.md §4.3, §4.4; ASPFW `snp_mcmd_gctx_create`,
//! `snp_mcmd_launch_start`, `snp_mcmd_activate`, `snp_mcmd_launch_update`,
//! `snp_mcmd_launch_finish`, `snp_mcmd_decommission`), with their checks in the firmware's
//! order. Memory is reached through the memory controller, and every launch page must be
//! assigned to the guest in the RMP first.

use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use uapi::snp::{id_auth, id_block, policy, secrets_page, PageType, TcbVersion, DIGEST_LEN};
use uapi::Status;

use super::cpuid::check_cpuid_page;
use crate::crypto::ecc::EcPublic;
use crate::firmware::cores::per_page;
use crate::firmware::{internal, AsidState, Firmware, FwResult};
use crate::memctl::rmp::{HostPage, PageState, RmpEntry};
use crate::memctl::{GuestAddress, GuestMemory, Vek};
use crate::owner::snp_measurement::LaunchDigest;

/// SNP guest context states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SnpGuestState {
    /// Created, not launched.
    Init = 0,
    /// Being launched: pages are measured in.
    Launch = 1,
    /// Launched.
    Running = 2,
}

/// Guest context ids are apart from SEV's handles, so one ASID table serves both.
pub const GCTX_BASE: u32 = 0x1_0000;
/// One page.
const PAGE: usize = 4096;
/// The platform runs with SMT on, so guests must allow it.
const SMT_ENABLED: bool = true;
/// Policy bits firmware 1.55 knows: bits 21 and up are reserved.
const POLICY_RESERVED: u64 = !((1 << 21) - 1);

/// LAUNCH_FINISH's inputs.
#[derive(Debug, Clone, Copy)]
pub struct SnpLaunchFinish<'a> {
    /// The ID block and its authentication structure, when the owner gives them.
    pub id_block: Option<(&'a [u8; id_block::LEN], &'a [u8; id_auth::LEN])>,
    /// Whether the author key in the ID auth signs the ID key.
    pub auth_key_en: bool,
    /// VCEK_DISABLED: reports of this guest may not be signed with the VCEK.
    pub vcek_disabled: bool,
    /// HOST_DATA, put in every report.
    pub host_data: [u8; 32],
}

/// What the ID block bound the guest to, kept for its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityBinding {
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// SHA-384 of the ID key.
    pub id_key_digest: [u8; DIGEST_LEN],
    /// SHA-384 of the author key, when it signed the ID key.
    pub author_key_digest: Option<[u8; DIGEST_LEN]>,
}

/// A guest context.
pub(crate) struct SnpGuest {
    pub(crate) state: SnpGuestState,
    pub(crate) policy: u64,
    pub(crate) asid: Option<u32>,
    vek: Option<Vek>,
    pub(crate) ld: LaunchDigest,
    gosvw: [u8; 16],
    pub(crate) vmpck: Zeroizing<[[u8; 32]; 4]>,
    pub(crate) vmrk: Zeroizing<[u8; 32]>,
    pub(crate) report_id: [u8; 32],
    pub(crate) report_id_ma: [u8; 32],
    pub(crate) host_data: [u8; 32],
    pub(crate) identity: Option<IdentityBinding>,
    pub(crate) vcek_disabled: bool,
    pub(crate) launch_tcb: TcbVersion,
    /// Messages seen per VMPCK (the firmware's MSG_COUNT0..3).
    pub(crate) msg_count: [u64; 4],
}

/// What the host may know of a guest context (tests and `sevctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpGuestStatus {
    /// State.
    pub state: SnpGuestState,
    /// Policy.
    pub policy: u64,
    /// ASID, 0 if none.
    pub asid: u32,
    /// The committed TCB when the context was made.
    pub launch_tcb: TcbVersion,
}

impl Firmware {
    fn require_snp_platform(&self) -> FwResult<()> {
        if self.snp.state != super::SnpState::Init {
            return Err(Status::InvalidPlatformState);
        }
        Ok(())
    }

    pub(super) fn snp_guest(&self, gctx: u32) -> FwResult<&SnpGuest> {
        self.require_snp_platform()?;
        self.snp.guests.get(&gctx).ok_or(Status::InvalidGuest)
    }

    pub(super) fn snp_guest_mut(&mut self, gctx: u32) -> FwResult<&mut SnpGuest> {
        self.require_snp_platform()?;
        self.snp.guests.get_mut(&gctx).ok_or(Status::InvalidGuest)
    }

    /// SNP guests launched and not decommissioned (SNP_PLATFORM_STATUS's guest count).
    pub(super) fn snp_guest_count(&self) -> u32 {
        self.snp
            .guests
            .values()
            .filter(|g| g.state != SnpGuestState::Init)
            .count() as u32
    }

    /// SNP_GCTX_CREATE: a zeroed guest context in INIT.
    pub fn snp_gctx_create(&mut self) -> FwResult<u32> {
        self.require_snp_platform()?;
        let gctx = (GCTX_BASE..GCTX_BASE + self.config.max_guests)
            .find(|g| !self.snp.guests.contains_key(g))
            .ok_or(Status::ResourceLimit)?;
        let launch_tcb = self.snp.store.committed_tcb;
        self.snp.guests.insert(
            gctx,
            SnpGuest {
                state: SnpGuestState::Init,
                policy: 0,
                asid: None,
                vek: None,
                ld: LaunchDigest::new(),
                gosvw: [0; 16],
                vmpck: Zeroizing::new([[0; 32]; 4]),
                vmrk: Zeroizing::new([0; 32]),
                report_id: [0; 32],
                report_id_ma: [0; 32],
                host_data: [0; 32],
                identity: None,
                vcek_disabled: false,
                launch_tcb,
                msg_count: [0; 4],
            },
        );
        Ok(gctx)
    }

    /// SNP_LAUNCH_START: checks the policy against the platform, makes the guest's keys
    /// (memory key, VMPCK0-3, VMRK, REPORT_ID) and moves INIT → LAUNCH.
    pub fn snp_launch_start(&mut self, gctx: u32, policy: u64, gosvw: [u8; 16]) -> FwResult<()> {
        let guest = self.snp_guest(gctx)?;
        if guest.state != SnpGuestState::Init {
            return Err(Status::InvalidGuestState);
        }
        let v = self.config.version;
        if policy & policy::RSVD_MBO == 0
            || (policy & policy::SMT == 0 && SMT_ENABLED)
            || policy::abi(policy) > (v.api_major, v.api_minor)
            || policy & POLICY_RESERVED != 0
        {
            return Err(Status::PolicyFailure);
        }
        let mut keys = Zeroizing::new([0u8; 4 * 32 + 32 + 32]);
        self.rng
            .fill(&mut keys[..])
            .map_err(|e| internal("SNP guest keys", e))?;
        let rng = &mut self.rng;
        let vek = Vek::generate_with(&mut |buf: &mut [u8]| rng.fill(buf))
            .map_err(|e| internal("VEK", e))?;
        let guest = self.snp_guest_mut(gctx)?;
        for (i, k) in guest.vmpck.iter_mut().enumerate() {
            k.copy_from_slice(&keys[i * 32..(i + 1) * 32]);
        }
        guest.vmrk.copy_from_slice(&keys[128..160]);
        guest.report_id.copy_from_slice(&keys[160..192]);
        guest.report_id_ma = [0xff; 32];
        guest.policy = policy;
        guest.gosvw = gosvw;
        guest.vek = Some(vek);
        guest.state = SnpGuestState::Launch;
        Ok(())
    }

    /// SNP_ACTIVATE: binds the guest to an SEV-ES-range ASID and programs its key.
    pub fn snp_activate(&mut self, gctx: u32, asid: u32) -> FwResult<()> {
        let guest = self.snp_guest(gctx)?;
        if guest.state == SnpGuestState::Init {
            return Err(Status::InvalidGuestState);
        }
        if asid == 0 || asid >= self.config.min_sev_asid {
            return Err(Status::InvalidAsid);
        }
        match self.asids[asid as usize] {
            AsidState::Bound(g) if g == gctx => return Ok(()),
            AsidState::Bound(_) => return Err(Status::AsidOwned),
            AsidState::Dirty => return Err(Status::DfFlushRequired),
            AsidState::Clean => {}
        }
        if guest.asid.is_some() {
            return Err(Status::Active);
        }
        let vek = guest.vek.clone().ok_or(Status::InvalidGuestState)?;
        self.memctl.install(asid, vek);
        self.asids[asid as usize] = AsidState::Bound(gctx);
        self.snp_guest_mut(gctx)?.asid = Some(asid);
        Ok(())
    }

    /// SNP_LAUNCH_UPDATE of one 4 KiB page: `page` names it in the RMP, `at` in `mem` (its
    /// place in the hypervisor's memory, also the cipher's tweak). The page must be
    /// assigned to the guest (PRE_GUEST); it is measured, encrypted in place and becomes
    /// GUEST_VALID. A CPUID page the firmware rejects is written back corrected and in the
    /// clear, and nothing else changes (INVALID_PARAM).
    pub fn snp_launch_update(
        &mut self,
        gctx: u32,
        page: HostPage,
        ty: PageType,
        mem: &dyn GuestMemory,
        at: GuestAddress,
    ) -> FwResult<()> {
        let (asid, entry) = self.snp_update_checks(gctx, page)?;
        let guest = self.snp_guest(gctx)?;
        let mut buf = Zeroizing::new(vec![0u8; PAGE]);
        match ty {
            PageType::Zero => {}
            PageType::Secrets => self.fill_secrets_page(guest, &mut buf),
            _ => mem.read(at, &mut buf).map_err(|_| Status::InvalidAddress)?,
        }
        if ty == PageType::Cpuid {
            if let Err(corrected) = check_cpuid_page(&buf) {
                mem.write(at, &corrected)
                    .map_err(|_| Status::InvalidAddress)?;
                return Err(Status::InvalidParam);
            }
        }
        let contents = LaunchDigest::page_contents(ty, &buf);
        self.memctl
            .encrypt(asid, at, &mut buf)
            .map_err(|e| internal("SNP_LAUNCH_UPDATE", e))?;
        mem.write(at, &buf).map_err(|_| Status::InvalidAddress)?;
        self.snp_update_record(gctx, page, entry, ty, contents)
    }

    /// LAUNCH_UPDATE's checks of the guest and the page, in the firmware's order: the
    /// page's RMP state, the guest's state and activation, the page's owner.
    fn snp_update_checks(&self, gctx: u32, page: HostPage) -> FwResult<(u32, RmpEntry)> {
        self.require_snp_platform()?;
        let guest = self.snp.guests.get(&gctx).ok_or(Status::InvalidGuest)?;
        let entry = self.rmp.entry(page);
        if entry.state != PageState::PreGuest {
            return Err(Status::InvalidPageState);
        }
        if guest.state != SnpGuestState::Launch {
            return Err(Status::InvalidGuestState);
        }
        let asid = guest.asid.ok_or(Status::Inactive)?;
        if entry.asid != asid {
            return Err(Status::InvalidPageOwner);
        }
        Ok((asid, entry))
    }

    /// The end of one page's update, its ciphertext in place: the digest extended, the page
    /// the guest's.
    fn snp_update_record(
        &mut self,
        gctx: u32,
        page: HostPage,
        entry: RmpEntry,
        ty: PageType,
        contents: [u8; DIGEST_LEN],
    ) -> FwResult<()> {
        let guest = self.snp_guest_mut(gctx)?;
        guest.ld.extend_contents(ty, entry.gpa, contents);
        self.rmp.set(
            page,
            RmpEntry {
                state: PageState::GuestValid,
                vmsa: ty == PageType::Vmsa,
                ..entry
            },
        );
        Ok(())
    }

    /// SNP_LAUNCH_UPDATE of many pages in order, as that many commands: the pages done and
    /// how the first failure, if any, ended it. NORMAL pages at consecutive addresses of
    /// memory this process holds are hashed and encrypted where they lie, on the part's
    /// several engines side by side (the PSP's SHA and AES engines work beside its core);
    /// only pages whose checks pass are touched, and the digest chain and the RMP follow in
    /// order.
    pub fn snp_launch_update_pages(
        &mut self,
        gctx: u32,
        pages: &[(HostPage, GuestAddress)],
        ty: PageType,
        mem: &dyn GuestMemory,
    ) -> (usize, FwResult<()>) {
        let mut done = 0;
        let consecutive = pages
            .windows(2)
            .all(|w| w[1].1 .0 == w[0].1 .0 + PAGE as u64 && w[1].0 > w[0].0);
        if ty == PageType::Normal && pages.len() > 1 && consecutive {
            let mut entries = vec![];
            let mut asid = 0;
            for (page, _) in pages {
                match self.snp_update_checks(gctx, *page) {
                    Ok((a, e)) => {
                        asid = a;
                        entries.push(e);
                    }
                    Err(_) => break,
                }
            }
            let n = entries.len();
            let start = pages[0].1;
            let mut contents = vec![[0u8; DIGEST_LEN]; n];
            let mut worked = Err(Status::InvalidAddress);
            let me = &*self;
            let in_place = n > 1
                && mem.in_place(start, (n * PAGE) as u64, &mut |bytes| {
                    worked = me.hash_and_encrypt(asid, start, bytes, &mut contents);
                });
            if in_place && worked.is_ok() {
                for (i, entry) in entries.into_iter().enumerate() {
                    if let Err(e) = self.snp_update_record(gctx, pages[i].0, entry, ty, contents[i])
                    {
                        return (done, Err(e));
                    }
                    done += 1;
                }
            }
        }
        for (page, at) in &pages[done..] {
            if let Err(e) = self.snp_launch_update(gctx, *page, ty, mem, *at) {
                return (done, Err(e));
            }
            done += 1;
        }
        (done, Ok(()))
    }

    /// Each page's SHA-384, then the page encrypted in place (`bytes` lies at `start`),
    /// spread over the machine's cores.
    fn hash_and_encrypt(
        &self,
        asid: u32,
        start: GuestAddress,
        bytes: &mut [u8],
        contents: &mut [[u8; DIGEST_LEN]],
    ) -> FwResult<()> {
        let memctl = &self.memctl;
        per_page(bytes, contents, |i, page, digest| {
            *digest = LaunchDigest::page_contents(PageType::Normal, page);
            memctl.encrypt(asid, GuestAddress(start.0 + (i * PAGE) as u64), page)
        })
        .map_err(|s| match s.error {
            Some(e) => internal("SNP_LAUNCH_UPDATE", e),
            None => internal("SNP_LAUNCH_UPDATE", "a hashing thread panicked"),
        })
    }

    /// The secrets page: version, FMS, GOSVW, the VMPCKs, the TSC factor; the rest zero.
    fn fill_secrets_page(&self, guest: &SnpGuest, buf: &mut [u8]) {
        use secrets_page::*;
        buf.fill(0);
        buf[VERSION_AT..VERSION_AT + 4].copy_from_slice(&VERSION.to_le_bytes());
        buf[FMS_AT..FMS_AT + 4].copy_from_slice(&self.chip.product.signature().to_le_bytes());
        buf[GOSVW].copy_from_slice(&guest.gosvw);
        for (range, key) in VMPCK.iter().zip(guest.vmpck.iter()) {
            buf[range.clone()].copy_from_slice(key);
        }
        buf[TSC_FACTOR_AT..TSC_FACTOR_AT + 4].copy_from_slice(&TSC_FACTOR.to_le_bytes());
    }

    /// SNP_LAUNCH_FINISH: checks the ID block and its signatures when given, keeps
    /// HOST_DATA, and moves LAUNCH → RUNNING.
    pub fn snp_launch_finish(&mut self, gctx: u32, finish: &SnpLaunchFinish<'_>) -> FwResult<()> {
        let guest = self.snp_guest(gctx)?;
        if guest.state != SnpGuestState::Launch {
            return Err(Status::InvalidGuestState);
        }
        if guest.asid.is_none() {
            return Err(Status::Inactive);
        }
        let identity = match finish.id_block {
            None => None,
            Some((block, auth)) => Some(check_id_block(guest, block, auth, finish.auth_key_en)?),
        };
        let guest = self.snp_guest_mut(gctx)?;
        guest.identity = identity;
        guest.host_data = finish.host_data;
        guest.vcek_disabled = finish.vcek_disabled;
        guest.state = SnpGuestState::Running;
        Ok(())
    }

    /// SNP_DECOMMISSION: unbinds the ASID (it needs DF_FLUSH before reuse) and frees the
    /// context, its keys zeroized. The guest's pages stay assigned until the hypervisor
    /// takes them back.
    pub fn snp_decommission(&mut self, gctx: u32) -> FwResult<()> {
        self.snp_guest(gctx)?;
        let guest = self.snp.guests.remove(&gctx).ok_or(Status::InvalidGuest)?;
        if let Some(asid) = guest.asid {
            self.memctl.clear(asid);
            self.asids[asid as usize] = AsidState::Dirty;
        }
        Ok(())
    }

    /// The ASID of a running or launching SNP guest.
    pub(crate) fn snp_guest_asid(&self, gctx: u32) -> FwResult<u32> {
        self.snp_guest(gctx)?.asid.ok_or(Status::Inactive)
    }

    /// A guest context's state, policy and ASID.
    pub fn snp_guest_status(&self, gctx: u32) -> FwResult<SnpGuestStatus> {
        let g = self.snp_guest(gctx)?;
        Ok(SnpGuestStatus {
            state: g.state,
            policy: g.policy,
            asid: g.asid.unwrap_or(0),
            launch_tcb: g.launch_tcb,
        })
    }

    /// RMPUPDATE by the hypervisor: `page` assigned to `asid` at `gpa`, immutable until the
    /// firmware takes it in (KVM's `rmp_make_private`). Not a firmware command: the CPU
    /// instruction, here beside the firmware because the firmware owns the table's memory.
    pub fn rmp_assign(
        &mut self,
        page: HostPage,
        asid: u32,
        gpa: u64,
    ) -> Result<(), crate::memctl::rmp::RmpError> {
        self.rmp.assign(page, asid, gpa)
    }

    /// RMPUPDATE back to the hypervisor (KVM's `rmp_make_shared`, page reclaim).
    pub fn rmp_make_shared(&mut self, page: HostPage) {
        self.rmp.make_shared(page)
    }

    /// The RMP entry of `page`.
    pub fn rmp_entry(&self, page: HostPage) -> RmpEntry {
        self.rmp.entry(page)
    }

    /// Every page of memory object `object` that is not the hypervisor's.
    pub fn rmp_owned_pages(&self, object: u64) -> Vec<(HostPage, RmpEntry)> {
        self.rmp.owned_pages(object)
    }

    /// Pages assigned to any guest.
    pub fn rmp_assigned(&self) -> usize {
        self.rmp.assigned()
    }

    /// The guest's launch digest so far: what its reports will carry as MEASUREMENT. Not a
    /// firmware command; for the firmware's own tests.
    #[cfg(test)]
    pub(crate) fn snp_launch_digest(&self, gctx: u32) -> Option<[u8; DIGEST_LEN]> {
        self.snp.guests.get(&gctx).map(|g| g.ld.bytes())
    }
}

/// LAUNCH_FINISH's ID block checks, in the firmware's order: the digest, the policy, the
/// algorithms, the ID key's signature of the block, then the author key's of the ID key.
fn check_id_block(
    guest: &SnpGuest,
    block: &[u8; id_block::LEN],
    auth: &[u8; id_auth::LEN],
    auth_key_en: bool,
) -> FwResult<IdentityBinding> {
    let u32_at = |b: &[u8], r: std::ops::Range<usize>| {
        u32::from_le_bytes(b[r].try_into().unwrap_or_default())
    };
    if block[id_block::LD] != guest.ld.bytes() {
        return Err(Status::BadMeasurement);
    }
    let policy = u64::from_le_bytes(block[id_block::POLICY].try_into().unwrap_or_default());
    if policy != guest.policy {
        return Err(Status::PolicyFailure);
    }
    if u32_at(auth, id_auth::ID_KEY_ALGO) != id_auth::ALGO_ECDSA_P384_SHA384
        || (auth_key_en && u32_at(auth, id_auth::AUTH_KEY_ALGO) != id_auth::ALGO_ECDSA_P384_SHA384)
    {
        return Err(Status::InvalidParam);
    }
    let verify = |key: &[u8], msg: &[u8], sig: &[u8]| {
        let key = EcPublic::from_amd_key(key).ok_or(Status::BadSignature)?;
        let sig: &[u8; uapi::cert::SIG_LEN] = sig[..uapi::cert::SIG_LEN]
            .try_into()
            .map_err(|_| Status::BadSignature)?;
        if key.verify(uapi::cert::algo::ECDSA_SHA384, msg, sig) {
            Ok(())
        } else {
            Err(Status::BadSignature)
        }
    };
    let id_key = &auth[id_auth::ID_KEY];
    verify(id_key, block, &auth[id_auth::ID_BLOCK_SIG])?;
    let author_key_digest = if auth_key_en {
        let author = &auth[id_auth::AUTHOR_KEY];
        verify(author, id_key, &auth[id_auth::ID_KEY_SIG])?;
        Some(Sha384::digest(author).into())
    } else {
        None
    };
    let mut binding = IdentityBinding {
        family_id: [0; 16],
        image_id: [0; 16],
        guest_svn: u32_at(block, id_block::GUEST_SVN),
        id_key_digest: Sha384::digest(id_key).into(),
        author_key_digest,
    };
    binding
        .family_id
        .copy_from_slice(&block[id_block::FAMILY_ID]);
    binding.image_id.copy_from_slice(&block[id_block::IMAGE_ID]);
    Ok(binding)
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
