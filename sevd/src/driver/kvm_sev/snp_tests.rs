//! The node's SNP launch against the firmware, with a mock VMM address space: KVM's errno,
//! partial progress, and that no failure leaves a page assigned, an ASID bound or a context
//! allocated.

use std::sync::{Arc, Mutex};

use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_SET_TYPE, SEVD_VM_SET_VMSA,
};
use uapi::kvm::*;
use uapi::snp::PageType;
use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, IoctlRequest, UserAddr, VecMemory};

use crate::driver::kvm_sev::{KvmSev, Limits, SevFdCheck, Staging};
use crate::driver::sev_dev::{InitMode, SevDev};
use crate::firmware::nv::MemStorage;
use crate::firmware::test_support::firmware;

const BASE: u64 = 0x100_0000;
const ARG: u64 = BASE; // structs
const VMSA: u64 = BASE + 0x1000;
const RAM: u64 = BASE + 0x10_0000; // guest RAM, 64 KiB at GPA 0
const RAM_LEN: u64 = 0x10000;
const SEV_FD: u32 = 3;

struct AnyFd;
impl SevFdCheck for AnyFd {
    fn is_sev_node(&self, _pid: u32, fd: u32) -> bool {
        fd == SEV_FD
    }
}

struct Rig {
    kvm: KvmSev,
    dev: Arc<Mutex<SevDev>>,
    mem: VecMemory,
}

impl Rig {
    fn new(snp: bool) -> Rig {
        let mut fw = firmware();
        if snp {
            fw = fw.with_snp(Box::new(MemStorage::default()));
        }
        let dev = Arc::new(Mutex::new(SevDev::probe(fw, InitMode::AtProbe)));
        let kvm = KvmSev::new(
            dev.clone(),
            Arc::new(AnyFd),
            Limits::default(),
            Staging::Always,
        );
        Rig {
            kvm,
            dev,
            mem: VecMemory::new(BASE, 0x20_0000),
        }
    }

    fn ioctl(&self, fh: u64, cmd: u32, arg: &[u8]) -> (i32, Vec<u8>) {
        let r = self.kvm.ioctl(
            1,
            1,
            &self.mem,
            fh,
            IoctlRequest {
                cmd,
                in_data: arg,
                out_size: arg.len() as u32,
                compat: false,
            },
        );
        match r {
            Ok(reply) => (reply.result, reply.data),
            Err(e) => (-(e as i32), vec![]),
        }
    }

    /// A VM of type `ty` with the RAM slot, INIT2 done.
    fn vm(&self, fh: u64, ty: u64) -> Result<(), Errno> {
        self.kvm.create_vm(fh, 1, 0)?;
        let (r, _) = self.ioctl(fh, SEVD_VM_SET_TYPE, &ty.to_ne_bytes());
        if r != 0 {
            return Err(Errno::from_raw(-r));
        }
        let region = KvmUserspaceMemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM_LEN,
            userspace_addr: RAM,
        };
        assert_eq!(
            self.ioctl(fh, KVM_SET_USER_MEMORY_REGION, region.as_bytes())
                .0,
            0
        );
        self.op(fh, KvmSevCmdId::Init2, &KvmSevInit::default())
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// One encrypt op with `arg` at ARG: errno and `error`; the struct is left at ARG.
    fn op<T: ByteValued>(&self, fh: u64, id: KvmSevCmdId, arg: &T) -> Result<(), (Errno, u32)> {
        self.mem.write(UserAddr(ARG), arg.as_bytes()).unwrap();
        let cmd = KvmSevCmd {
            id: id as u32,
            pad0: 0,
            data: ARG,
            error: 0xdead,
            sev_fd: SEV_FD,
        };
        let (r, back) = self.ioctl(fh, SEVD_VM_ENCRYPT_OP, cmd.as_bytes());
        let error = KvmSevCmd::from_slice(&back)
            .map(|c| c.error)
            .unwrap_or(0xdead);
        if r == 0 {
            Ok(())
        } else {
            Err((Errno::from_raw(-r), error))
        }
    }

    fn arg<T: ByteValued>(&self) -> T {
        let mut v = T::default();
        self.mem.read(UserAddr(ARG), v.as_bytes_mut()).unwrap();
        v
    }

