//! Migration through two `sev-vm` nodes, each over its own firmware, with mock VMM address
//! spaces: KVM's structs, length queries and errno, and a guest that arrives whole.

use std::sync::{Arc, Mutex};

use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_GUEST_ACCESS, SEVD_VM_RECEIVE_VMSA,
    SEVD_VM_SEND_VMSA, SEVD_VM_SET_VMSA,
};
use uapi::kvm::*;
use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, IoctlRequest, UserAddr, VecMemory};

use crate::driver::kvm_sev::{KvmSev, Limits, SevFdCheck, Staging};
use crate::driver::sev_dev::{InitMode, SevDev};
use crate::firmware::test_support::firmware;
use crate::memctl::GuestAddress;

pub(crate) const BASE: u64 = 0x100_0000;
pub(crate) const ARG: u64 = BASE;
const PDH: u64 = BASE + 0x1000;
const CHAIN: u64 = BASE + 0x2000;
const AMD: u64 = BASE + 0x4000;
const SESSION: u64 = BASE + 0x5000;
const HDR: u64 = BASE + 0x5100;
const TRANS: u64 = BASE + 0x6000;
pub(crate) const OUT: u64 = BASE + 0x8000;
pub(crate) const RAM: u64 = BASE + 0x10_0000; // guest RAM, 64 KiB at GPA 0
pub(crate) const RAM_LEN: u64 = 0x10000;
const SEV_FD: u32 = 3;
pub(crate) const FH: u64 = 1;

struct AnyFd;
impl SevFdCheck for AnyFd {
    fn is_sev_node(&self, _pid: u32, fd: u32) -> bool {
        fd == SEV_FD
    }
}

/// One host: a node over its own firmware, and a VMM's memory.
pub(crate) struct Host {
    pub(crate) kvm: KvmSev,
    dev: Arc<Mutex<SevDev>>,
    pub(crate) mem: VecMemory,
}

impl Host {
    pub(crate) fn new() -> Host {
        let dev = Arc::new(Mutex::new(SevDev::probe(firmware(), InitMode::AtProbe)));
        let kvm = KvmSev::new(
            dev.clone(),
            Arc::new(AnyFd),
            Limits::default(),
            Staging::Always,
        );
        Host {
            kvm,
            dev,
            mem: VecMemory::new(BASE, 0x20_0000),
        }
    }

    pub(crate) fn ioctl(&self, cmd: u32, arg: &[u8]) -> (i32, Vec<u8>) {
        let request = IoctlRequest {
            cmd,
            in_data: arg,
            out_size: arg.len() as u32,
            compat: false,
        };
        match self.kvm.ioctl(1, 1, &self.mem, FH, request) {
            Ok(reply) => (reply.result, reply.data),
            Err(e) => (-(e as i32), vec![]),
        }
    }

    /// A VM with its RAM slot, KVM_SEV_INIT done.
    pub(crate) fn vm(&self) {
        self.vm_with(KvmSevCmdId::Init);
    }

