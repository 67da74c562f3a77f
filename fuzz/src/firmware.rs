//! The firmware driven through its public command interface by arbitrary command sequences,
//! with an oracle that checks after every command:
//! - the platform state table (firmware-semantics §1.3): a command succeeds only from the
//!   states the firmware allows and leaves the state it names; the state agrees with the
//!   guest count;
//! - a failed command changes nothing that can be observed (state, status, ASIDs, guests,
//!   guest memory, the NV store, the exported certificates);
//! - handles and ASIDs: a new handle is not one in use, every live guest is known and no other,
//!   an ASID is bound to at most one live guest and only to it;
//! - the NV store decodes under the chip's seal and holds exactly the certificates the
//!   platform exports; at the end a power cycle over it brings back the same keys.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use sevd::firmware::chip::Chip;
use sevd::firmware::migration::{Packet, Target};
use sevd::firmware::nv::{MemStorage, NvStorage, PlatformKeys};
use sevd::firmware::random::OsRandom;
use sevd::firmware::{
    AsidState, Firmware, FirmwareConfig, GuestState, GuestStatus, LaunchSecret, PlatformState,
};
use sevd::memctl::{GuestAddress, GuestMemory, VecGuestMemory};
use uapi::{ByteValued, Status};

use crate::bytes::Bytes;
use crate::chip::{chip, stored_nv};

/// Guest RAM the commands may name: 64 KiB at GPA 0.
const RAM: usize = 0x10000;
/// Commands per input: enough for a launch and its teardown, few enough to stay fast.
const MAX_OPS: usize = 48;

/// The flash, shared with the oracle so it can read what the firmware stored.
#[derive(Clone, Default)]
pub(crate) struct SharedNv(Arc<Mutex<MemStorage>>);

impl SharedNv {
    pub(crate) fn new(nv: MemStorage) -> Self {
        SharedNv(Arc::new(Mutex::new(nv)))
    }

    pub(crate) fn bytes(&self) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .data
            .clone()
    }
}

impl NvStorage for SharedNv {
    fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read()
    }
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(data)
    }
    fn erase(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).erase()
    }
    fn quarantine(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .quarantine()
    }
}

/// The flash every input starts from, opened once.
fn opened_stored_nv() -> (Vec<u8>, Vec<u8>) {
    static OPENED: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    OPENED
        .get_or_init(|| {
            let bytes = stored_nv().data.expect("stored keys");
            (bytes.clone(), open_nv(&chip(), &bytes))
        })
        .clone()
}

/// PDH ‖ PEK ‖ OCA as the sealed store `bytes` holds them.
fn open_nv(chip: &Chip, bytes: &[u8]) -> Vec<u8> {
    let seal = chip.nv_seal_key().expect("seal key");
    let v1 = chip.nv_v1_mac_key().expect("v1 key");
    let keys = PlatformKeys::decode(bytes, &seal, &v1).expect("NV store round-trips");
    [keys.pdh.encode(), keys.pek.encode(), keys.oca.encode()].concat()
}

/// Everything a command could change that the host can observe.
#[derive(Debug, PartialEq)]
struct Seen {
    state: PlatformState,
    status: Vec<u8>,
    asids: Vec<AsidState>,
    guests: Vec<Result<GuestStatus, Status>>,
    ram: Vec<u8>,
    nv: Option<Vec<u8>>,
    certs: Option<(Vec<u8>, Vec<u8>)>,
}

struct Rig {
    chip: Chip,
    fw: Firmware,
    nv: SharedNv,
    ram: VecGuestMemory,
    /// The handles the oracle knows to be live.
    live: BTreeSet<u32>,
    /// Every handle ever returned, to ask about retired ones too.
    seen: BTreeSet<u32>,
    /// The NV bytes last opened, with the PDH, PEK and OCA they hold (opening is slow: it
    /// derives three public keys).
    checked_nv: Option<(Vec<u8>, Vec<u8>)>,
    /// The last SEND_START's policy and session, and the last packet sent: a migration from
    /// this platform to itself, so RECEIVE_* get inputs that open.
    sent: Option<(u32, [u8; 128])>,
    packet: Option<Packet>,
}

impl Rig {
    fn new() -> Rig {
        let chip = chip();
        let nv = SharedNv::new(stored_nv());
        let fw = Firmware::new(
            crate::chip::chip(),
            Box::new(nv.clone()),
            FirmwareConfig::default(),
            Box::new(OsRandom),
        )
        .expect("firmware");
        Rig {
            chip,
            fw,
            nv,
            ram: VecGuestMemory::from_region(GuestAddress(0), vec![0; RAM]),
            live: BTreeSet::new(),
            seen: BTreeSet::new(),
            checked_nv: Some(opened_stored_nv()),
            sent: None,
            packet: None,
        }
    }