    fn update(
        &self,
        fh: u64,
        gfn: u64,
        uaddr: u64,
        pages: u64,
        ty: PageType,
    ) -> Result<KvmSevSnpLaunchUpdate, (Errno, u32)> {
        let arg = KvmSevSnpLaunchUpdate {
            gfn_start: gfn,
            uaddr,
            len: pages * 4096,
            type_: ty as u8,
            ..Default::default()
        };
        self.op(fh, KvmSevCmdId::SnpLaunchUpdate, &arg)?;
        Ok(self.arg())
    }

    fn start(&self, fh: u64) {
        let start = KvmSevSnpLaunchStart {
            policy: 0x30000,
            ..Default::default()
        };
        self.op(fh, KvmSevCmdId::SnpLaunchStart, &start).unwrap();
    }

    fn assigned(&self) -> usize {
        self.dev.lock().unwrap().firmware().rmp_assigned()
    }

    fn snp_guests(&self) -> u32 {
        self.dev
            .lock()
            .unwrap()
            .firmware()
            .snp_platform_status()
            .unwrap()
            .guest_count
    }
}

#[test]
fn snp_vms_exist_only_where_the_host_enabled_snp() {
    let rig = Rig::new(false);
    assert_eq!(rig.vm(1, KVM_X86_SNP_VM as u64), Err(Errno::EINVAL));
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    // Only the SNP ids once the VM is an SNP guest.
    let start = KvmSevLaunchStart::default();
    assert_eq!(
        rig.op(1, KvmSevCmdId::LaunchStart, &start).unwrap_err().0,
        Errno::EPERM
    );
    assert_eq!(
        rig.op(1, KvmSevCmdId::GuestStatus, &start).unwrap_err().0,
        Errno::EPERM
    );
    // SNP ids on an SEV-ES VM.
    rig.vm(2, KVM_X86_SEV_ES_VM as u64).unwrap();
    let snp_start = KvmSevSnpLaunchStart {
        policy: 0x30000,
        ..Default::default()
    };
    assert_eq!(
        rig.op(2, KvmSevCmdId::SnpLaunchStart, &snp_start)
            .unwrap_err()
            .0,
        Errno::ENOTTY
    );
    assert_eq!(
        rig.update(2, 0, RAM, 1, PageType::Normal).unwrap_err().0,
        Errno::EINVAL
    );
}

#[test]
fn launch_start_checks_as_kvm_then_as_the_firmware() {
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    let start = |policy, flags| KvmSevSnpLaunchStart {
        policy,
        flags,
        ..Default::default()
    };
    for (arg, want) in [
        (start(0x30000, 1), (Errno::EINVAL, 0xdead)),
        (start(0x10000, 0), (Errno::EINVAL, 0xdead)), // no must-be-one bit
        (start(0x70000, 0), (Errno::EINVAL, 0xdead)), // MIGRATE_MA: not KVM's
        (
            start(0x20000, 0),
            (Errno::EIO, Status::PolicyFailure as u32),
        ), // SMT platform
    ] {
        assert_eq!(
            rig.op(1, KvmSevCmdId::SnpLaunchStart, &arg),
            Err(want),
            "{arg:?}"
        );
    }
    assert_eq!(
        rig.snp_guests(),
        0,
        "the refused context was decommissioned"
    );
    rig.start(1);
    assert_eq!(
        rig.op(1, KvmSevCmdId::SnpLaunchStart, &start(0x30000, 0))
            .unwrap_err()
            .0,
        Errno::EINVAL
    );
    assert_eq!(rig.snp_guests(), 1);
    rig.kvm.destroy_vm(1);
    assert_eq!(rig.snp_guests(), 0);
}