    /// A VM with its RAM slot, `init` (KVM_SEV_INIT or KVM_SEV_ES_INIT) done.
    pub(crate) fn vm_with(&self, init: KvmSevCmdId) {
        self.kvm.create_vm(FH, 1, 0).unwrap();
        let region = KvmUserspaceMemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM_LEN,
            userspace_addr: RAM,
        };
        assert_eq!(
            self.ioctl(KVM_SET_USER_MEMORY_REGION, region.as_bytes()).0,
            0
        );
        self.plain(init).unwrap();
    }

    /// One encrypt op with `arg` at ARG: errno and `error`; the struct is left at ARG.
    pub(crate) fn op<T: ByteValued>(&self, id: KvmSevCmdId, arg: &T) -> Result<(), (Errno, u32)> {
        self.mem.write(UserAddr(ARG), arg.as_bytes()).unwrap();
        let cmd = KvmSevCmd {
            id: id as u32,
            pad0: 0,
            data: ARG,
            error: 0xdead,
            sev_fd: SEV_FD,
        };
        let (r, back) = self.ioctl(SEVD_VM_ENCRYPT_OP, cmd.as_bytes());
        let error = KvmSevCmd::from_slice(&back)
            .map(|c| c.error)
            .unwrap_or(0xdead);
        if r == 0 {
            Ok(())
        } else {
            Err((Errno::from_raw(-r), error))
        }
    }

    /// A command without a struct (KVM does not read `data`).
    pub(crate) fn plain(&self, id: KvmSevCmdId) -> Result<(), (Errno, u32)> {
        self.op(id, &KvmSevGuestStatus::default())
    }

    pub(crate) fn arg<T: ByteValued>(&self) -> T {
        let mut v = T::default();
        self.mem.read(UserAddr(ARG), v.as_bytes_mut()).unwrap();
        v
    }

    pub(crate) fn read(&self, at: u64, len: usize) -> Vec<u8> {
        self.mem.read_vec(UserAddr(at), len).unwrap()
    }

    /// A RUNNING guest holding `image` at GPA 0x1000.
    pub(crate) fn launched(&self, policy: u32, image: &[u8]) {
        self.vm();
        let start = KvmSevLaunchStart {
            policy,
            ..Default::default()
        };
        self.op(KvmSevCmdId::LaunchStart, &start).unwrap();
        self.mem.write(UserAddr(RAM + 0x1000), image).unwrap();
        let update = KvmSevLaunchUpdateData {
            uaddr: RAM + 0x1000,
            len: image.len() as u32,
            pad0: 0,
        };
        self.op(KvmSevCmdId::LaunchUpdateData, &update).unwrap();
        let measure = KvmSevLaunchMeasure {
            uaddr: OUT,
            len: 48,
            pad0: 0,
        };
        self.op(KvmSevCmdId::LaunchMeasure, &measure).unwrap();
        self.plain(KvmSevCmdId::LaunchFinish).unwrap();
    }

    /// This host's PDH, PEK ‖ OCA ‖ CEK and ASK ‖ ARK, as its owner exports them.
    pub(crate) fn certs(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut dev = self.dev.lock().unwrap();
        let fw = dev.firmware_mut();
        let (pdh, chain) = fw.pdh_cert_export(&mut 0x824, &mut 0x186C).unwrap();
        let ca = fw.ca_chain();
        (pdh, chain, [ca.ask.encode(), ca.ark.encode()].concat())
    }

    pub(crate) fn guest_view(&self, gpa: u64, len: usize) -> Vec<u8> {
        let arg = SevdGuestAccess {
            gpa,
            uaddr: OUT,
            len: len as u32,
            write: 0,
        };
        assert_eq!(self.ioctl(SEVD_VM_GUEST_ACCESS, arg.as_bytes()).0, 0);
        self.read(OUT, len)
    }

    pub(crate) fn guests(&self) -> u32 {
        self.dev
            .lock()
            .unwrap()
            .firmware()
            .platform_status()
            .unwrap()
            .guest_count
    }
}

pub(crate) fn image() -> Vec<u8> {
    (0..0x2000u32).map(|i| (i * 31 + 7) as u8).collect()
}

/// SEND_START on `src` for `dst`'s certificates, written into `src`'s memory.
pub(crate) fn send_start(src: &Host, dst: &Host) -> Result<KvmSevSendStart, (Errno, u32)> {
    let (pdh, chain, amd) = dst.certs();
    src.mem.write(UserAddr(PDH), &pdh).unwrap();
    src.mem.write(UserAddr(CHAIN), &chain).unwrap();
    src.mem.write(UserAddr(AMD), &amd).unwrap();
    let arg = KvmSevSendStart {
        pdh_cert_uaddr: PDH,
        pdh_cert_len: pdh.len() as u32,
        plat_certs_uaddr: CHAIN,
        plat_certs_len: chain.len() as u32,
        amd_certs_uaddr: AMD,
        amd_certs_len: amd.len() as u32,
        session_uaddr: SESSION,
        session_len: 128,
        ..Default::default()
    };
    src.op(KvmSevCmdId::SendStart, &arg)?;
    Ok(src.arg())
}