    fn certs(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (mut a, mut b) = (u32::MAX, u32::MAX);
        self.fw.pdh_cert_export(&mut a, &mut b).ok()
    }

    fn observe(&mut self) -> Seen {
        let mut ram = vec![0; RAM];
        self.ram
            .read(GuestAddress(0), &mut ram)
            .expect("the rig's RAM");
        Seen {
            state: self.fw.state(),
            status: self
                .fw
                .platform_status()
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default(),
            asids: self.fw.asid_states().to_vec(),
            guests: self.seen.iter().map(|&h| self.fw.guest_status(h)).collect(),
            ram,
            nv: self.nv.bytes(),
            certs: self.certs(),
        }
    }

    /// A handle: mostly a live one, sometimes a retired or arbitrary one.
    fn handle(&self, r: &mut Bytes<'_>) -> u32 {
        let b = r.u8();
        let live: Vec<u32> = self.live.iter().copied().collect();
        match b {
            0..=0xDF if !live.is_empty() => live[b as usize % live.len()],
            0xE0..=0xEF => self.seen.iter().nth(b as usize & 0xF).copied().unwrap_or(0),
            _ => r.u32() % 4,
        }
    }

    fn gpa_len(r: &mut Bytes<'_>) -> (GuestAddress, u32) {
        // Mostly 16-byte multiples inside RAM; the high bits still reach every value.
        let gpa = (r.u16() as u64) << (r.u8() % 5);
        let len = (r.u16() as u32) << (r.u8() % 3);
        (GuestAddress(gpa), len)
    }
}

/// The commands, by the first byte of each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Init,
    Shutdown,
    PlatformReset,
    PlatformStatus,
    PekGen,
    PekCsr,
    PekCertImport,
    PdhGen,
    PdhCertExport,
    GetId,
    DfFlush,
    LaunchStart,
    LaunchUpdateData,
    LaunchUpdateVmsa,
    LaunchMeasure,
    LaunchSecret,
    LaunchFinish,
    Activate,
    Deactivate,
    Decommission,
    GuestStatus,
    DbgDecrypt,
    DbgEncrypt,
    SendStart,
    SendUpdateData,
    SendUpdateVmsa,
    SendFinish,
    SendCancel,
    ReceiveStart,
    ReceiveUpdateData,
    ReceiveUpdateVmsa,
    ReceiveFinish,
    Attestation,
}

const OPS: [Op; 33] = [
    Op::Init,
    Op::Shutdown,
    Op::PlatformReset,
    Op::PlatformStatus,
    Op::PekGen,
    Op::PekCsr,
    Op::PekCertImport,
    Op::PdhGen,
    Op::PdhCertExport,
    Op::GetId,
    Op::DfFlush,
    Op::LaunchStart,
    Op::LaunchUpdateData,
    Op::LaunchUpdateVmsa,
    Op::LaunchMeasure,
    Op::LaunchSecret,
    Op::LaunchFinish,
    Op::Activate,
    Op::Deactivate,
    Op::Decommission,
    Op::GuestStatus,
    Op::DbgDecrypt,
    Op::DbgEncrypt,
    Op::SendStart,
    Op::SendUpdateData,
    Op::SendUpdateVmsa,
    Op::SendFinish,
    Op::SendCancel,
    Op::ReceiveStart,
    Op::ReceiveUpdateData,
    Op::ReceiveUpdateVmsa,
    Op::ReceiveFinish,
    Op::Attestation,
];

/// The states from which the firmware lets a platform command succeed (§1.3, "FW states"),
/// and the state it leaves; `None` for commands with no rule of their own.
fn table(op: Op) -> Option<(&'static [PlatformState], Option<PlatformState>)> {
    use PlatformState::*;
    Some(match op {
        Op::Init => (&[Uninit], Some(Init)),
        Op::Shutdown => (&[Uninit, Init, Working], Some(Uninit)),
        Op::PlatformReset => (&[Uninit], Some(Uninit)),
        Op::PekGen | Op::PekCertImport => (&[Init], Some(Init)),
        Op::PekCsr | Op::PdhGen | Op::PdhCertExport => (&[Init, Working], None),
        Op::LaunchStart | Op::ReceiveStart => (&[Init, Working], Some(Working)),
        _ => return None,
    })
}