#[test]
fn launch_update_takes_pages_once_and_reports_partial_progress() {
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    assert_eq!(
        rig.update(1, 0, RAM, 1, PageType::Normal).unwrap_err().0,
        Errno::EINVAL,
        "before LAUNCH_START"
    );
    rig.start(1);
    let code: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
    rig.mem.write(UserAddr(RAM), &code).unwrap();
    // KVM's own checks.
    let mut bad = KvmSevSnpLaunchUpdate {
        gfn_start: 0,
        uaddr: RAM,
        len: 100,
        type_: 1,
        ..Default::default()
    };
    assert_eq!(
        rig.op(1, KvmSevCmdId::SnpLaunchUpdate, &bad).unwrap_err().0,
        Errno::EINVAL
    );
    bad.len = 4096;
    for (ty, flags) in [(2u8, 0u16), (7, 0), (0, 0), (1, 1)] {
        bad.type_ = ty;
        bad.flags = flags;
        assert_eq!(
            rig.op(1, KvmSevCmdId::SnpLaunchUpdate, &bad).unwrap_err().0,
            Errno::EINVAL
        );
    }
    assert_eq!(
        rig.update(1, RAM_LEN / 4096, RAM, 1, PageType::Normal)
            .unwrap_err()
            .0,
        Errno::EINVAL,
        "no slot"
    );

    let done = rig.update(1, 0, RAM, 2, PageType::Normal).unwrap();
    assert_eq!((done.gfn_start, done.len, done.uaddr), (2, 0, RAM + 0x2000));
    let mut host = vec![0u8; 4096];
    rig.mem.read(UserAddr(RAM), &mut host).unwrap();
    assert_ne!(host[..], code[..4096], "the hypervisor sees ciphertext");
    assert_eq!(rig.assigned(), 2);
    // Again: the pages are the guest's (EEXIST inside KVM, EIO outside, no status).
    assert_eq!(
        rig.update(1, 0, RAM, 1, PageType::Normal),
        Err((Errno::EIO, 0))
    );
    // ZERO pages ignore the source and leave `uaddr` as it was.
    let zero = rig.update(1, 2, 0xdead_0000, 3, PageType::Zero).unwrap();
    assert_eq!((zero.gfn_start, zero.len, zero.uaddr), (5, 0, 0xdead_0000));
    let assigned = rig.assigned();
    let p = rig.update(1, 15, 0xdead_0000, 1, PageType::Normal);
    assert_eq!(p, Err((Errno::EIO, 0)), "an unreadable source");
    assert_eq!(rig.assigned(), assigned, "nothing left assigned");
    rig.kvm.destroy_vm(1);
    assert_eq!(rig.assigned(), 0, "close gives every page back");
}

#[test]
fn a_taken_page_inside_a_range_gives_partial_progress() {
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    rig.start(1);
    rig.update(1, 2, RAM + 0x2000, 1, PageType::Normal).unwrap();
    let p = rig.update(1, 0, RAM, 4, PageType::Normal).unwrap();
    assert_eq!((p.gfn_start, p.len, p.uaddr), (2, 2 * 4096, RAM + 0x2000));
    assert_eq!(
        rig.update(1, 2, RAM + 0x2000, 2, PageType::Normal),
        Err((Errno::EIO, 0))
    );
}

#[test]
fn a_rejected_cpuid_page_comes_back_corrected_and_is_not_kept() {
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    rig.start(1);
    let src = BASE + 0x8000;
    let mut table = vec![0u8; 4096];
    table[0..4].copy_from_slice(&1u32.to_le_bytes());
    table[0x10..0x14].copy_from_slice(&0x8000_001fu32.to_le_bytes());
    table[0x10 + 28] = 0x30; // C-bit 48
    rig.mem.write(UserAddr(src), &table).unwrap();
    assert_eq!(
        rig.update(1, 1, src, 1, PageType::Cpuid),
        Err((Errno::EIO, Status::InvalidParam as u32))
    );
    let mut back = vec![0u8; 4096];
    rig.mem.read(UserAddr(src), &mut back).unwrap();
    assert_eq!(back[0x10 + 28], 0x33);
    assert_eq!(rig.assigned(), 0);
    rig.update(1, 1, src, 1, PageType::Cpuid).unwrap();
}