/// RECEIVE_START on `dst` with what `src` sent.
pub(crate) fn receive_start(src: &Host, dst: &Host, policy: u32) -> Result<u32, (Errno, u32)> {
    let (src_pdh, _, _) = src.certs();
    dst.mem.write(UserAddr(PDH), &src_pdh).unwrap();
    dst.mem
        .write(UserAddr(SESSION), &src.read(SESSION, 128))
        .unwrap();
    let arg = KvmSevReceiveStart {
        handle: 0,
        policy,
        pdh_uaddr: PDH,
        pdh_len: src_pdh.len() as u32,
        session_uaddr: SESSION,
        session_len: 128,
        ..Default::default()
    };
    dst.op(KvmSevCmdId::ReceiveStart, &arg)?;
    Ok(dst.arg::<KvmSevReceiveStart>().handle)
}

fn send_page(src: &Host, gpa: u64) -> Result<(), (Errno, u32)> {
    let arg = KvmSevSendUpdateData {
        hdr_uaddr: HDR,
        hdr_len: 52,
        guest_uaddr: RAM + gpa,
        guest_len: 4096,
        trans_uaddr: TRANS,
        trans_len: 4096,
        ..Default::default()
    };
    src.op(KvmSevCmdId::SendUpdateData, &arg)
}

fn receive_page(src: &Host, dst: &Host, gpa: u64) -> Result<(), (Errno, u32)> {
    dst.mem.write(UserAddr(HDR), &src.read(HDR, 52)).unwrap();
    dst.mem
        .write(UserAddr(TRANS), &src.read(TRANS, 4096))
        .unwrap();
    let arg = KvmSevReceiveUpdateData {
        hdr_uaddr: HDR,
        hdr_len: 52,
        guest_uaddr: RAM + gpa,
        guest_len: 4096,
        trans_uaddr: TRANS,
        trans_len: 4096,
        ..Default::default()
    };
    dst.op(KvmSevCmdId::ReceiveUpdateData, &arg)
}

#[test]
fn a_guest_moves_between_two_nodes() {
    let (src, dst) = (Host::new(), Host::new());
    let img = image();
    src.launched(0, &img);
    dst.vm();

    // The session's length, asked as QEMU asks it.
    let query = KvmSevSendStart::default();
    assert_eq!(
        src.op(KvmSevCmdId::SendStart, &query).unwrap_err(),
        (Errno::EIO, Status::InvalidLength as u32)
    );
    assert_eq!(src.arg::<KvmSevSendStart>().session_len, 128);

    let started = send_start(&src, &dst).unwrap();
    assert_eq!(started.policy, 0);
    let handle = receive_start(&src, &dst, started.policy).unwrap();
    assert_ne!(handle, 0);

    // The header's length, asked with hdr_len 0: 52 back, trans_len 0.
    let query = KvmSevSendUpdateData {
        trans_len: 4096,
        ..Default::default()
    };
    assert_eq!(
        src.op(KvmSevCmdId::SendUpdateData, &query).unwrap_err(),
        (Errno::EIO, Status::InvalidLength as u32)
    );
    let back: KvmSevSendUpdateData = src.arg();
    assert_eq!((back.hdr_len, back.trans_len), (52, 0));

    for gpa in [0x1000, 0x2000] {
        send_page(&src, gpa).unwrap();
        assert_ne!(src.read(TRANS, 4096), img[..4096], "ciphertext on the wire");
        receive_page(&src, &dst, gpa).unwrap();
    }
    src.plain(KvmSevCmdId::SendFinish).unwrap();
    dst.plain(KvmSevCmdId::ReceiveFinish).unwrap();
    assert_eq!(dst.guest_view(0x1000, img.len()), img);
    assert_ne!(
        dst.read(RAM + 0x1000, img.len()),
        img,
        "the host sees ciphertext"
    );

    let status: KvmSevGuestStatus = {
        dst.op(KvmSevCmdId::GuestStatus, &KvmSevGuestStatus::default())
            .unwrap();
        dst.arg()
    };
    assert_eq!(status.state, 3, "RUNNING");
    src.kvm.destroy_vm(FH);
    dst.kvm.destroy_vm(FH);
    assert_eq!((src.guests(), dst.guests()), (0, 0));
}