/// What a successful command did to the set of guests.
enum Effect {
    None,
    New(u32),
    Gone(u32),
}

/// Runs one command.
fn run(rig: &mut Rig, op: Op, r: &mut Bytes<'_>) -> Result<Effect, Status> {
    let fw = &mut rig.fw;
    match op {
        Op::Init => fw.init(r.pick_u32(&[0, 1])).map(|_| Effect::None),
        Op::Shutdown => fw.shutdown().map(|_| Effect::None),
        Op::PlatformReset => fw.platform_reset().map(|_| Effect::None),
        Op::PlatformStatus => fw.platform_status().map(|_| Effect::None),
        Op::PekGen => fw.pek_gen().map(|_| Effect::None),
        Op::PekCsr => {
            let mut len = r.pick_u32(&[0x824, 0]);
            fw.pek_csr(&mut len).map(|_| Effect::None)
        }
        Op::PekCertImport => {
            let pek = r.exact(0x824);
            let oca = r.exact(0x824);
            fw.pek_cert_import(&pek, &oca).map(|_| Effect::None)
        }
        Op::PdhGen => fw.pdh_gen().map(|_| Effect::None),
        Op::PdhCertExport => {
            let mut pdh = r.pick_u32(&[0x824, 0]);
            let mut certs = r.pick_u32(&[0x186C, 0]);
            fw.pdh_cert_export(&mut pdh, &mut certs)
                .map(|_| Effect::None)
        }
        Op::GetId => {
            let mut len = r.pick_u32(&[128, 64, 0]);
            fw.get_id(&mut len).map(|_| Effect::None)
        }
        Op::DfFlush => fw.df_flush().map(|_| Effect::None),
        Op::LaunchStart => {
            let share = match r.u8() % 3 {
                0 => 0,
                1 => rig.handle(r),
                _ => r.u32(),
            };
            let fw = &mut rig.fw;
            // Policy: NODBG, NOKS, ES and the API bits are what changes behaviour.
            let policy = r.pick_u32(&[0, 1, 4, 5]);
            let (godh, session) = (r.exact(0x824), r.exact(128));
            let with_session = r.u8() & 1 == 1;
            let session = with_session.then_some((&godh[..], &session[..]));
            fw.launch_start(share, policy, session).map(Effect::New)
        }
        Op::LaunchUpdateData | Op::LaunchUpdateVmsa => {
            let h = rig.handle(r);
            let (gpa, len) = Rig::gpa_len(r);
            let len = if op == Op::LaunchUpdateVmsa {
                4096
            } else {
                len
            };
            let (fw, ram) = (&mut rig.fw, &rig.ram);
            if op == Op::LaunchUpdateVmsa {
                fw.launch_update_vmsa(h, gpa, len, ram)
                    .map(|_| Effect::None)
            } else {
                fw.launch_update_data(h, gpa, len, ram)
                    .map(|_| Effect::None)
            }
        }
        Op::LaunchMeasure => {
            let h = rig.handle(r);
            let mut len = r.pick_u32(&[48, 0]);
            rig.fw.launch_measure(h, &mut len).map(|_| Effect::None)
        }
        Op::LaunchSecret => {
            let h = rig.handle(r);
            let header = r.exact(52);
            let (gpa, len) = Rig::gpa_len(r);
            let trans = r.exact(len.min(4096) as usize);
            let secret = LaunchSecret {
                header: &header,
                guest_gpa: gpa,
                guest_len: len,
                trans: &trans,
            };
            rig.fw
                .launch_secret(h, secret, &rig.ram)
                .map(|_| Effect::None)
        }
        Op::LaunchFinish => {
            let h = rig.handle(r);
            rig.fw.launch_finish(h).map(|_| Effect::None)
        }
        Op::Activate => {
            let h = rig.handle(r);
            let asid = r.u8() as u32 % 40;
            rig.fw.activate(h, asid).map(|_| Effect::None)
        }
        Op::Deactivate => {
            let h = rig.handle(r);
            rig.fw.deactivate(h).map(|_| Effect::None)
        }
        Op::Decommission => {
            let h = rig.handle(r);
            rig.fw.decommission(h).map(|_| Effect::Gone(h))
        }
        Op::GuestStatus => {
            let h = rig.handle(r);
            rig.fw.guest_status(h).map(|_| Effect::None)
        }
        Op::DbgDecrypt => {
            let h = rig.handle(r);
            let (gpa, len) = Rig::gpa_len(r);
            rig.fw
                .dbg_decrypt(h, gpa, len, &rig.ram)
                .map(|_| Effect::None)
        }
        Op::DbgEncrypt => {
            let h = rig.handle(r);
            let (gpa, len) = Rig::gpa_len(r);
            let data = r.exact(len.min(4096) as usize);
            rig.fw
                .dbg_encrypt(h, gpa, &data, &rig.ram)
                .map(|_| Effect::None)
        }
        Op::SendStart => {
            let h = rig.handle(r);
            // This platform's own certificates (a move to itself), or the fuzzer's.
            let own = r.u8() & 3 != 0;
            let (pdh, chain, amd) = match (own, rig.certs()) {
                (true, Some((pdh, chain))) => {
                    let ca = rig.fw.ca_chain();
                    (pdh, chain, [ca.ask.encode(), ca.ark.encode()].concat())
                }
                _ => (r.exact(0x824), r.exact(0x186C), r.blob().to_vec()),
            };
            let target = Target {
                pdh: &pdh,
                plat_certs: &chain,
                amd_certs: &amd,
            };
            let mut len = r.pick_u32(&[128, 0]);
            let started = rig.fw.send_start(h, &target, &mut len)?;
            rig.sent = Some((started.policy, started.session));
            Ok(Effect::None)
        }
        Op::SendUpdateData | Op::SendUpdateVmsa => {
            let h = rig.handle(r);
            let (gpa, len) = Rig::gpa_len(r);
            let mut hdr = r.pick_u32(&[52, 0]);
            let (fw, ram) = (&mut rig.fw, &rig.ram);
            let p = if op == Op::SendUpdateVmsa {
                fw.send_update_vmsa(h, &mut hdr, gpa, len, len, ram)?
            } else {
                fw.send_update_data(h, &mut hdr, gpa, len, len, ram)?
            };
            rig.packet = Some(p);
            Ok(Effect::None)
        }
        Op::SendFinish => {
            let h = rig.handle(r);
            rig.fw.send_finish(h).map(|_| Effect::None)
        }
        Op::SendCancel => {
            let h = rig.handle(r);
            rig.fw.send_cancel(h).map(|_| Effect::None)
        }
        Op::ReceiveStart => {
            let share = if r.u8() & 1 == 0 { 0 } else { rig.handle(r) };
            let (pdh, _) = rig.certs().unwrap_or_default();
            let (policy, session) = match rig.sent {
                Some((p, s)) if r.u8() & 3 != 0 => (p, s.to_vec()),
                _ => (r.u32(), r.exact(128)),
            };
            rig.fw
                .receive_start(share, policy, &pdh, &session)
                .map(Effect::New)
        }
        Op::ReceiveUpdateData | Op::ReceiveUpdateVmsa => {
            let h = rig.handle(r);
            let gpa = GuestAddress((r.u16() as u64) & !15);
            let (header, trans) = match &rig.packet {
                Some(p) if r.u8() & 3 != 0 => (p.header.to_vec(), p.trans.clone()),
                _ => (r.exact(52), r.blob().to_vec()),
            };
            let len = trans.len() as u32;
            let (fw, ram) = (&mut rig.fw, &rig.ram);
            if op == Op::ReceiveUpdateVmsa {
                fw.receive_update_vmsa(h, &header, gpa, len, &trans, ram)
            } else {
                fw.receive_update_data(h, &header, gpa, len, &trans, ram)
            }
            .map(|_| Effect::None)
        }
        Op::ReceiveFinish => {
            let h = rig.handle(r);
            rig.fw.receive_finish(h).map(|_| Effect::None)
        }
        Op::Attestation => {
            let h = rig.handle(r);
            let mnonce: [u8; 16] = r.exact(16).try_into().unwrap_or_default();
            let mut len = r.pick_u32(&[208, 0, 207, 4096]);
            rig.fw
                .attestation(h, &mnonce, &mut len)
                .map(|_| Effect::None)
        }
    }
}

