//! The `sev` and `sev-vm` nodes' ioctl handling, as the daemon runs it, with a mock caller
//! memory whose bytes (the structs, and the pointers inside them) come from the fuzzer. The
//! oracle: every answer is 0 or a negative errno; the `sev` node never leaves a guest; and
//! once every VM is closed, no VM, guest, bound ASID or SNP context is left.

use std::sync::{Arc, Mutex};

use sevd::driver::kvm_sev::{KvmSev, Limits, SevFdCheck, Staging};
use sevd::driver::sev_dev::{sev_ioctl, InitMode, SevDev};
use sevd::firmware::nv::MemStorage;
use sevd::firmware::random::OsRandom;
use sevd::firmware::{AsidState, Firmware, FirmwareConfig};
use uapi::ioctl::*;
use uapi::kvm::KvmSevCmd;
use uapi::psp_sev::SevIssueCmd;
use uapi::ByteValued;
use vfs::{CallerMemory, IoctlReply, IoctlRequest, UserAddr, VecMemory};

use crate::bytes::Bytes;
use crate::chip::{chip, stored_nv};

/// The caller's address space: 128 KiB at 64 KiB, so that a pointer into it is two
/// non-zero bytes in a little-endian u64.
const BASE: u64 = 0x1_0000;
const LEN: usize = 0x2_0000;
/// The caller's fd of the `sev` node, as the VM node's checker accepts it.
const SEV_FD: u32 = 3;
/// VM files (FUSE handles) a sequence may use.
const VMS: u64 = 3;
const MAX_OPS: usize = 40;

struct SevFd;
impl SevFdCheck for SevFd {
    fn is_sev_node(&self, _pid: u32, fd: u32) -> bool {
        fd == SEV_FD
    }
}

fn dev(snp: bool, mode: InitMode) -> SevDev {
    let config = FirmwareConfig {
        snp,
        ..Default::default()
    };
    let mut fw =
        Firmware::new(chip(), Box::new(stored_nv()), config, Box::new(OsRandom)).expect("firmware");
    if snp {
        fw = fw.with_snp(Box::new(MemStorage::default()));
    }
    SevDev::probe(fw, mode)
}

/// A pointer: mostly into the caller's memory, sometimes anywhere.
fn addr(r: &mut Bytes<'_>) -> u64 {
    match r.u8() {
        0..=0xEF => BASE + (r.u16() as u64 % LEN as u64),
        0xF0..=0xF7 => 0,
        _ => r.u64(),
    }
}

/// Copies fuzzer bytes into the caller's memory at a place the fuzzer picks.
fn fill(mem: &VecMemory, r: &mut Bytes<'_>) {
    let at = BASE + r.u16() as u64;
    let bytes = r.blob();
    let _ = mem.write(UserAddr(at), bytes);
}

fn check_reply(reply: &Result<IoctlReply, vfs::Errno>, out_size: u32) {
    if let Ok(reply) = reply {
        assert!(reply.result <= 0, "ioctl returned {}", reply.result);
        assert!(
            reply.data.len() <= out_size as usize,
            "{} bytes back for a {out_size}-byte argument",
            reply.data.len()
        );
    }
}

/// `/dev/sev`: SEV_ISSUE_CMD (and other request numbers) with fuzzer structs.
pub fn sev_node(data: &[u8]) {
    let mut r = Bytes::new(data);
    let setup = r.u8();
    let mode = if setup & 2 == 0 {
        InitMode::AtProbe
    } else {
        InitMode::PerCommand
    };
    let dev = Mutex::new(dev(setup & 1 == 1, mode));
    let mem = VecMemory::new(BASE, LEN);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        if r.u8() & 3 == 0 {
            fill(&mem, &mut r);
            continue;
        }
        let header = SevIssueCmd {
            cmd: r.u8() as u32 % 16,
            data: addr(&mut r),
            error: r.u32(),
        };
        let cmd = r.pick_u32(&[SEV_ISSUE_CMD, SEV_ISSUE_CMD]);
        let writable = r.u8() & 7 != 0;
        let compat = r.u8() == 0xFF;
        let in_data = header.as_bytes();
        let request = IoctlRequest {
            cmd,
            in_data,
            out_size: in_data.len() as u32,
            compat,
        };
        let reply = sev_ioctl(&dev, writable, &mem, request);
        check_reply(&reply, in_data.len() as u32);
    }
    let dev = dev.lock().unwrap_or_else(|e| e.into_inner());
    let fw = dev.firmware();
    if let Ok(status) = fw.platform_status() {
        assert_eq!(
            { status.guest_count },
            0,
            "a guest made through /dev/sev alone"
        );
    }
}