#[test]
fn kvms_errno_for_bad_arguments() {
    let (src, dst) = (Host::new(), Host::new());
    // Not an SEV guest yet: ENOTTY, but EINVAL for RECEIVE_UPDATE_DATA.
    src.kvm.create_vm(FH, 1, 0).unwrap();
    assert_eq!(
        src.op(KvmSevCmdId::SendStart, &KvmSevSendStart::default())
            .unwrap_err()
            .0,
        Errno::ENOTTY
    );
    assert_eq!(
        src.op(
            KvmSevCmdId::ReceiveUpdateData,
            &KvmSevSendUpdateData::default()
        )
        .unwrap_err()
        .0,
        Errno::EINVAL
    );
    src.kvm.destroy_vm(FH);
    src.launched(0, &image());
    dst.vm();
    // KVM has no VMSA ids for migration.
    for id in [KvmSevCmdId::SendUpdateVmsa, KvmSevCmdId::ReceiveUpdateVmsa] {
        assert_eq!(
            src.op(id, &KvmSevSendUpdateData::default()).unwrap_err().0,
            Errno::EINVAL
        );
    }
    // Every blob is required by KVM, whatever the policy.
    let mut arg = KvmSevSendStart {
        session_uaddr: SESSION,
        session_len: 128,
        ..Default::default()
    };
    assert_eq!(
        src.op(KvmSevCmdId::SendStart, &arg).unwrap_err().0,
        Errno::EINVAL
    );
    arg.pdh_cert_uaddr = PDH;
    arg.pdh_cert_len = 0x824;
    assert_eq!(
        src.op(KvmSevCmdId::SendStart, &arg).unwrap_err().0,
        Errno::EINVAL
    );
    arg.session_len = 0x4001;
    assert_eq!(
        src.op(KvmSevCmdId::SendStart, &arg).unwrap_err().0,
        Errno::EINVAL
    );
    send_start(&src, &dst).unwrap();
    // One page per update, not crossing one.
    let mut upd = KvmSevSendUpdateData {
        hdr_uaddr: HDR,
        hdr_len: 52,
        guest_uaddr: RAM + 0x1000,
        guest_len: 8192,
        trans_uaddr: TRANS,
        trans_len: 8192,
        ..Default::default()
    };
    assert_eq!(
        src.op(KvmSevCmdId::SendUpdateData, &upd).unwrap_err().0,
        Errno::EINVAL
    );
    upd.guest_uaddr = RAM + 0x1800;
    upd.guest_len = 4096;
    assert_eq!(
        src.op(KvmSevCmdId::SendUpdateData, &upd).unwrap_err().0,
        Errno::EINVAL
    );
    upd.guest_uaddr = RAM + 0x20_0000;
    upd.guest_len = 16;
    assert_eq!(
        src.op(KvmSevCmdId::SendUpdateData, &upd).unwrap_err().0,
        Errno::EFAULT
    );
    // The firmware's own limits come back as EIO with its status.
    upd.guest_uaddr = RAM + 0x1008;
    assert_eq!(
        src.op(KvmSevCmdId::SendUpdateData, &upd).unwrap_err(),
        (Errno::EIO, Status::InvalidAddress as u32)
    );
    // RECEIVE_UPDATE_DATA's blobs: capped at 16 KiB, all required.
    let h = receive_start(&src, &dst, 0).unwrap();
    assert_ne!(h, 0);
    let mut rcv = KvmSevReceiveUpdateData {
        hdr_uaddr: HDR,
        hdr_len: 52,
        guest_uaddr: RAM,
        guest_len: 4096,
        trans_uaddr: TRANS,
        trans_len: 0x4001,
        ..Default::default()
    };
    assert_eq!(
        dst.op(KvmSevCmdId::ReceiveUpdateData, &rcv).unwrap_err().0,
        Errno::EINVAL
    );
    rcv.trans_len = 4096;
    rcv.hdr_uaddr = 0;
    assert_eq!(
        dst.op(KvmSevCmdId::ReceiveUpdateData, &rcv).unwrap_err().0,
        Errno::EINVAL
    );
    // A second RECEIVE_START on a VM that has a guest is refused rather than leak it.
    assert_eq!(receive_start(&src, &dst, 0).unwrap_err().0, Errno::EINVAL);
}