/// The checks that hold whatever happened.
fn invariants(rig: &mut Rig, seen: &Seen) {
    let count = rig.fw.platform_status().map(|s| s.guest_count).unwrap_or(0);
    assert_eq!(
        count as usize,
        rig.live.len(),
        "guest count vs live handles"
    );
    match seen.state {
        PlatformState::Uninit => assert!(rig.live.is_empty(), "guests while UNINIT"),
        PlatformState::Init => assert!(rig.live.is_empty(), "INIT with guests"),
        PlatformState::Working => assert!(!rig.live.is_empty(), "WORKING without guests"),
    }
    for &h in &rig.seen {
        // An unknown handle is not an error to GUEST_STATUS: it reports state 0.
        let known = matches!(rig.fw.guest_status(h), Ok(s) if s.state != GuestState::Uninit);
        assert_eq!(
            known,
            rig.live.contains(&h),
            "handle {h}: GUEST_STATUS vs liveness"
        );
    }
    // Each ASID bound to a live guest, at most once, and to the ASID that guest reports.
    let mut bound = BTreeSet::new();
    for (asid, st) in seen.asids.iter().enumerate() {
        if let AsidState::Bound(h) = *st {
            assert!(
                rig.live.contains(&h),
                "ASID {asid} bound to dead handle {h}"
            );
            assert!(bound.insert(h), "handle {h} bound to two ASIDs");
            let status = rig.fw.guest_status(h).expect("live guest");
            assert_eq!(status.asid as usize, asid, "handle {h}'s ASID");
        }
    }
    for &h in &rig.live {
        let status = rig.fw.guest_status(h).expect("live guest");
        if status.asid != 0 {
            assert!(bound.contains(&h), "handle {h} runs on an unbound ASID");
        }
    }
    // The NV store opens under the chip's seal and holds what the platform exports.
    if let Some(bytes) = &seen.nv {
        if rig.checked_nv.as_ref().map(|(b, _)| b) != Some(bytes) {
            rig.checked_nv = Some((bytes.clone(), open_nv(&rig.chip, bytes)));
        }
        if let (Some((pdh, chain)), Some((_, stored))) = (&seen.certs, &rig.checked_nv) {
            let exported = [&pdh[..], &chain[..2 * 0x824]].concat();
            assert_eq!(&exported, stored, "NV PDH, PEK and OCA vs exported");
        }
    } else {
        assert!(
            seen.state == PlatformState::Uninit,
            "initialised platform with an empty NV store"
        );
    }
}