#[test]
fn finish_measures_the_save_areas_and_the_guest_sees_its_secrets() {
    let rig = Rig::new(true);
    rig.vm(1, KVM_X86_SNP_VM as u64).unwrap();
    rig.start(1);
    // KVM copies from the source for every type but ZERO, SECRETS included.
    assert_eq!(
        rig.update(1, 1, 0, 1, PageType::Secrets),
        Err((Errno::EIO, 0))
    );
    rig.update(1, 1, RAM + 0x1000, 1, PageType::Secrets)
        .unwrap();
    let mut vmsa = vec![0u8; 4096];
    vmsa[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes());
    rig.mem.write(UserAddr(VMSA), &vmsa).unwrap();
    let set = SevdVmsa {
        vcpu: 0,
        pad: 0,
        uaddr: VMSA,
    };
    assert_eq!(rig.ioctl(1, SEVD_VM_SET_VMSA, set.as_bytes()).0, 0);
    let finish = KvmSevSnpLaunchFinish {
        flags: 1,
        ..Default::default()
    };
    assert_eq!(
        rig.op(1, KvmSevCmdId::SnpLaunchFinish, &finish)
            .unwrap_err()
            .0,
        Errno::EINVAL
    );
    let finish = KvmSevSnpLaunchFinish {
        host_data: [7; 32],
        ..Default::default()
    };
    rig.op(1, KvmSevCmdId::SnpLaunchFinish, &finish).unwrap();
    assert_eq!(rig.assigned(), 2, "the secrets page and the save area");
    // The guest reads its secrets page: version 3, VMPCK0 set.
    let out = BASE + 0x9000;
    let access = SevdGuestAccess {
        gpa: 0x1000,
        uaddr: out,
        len: 4096,
        write: 0,
    };
    assert_eq!(
        rig.ioctl(1, uapi::ioctl::SEVD_VM_GUEST_ACCESS, access.as_bytes())
            .0,
        0
    );
    let mut page = vec![0u8; 4096];
    rig.mem.read(UserAddr(out), &mut page).unwrap();
    assert_eq!(page[0..4], 3u32.to_le_bytes());
    assert!(page[0x20..0x40].iter().any(|b| *b != 0));
    // The guest asks for a report through the VMM's half of the guest request.
    let mut channel = crate::guest::GuestChannel::from_secrets_page(&page, 0).unwrap();
    let (req_at, resp_at) = (BASE + 0xa000, BASE + 0xb000);
    let rsp = channel
        .report(&[1; 64], 0, |req| {
            rig.mem.write(UserAddr(req_at), req).unwrap();
            let arg = SevdSnpGuestRequest {
                req_uaddr: req_at,
                resp_uaddr: resp_at,
                exitinfo2: 0xff,
            };
            let (r, back) = rig.ioctl(1, uapi::ioctl::SEVD_VM_SNP_GUEST_REQUEST, arg.as_bytes());
            assert_eq!(r, 0);
            assert_eq!(SevdSnpGuestRequest::from_slice(&back).unwrap().exitinfo2, 0);
            let mut resp = vec![0u8; 4096];
            rig.mem.read(UserAddr(resp_at), &mut resp).unwrap();
            Ok(resp)
        })
        .unwrap();
    assert_eq!(rsp.status, 0);
    assert_eq!(rsp.report[uapi::snp::report::HOST_DATA], [7; 32]);
    // The same page again: the firmware's status in exitinfo2, the ioctl itself succeeds.
    let arg = SevdSnpGuestRequest {
        req_uaddr: req_at,
        resp_uaddr: resp_at,
        exitinfo2: 0,
    };
    let (r, back) = rig.ioctl(1, uapi::ioctl::SEVD_VM_SNP_GUEST_REQUEST, arg.as_bytes());
    assert_eq!(r, 0);
    assert_eq!(
        SevdSnpGuestRequest::from_slice(&back).unwrap().exitinfo2,
        Status::AeadOflow as u64
    );
    // Launched: no more updates, and the refused page is given back.
    assert_eq!(
        rig.update(1, 4, RAM + 0x4000, 1, PageType::Normal),
        Err((Errno::EIO, Status::InvalidGuestState as u32))
    );
    assert_eq!(rig.assigned(), 2);
    rig.kvm.destroy_vm(1);
    assert_eq!((rig.assigned(), rig.snp_guests()), (0, 0));
}

#[test]
fn failed_launches_leak_no_asid() {
    let rig = Rig::new(true);
    // More VMs than SEV-ES ASIDs (15), each failing somewhere, each closed.
    for fh in 1..=40u64 {
        rig.vm(fh, KVM_X86_SNP_VM as u64).unwrap();
        rig.start(fh);
        let _ = rig.update(fh, 0, 0xdead_0000, 1, PageType::Normal);
        rig.kvm.destroy_vm(fh);
    }
    assert_eq!((rig.assigned(), rig.snp_guests()), (0, 0));
}