/// The VM node's request numbers, and a slot for any other.
const VM_IOCTLS: [u32; 8] = [
    SEVD_VM_SET_TYPE,
    KVM_SET_USER_MEMORY_REGION,
    SEVD_VM_ENCRYPT_OP,
    SEVD_VM_ENCRYPT_OP,
    SEVD_VM_SET_VMSA,
    SEVD_VM_GUEST_ACCESS,
    SEVD_VM_SNP_GUEST_REQUEST,
    KVM_MEMORY_ENCRYPT_OP,
];

/// `/dev/sev-vm`: VMs opened and closed, and their ioctls with fuzzer structs.
pub fn vm_node(data: &[u8]) {
    let mut r = Bytes::new(data);
    let setup = r.u8();
    let dev = Arc::new(Mutex::new(dev(setup & 1 == 1, InitMode::AtProbe)));
    let staging = if setup & 2 == 0 {
        Staging::Always
    } else {
        Staging::InPlace
    };
    let kvm = KvmSev::new(dev.clone(), Arc::new(SevFd), Limits::default(), staging);
    let mem = VecMemory::new(BASE, LEN);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let fh = r.u8() as u64 % VMS + 1;
        match r.u8() % 8 {
            0 => fill(&mem, &mut r),
            1 => {
                let _ = kvm.create_vm(fh, 1, r.u8() as u32 % 2);
            }
            2 => kvm.destroy_vm(fh),
            3 => {
                // The encrypt op, its header made here so the fuzzer spends its bytes on
                // the sub-command's struct.
                let cmd = KvmSevCmd {
                    id: r.u8() as u32 % 24 + if r.u8() & 3 == 0 { 100 } else { 0 },
                    pad0: 0,
                    data: addr(&mut r),
                    error: 0,
                    sev_fd: if r.u8() == 0 { r.u32() } else { SEV_FD },
                };
                let in_data = cmd.as_bytes();
                let reply = kvm.ioctl(1, 1, &mem, fh, request(SEVD_VM_ENCRYPT_OP, in_data));
                check_reply(&reply, in_data.len() as u32);
            }
            _ => {
                let cmd = match VM_IOCTLS.get(r.u8() as usize % 9) {
                    Some(&c) => c,
                    None => r.u32(),
                };
                let in_data = r.exact(ioc_size(cmd).min(4096));
                let reply = kvm.ioctl(1, 1, &mem, fh, request(cmd, &in_data));
                check_reply(&reply, in_data.len() as u32);
            }
        }
    }
    for fh in 1..=VMS {
        kvm.destroy_vm(fh);
    }
    assert_eq!(kvm.vm_count(), 0, "VMs left after every file closed");
    let dev = dev.lock().unwrap_or_else(|e| e.into_inner());
    let fw = dev.firmware();
    if let Ok(status) = fw.platform_status() {
        assert_eq!(
            { status.guest_count },
            0,
            "guests left after every VM closed"
        );
    }
    if let Ok(status) = fw.snp_platform_status() {
        assert_eq!(
            { status.guest_count },
            0,
            "SNP guests left after every VM closed"
        );
    }
    let bound: Vec<usize> = fw
        .asid_states()
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, AsidState::Bound(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(bound.is_empty(), "ASIDs still bound: {bound:?}");
}

fn request(cmd: u32, in_data: &[u8]) -> IoctlRequest<'_> {
    IoctlRequest {
        cmd,
        in_data,
        out_size: in_data.len() as u32,
        compat: false,
    }
}