/// `SEV_FUZZ_TRACE=1` prints each command and its result, to read a failing input.
fn trace() -> bool {
    std::env::var_os("SEV_FUZZ_TRACE").is_some()
}

/// The firmware fuzz target: a sequence of commands, each checked.
pub fn firmware(data: &[u8]) {
    let mut rig = Rig::new();
    let mut r = Bytes::new(data);
    let mut before = rig.observe();
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = OPS[r.u8() as usize % OPS.len()];
        let from = rig.fw.state();
        let result = run(&mut rig, op, &mut r);
        if trace() {
            eprintln!("{op:?} from {from:?}: {:?}", result.as_ref().map(|_| ()));
        }
        match result {
            Ok(effect) => {
                match effect {
                    Effect::New(h) => {
                        assert!(rig.live.insert(h), "LAUNCH_START returned live handle {h}");
                        rig.seen.insert(h);
                    }
                    Effect::Gone(h) => assert!(rig.live.remove(&h), "DECOMMISSION of {h}"),
                    Effect::None => {}
                }
                if let Some((allowed, to)) = table(op) {
                    assert!(allowed.contains(&from), "{op:?} succeeded from {from:?}");
                    if let Some(to) = to {
                        assert_eq!(rig.fw.state(), to, "{op:?} from {from:?}");
                    }
                }
                if op == Op::Shutdown {
                    rig.live.clear();
                }
            }
            Err(_) => {
                let after = rig.observe();
                assert_eq!(after, before, "failed {op:?} changed something");
            }
        }
        before = rig.observe();
        invariants(&mut rig, &before);
    }
    power_cycle(&mut rig);
}

/// A new PSP over the same flash, INIT: the keys are the ones the old one last exported.
fn power_cycle(rig: &mut Rig) {
    let exported = rig.certs();
    let Some(stored) = rig.nv.bytes() else {
        return;
    };
    if Some(&stored) == stored_nv().data.as_ref() {
        return; // the flash every input starts from, which is known to come back
    }
    let nv = SharedNv::new(MemStorage {
        data: Some(stored),
        quarantined: None,
    });
    let mut fw = Firmware::new(
        chip(),
        Box::new(nv),
        FirmwareConfig::default(),
        Box::new(OsRandom),
    )
    .expect("firmware");
    fw.init(0).expect("INIT over a stored NV");
    if let Some(exported) = exported {
        let (mut a, mut b) = (u32::MAX, u32::MAX);
        let again = fw.pdh_cert_export(&mut a, &mut b).expect("PDH_CERT_EXPORT");
        assert_eq!(again, exported, "keys after a power cycle");
    }
}
