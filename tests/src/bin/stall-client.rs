//! A caller whose memory never arrives: maps a file of `stall-fuse` and points a command at
//! it, then waits in the ioctl until the daemon gives up on it (or this process is killed).
//!
//! `stall-client sev NODE FILE`: PEK_CERT_IMPORT with both certificates in the mapping.
//! `stall-client vm NODE VM_NODE FILE`: a launched SEV guest whose LAUNCH_UPDATE_DATA reads a
//! memory slot backed by the mapping.
//! Prints `issuing` just before the ioctl that stalls.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

use tests::{open_rw_or_exit as open_rw, vm_encrypt_op as encrypt_op};
use uapi::ioctl::{KVM_SET_USER_MEMORY_REGION, SEV_ISSUE_CMD};
use uapi::kvm::{KvmSevCmdId, KvmSevLaunchStart, KvmSevLaunchUpdateData, KvmUserspaceMemoryRegion};
use uapi::psp_sev::{SevIssueCmd, SevUserDataPekCertImport};

fn fail(why: &str) -> ! {
    eprintln!("stall-client: {why}");
    std::process::exit(1);
}

fn map(file: &File, len: usize, anonymous: bool) -> u64 {
    let (flags, fd) = if anonymous {
        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    } else {
        (libc::MAP_SHARED, file.as_raw_fd())
    };
    // SAFETY: a fresh mapping of `len` bytes; it is never unmapped while the process lives.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail("mmap");
    }
    p as u64
}

fn ioctl<T>(file: &File, request: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a live struct of the request's size for the duration of the call.
    let r = unsafe { ioctl_sys::ioctl(file.as_raw_fd(), request as _, arg as *mut T) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn issuing() {
    println!("issuing");
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["sev", node, file] => {
            let sev = open_rw(node);
            let stall = open_rw(file);
            let at = map(&stall, 1 << 20, false);
            let mut import = SevUserDataPekCertImport {
                pek_cert_address: at,
                pek_cert_len: 0x824,
                oca_cert_address: at + 0x1000,
                oca_cert_len: 0x824,
            };
            let mut arg = SevIssueCmd {
                cmd: 6,
                data: &mut import as *mut _ as u64,
                error: 0,
            };
            issuing();
            ioctl(&sev, SEV_ISSUE_CMD, &mut arg)
        }
        ["vm", node, vm_node, file] => {
            let sev = open_rw(node);
            let vm = open_rw(vm_node);
            let stall = open_rw(file);
            let ram = map(&stall, 1 << 16, true);
            let at = map(&stall, 1 << 20, false);
            let mut slots = [(0u32, 0u64, 1u64 << 16, ram), (1, 1 << 20, 1 << 20, at)];
            for (slot, gpa, size, uaddr) in &mut slots {
                let mut r = KvmUserspaceMemoryRegion {
                    slot: *slot,
                    flags: 0,
                    guest_phys_addr: *gpa,
                    memory_size: *size,
                    userspace_addr: *uaddr,
                };
                ioctl(&vm, KVM_SET_USER_MEMORY_REGION, &mut r)
                    .unwrap_or_else(|e| fail(&format!("slot: {e}")));
            }
            let mut none = 0u64;
            encrypt_op(&vm, &sev, KvmSevCmdId::Init, &mut none)
                .unwrap_or_else(|e| fail(&format!("INIT: {e}")));
            let mut ls = KvmSevLaunchStart::default();
            encrypt_op(&vm, &sev, KvmSevCmdId::LaunchStart, &mut ls)
                .unwrap_or_else(|e| fail(&format!("LAUNCH_START: {e}")));
            let mut ud = KvmSevLaunchUpdateData {
                uaddr: at,
                len: 4096,
                pad0: 0,
            };
            issuing();
            encrypt_op(&vm, &sev, KvmSevCmdId::LaunchUpdateData, &mut ud)
        }
        _ => fail("usage: stall-client sev NODE FILE | stall-client vm NODE VM_NODE FILE"),
    };
    // The test may have stopped listening by now.
    let _ = writeln!(std::io::stdout(), "returned {r:?}");
}