#[test]
fn a_tampered_packet_is_refused_and_the_source_can_cancel_and_retry() {
    let (src, dst) = (Host::new(), Host::new());
    let img = image();
    src.launched(0, &img);
    dst.vm();
    send_start(&src, &dst).unwrap();
    receive_start(&src, &dst, 0).unwrap();
    send_page(&src, 0x1000).unwrap();
    let mut trans = src.read(TRANS, 4096);
    trans[100] ^= 4;
    src.mem.write(UserAddr(TRANS), &trans).unwrap();
    let before = dst.read(RAM, RAM_LEN as usize);
    assert_eq!(
        receive_page(&src, &dst, 0x1000).unwrap_err(),
        (Errno::EIO, Status::BadMeasurement as u32)
    );
    assert_eq!(dst.read(RAM, RAM_LEN as usize), before, "nothing written");
    src.plain(KvmSevCmdId::SendCancel).unwrap();
    // The source guest runs again, and can be sent anew.
    send_start(&src, &dst).unwrap();
    // The target VM is closed: its guest and ASID go.
    dst.kvm.destroy_vm(FH);
    assert_eq!(dst.guests(), 0);
}

#[test]
fn a_nosend_guest_stays_running_on_the_source() {
    let (src, dst) = (Host::new(), Host::new());
    src.launched(uapi::policy::NOSEND, &image());
    dst.vm();
    assert_eq!(
        send_start(&src, &dst).unwrap_err(),
        (Errno::EIO, Status::PolicyFailure as u32)
    );
    src.op(KvmSevCmdId::GuestStatus, &KvmSevGuestStatus::default())
        .unwrap();
    assert_eq!(src.arg::<KvmSevGuestStatus>().state, 3);
    assert_eq!(src.arg::<KvmSevGuestStatus>().policy, uapi::policy::NOSEND);
}

impl Host {
    /// A RUNNING SEV-ES guest with `image` at 0x1000 and one vCPU.
    fn launched_es(&self, image: &[u8]) {
        self.vm_with(KvmSevCmdId::EsInit);
        let start = KvmSevLaunchStart {
            policy: uapi::policy::ES,
            ..Default::default()
        };
        self.op(KvmSevCmdId::LaunchStart, &start).unwrap();
        self.mem.write(UserAddr(RAM + 0x1000), image).unwrap();
        let update = KvmSevLaunchUpdateData {
            uaddr: RAM + 0x1000,
            len: image.len() as u32,
            pad0: 0,
        };
        self.op(KvmSevCmdId::LaunchUpdateData, &update).unwrap();
        let mut vmsa = vec![0u8; 4096];
        vmsa[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes()); // DR7
        vmsa[0x178..0x180].copy_from_slice(&0xfff0u64.to_le_bytes());
        self.mem.write(UserAddr(OUT), &vmsa).unwrap();
        let set = SevdVmsa {
            vcpu: 0,
            pad: 0,
            uaddr: OUT,
        };
        assert_eq!(self.ioctl(SEVD_VM_SET_VMSA, set.as_bytes()).0, 0);
        self.plain(KvmSevCmdId::LaunchUpdateVmsa).unwrap();
        let measure = KvmSevLaunchMeasure {
            uaddr: OUT,
            len: 48,
            pad0: 0,
        };
        self.op(KvmSevCmdId::LaunchMeasure, &measure).unwrap();
        self.plain(KvmSevCmdId::LaunchFinish).unwrap();
    }

    /// An ES VM waiting for a guest.
    fn es_vm(&self) {
        self.vm_with(KvmSevCmdId::EsInit);
    }

    fn vmsa_packet(&self, cmd: u32, arg: &SevdVmsaPacket) -> (i32, SevdVmsaPacket) {
        let (r, back) = self.ioctl(cmd, arg.as_bytes());
        (r, SevdVmsaPacket::from_slice(&back).unwrap_or_default())
    }

    /// vCPU 0's save area as the guest's firmware holds it.
    fn vmsa_plaintext(&self) -> Vec<u8> {
        let vms = self.kvm.vms.lock().unwrap();
        let vm = vms.get(&FH).unwrap().vm.lock().unwrap();
        let sev = vm.sev.as_ref().unwrap();
        let mut out = vec![0u8; 4096];
        self.dev
            .lock()
            .unwrap()
            .firmware()
            .guest_view(
                sev.handle,
                GuestAddress(super::VMSA_BASE),
                &mut out,
                &sev.vmsa_mem,
            )
            .unwrap();
        out
    }
}

#[test]
fn an_es_guest_moves_with_its_save_areas_through_the_extension() {
    let (src, dst) = (Host::new(), Host::new());
    let img = image();
    src.launched_es(&img);
    dst.es_vm();
    let started = send_start(&src, &dst).unwrap();
    receive_start(&src, &dst, started.policy).unwrap();

    // The lengths, asked with zero lengths.
    let (r, back) = src.vmsa_packet(SEVD_VM_SEND_VMSA, &SevdVmsaPacket::default());
    assert_eq!(r, -(Errno::EIO as i32));
    assert_eq!(
        (back.error, back.hdr_len, back.trans_len),
        (Status::InvalidLength as u32, 52, 4096)
    );
    let arg = SevdVmsaPacket {
        vcpu: 0,
        hdr_uaddr: HDR,
        hdr_len: 52,
        trans_uaddr: TRANS,
        trans_len: 4096,
        ..Default::default()
    };
    // No save area for vCPU 1.
    let other = SevdVmsaPacket { vcpu: 1, ..arg };
    assert_eq!(
        src.vmsa_packet(SEVD_VM_SEND_VMSA, &other).0,
        -(Errno::EINVAL as i32)
    );
    assert_eq!(src.vmsa_packet(SEVD_VM_SEND_VMSA, &arg).0, 0);
    dst.mem.write(UserAddr(HDR), &src.read(HDR, 52)).unwrap();
    dst.mem
        .write(UserAddr(TRANS), &src.read(TRANS, 4096))
        .unwrap();
    assert_eq!(dst.vmsa_packet(SEVD_VM_RECEIVE_VMSA, &arg).0, 0);
    for gpa in [0x1000, 0x2000] {
        send_page(&src, gpa).unwrap();
        receive_page(&src, &dst, gpa).unwrap();
    }
    src.plain(KvmSevCmdId::SendFinish).unwrap();
    dst.plain(KvmSevCmdId::ReceiveFinish).unwrap();
    assert_eq!(dst.guest_view(0x1000, img.len()), img);
    let vmsa = src.vmsa_plaintext();
    assert_eq!(
        dst.vmsa_plaintext(),
        vmsa,
        "the same save area, under the target's key"
    );
    assert_eq!(&vmsa[0x160..0x168], &0x400u64.to_le_bytes());
}

#[test]
fn save_area_packets_are_for_es_vms() {
    let (src, dst) = (Host::new(), Host::new());
    src.launched(0, &image());
    dst.vm();
    let arg = SevdVmsaPacket {
        hdr_uaddr: HDR,
        hdr_len: 52,
        trans_uaddr: TRANS,
        trans_len: 4096,
        ..Default::default()
    };
    assert_eq!(
        src.vmsa_packet(SEVD_VM_SEND_VMSA, &arg).0,
        -(Errno::ENOTTY as i32)
    );
    assert_eq!(
        dst.vmsa_packet(SEVD_VM_RECEIVE_VMSA, &arg).0,
        -(Errno::ENOTTY as i32)
    );
}
