//! The soak's clients: each prints one line per command the daemon answered (its audit
//! name, errno, microseconds) and runs until it is killed. While the daemon is down (its
//! connection gone), a client waits and opens the nodes again; those refusals are not
//! answers and are not reported.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tests::{pdh_export, sev_issue, vm_encrypt_op, Rng};
use uapi::kvm::{KvmSevCmdId, KvmSevDbg, KvmSevLaunchStart, KvmSevLaunchUpdateData};

pub fn run(args: &[String]) -> ExitCode {
    let (Some(kind), Some(dir), Some(seed)) = (args.first(), args.get(1), args.get(2)) else {
        return super::usage();
    };
    let mut rng = Rng(seed.parse::<u64>().unwrap_or(1) | 1);
    let dir = Path::new(dir);
    loop {
        let result = match kind.as_str() {
            "platform" => platform(dir, &mut rng),
            "debug" => debug(dir, &mut rng),
            "admin" => admin(dir, &mut rng),
            _ => return super::usage(),
        };
        // Only a lost connection ends a round: wait for the daemon, then go on.
        if let Err(errno) = result {
            if !gone(errno) {
                eprintln!("soak client {kind}: errno {errno}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// No answer came: the daemon is gone (killed: its connection aborted) or going (shutting
/// down, it refuses what it would not audit).
fn unanswered(errno: i32) -> bool {
    matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV)
}

/// The daemon is not there: no answer, or no node to open while it restarts.
fn gone(errno: i32) -> bool {
    unanswered(errno) || errno == libc::ENOENT
}

fn open(path: &Path) -> Result<File, i32> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

fn report(name: &str, errno: i32, took: Duration) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "done {name} {errno} {}", took.as_micros());
    let _ = out.flush();
}

/// Runs `f` and reports its outcome under `name`, unless the daemon never answered.
fn timed(name: &str, f: impl FnOnce() -> Result<(), i32>) -> Result<(), i32> {
    let t = Instant::now();
    let r = f();
    let errno = r.err().unwrap_or(0);
    if unanswered(errno) {
        return Err(errno);
    }
    report(name, errno, t.elapsed());
    Ok(())
}

/// `sev_issue` as a `Result` of its errno.
fn issue(f: &File, cmd: u32, data: u64) -> Result<(), i32> {
    sev_issue(f, cmd, data, 0).0
}

/// Read and manage commands a VMM and `sevctl show` issue, in a loop.
fn platform(dir: &Path, rng: &mut Rng) -> Result<(), i32> {
    let f = open(&dir.join("sev"))?;
    loop {
        match rng.below(4) {
            0 => {
                let mut status = uapi::psp_sev::SevUserDataStatus::default();
                timed("SEV_PLATFORM_STATUS", || {
                    issue(&f, 1, &mut status as *mut _ as u64)
                })?
            }
            1 => timed("SEV_PDH_CERT_EXPORT", || {
                pdh_export(&f).map(|_| ()).map_err(|e| e.0)
            })?,
            2 => {
                let mut id = [0u8; 128];
                let mut arg = uapi::psp_sev::SevUserDataGetId2 {
                    address: id.as_mut_ptr() as u64,
                    length: id.len() as u32,
                };
                timed("SEV_GET_ID2", || issue(&f, 8, &mut arg as *mut _ as u64))?
            }
            _ => {
                let mut csr = vec![0u8; 0x824];
                let mut arg = uapi::psp_sev::SevUserDataPekCsr {
                    address: csr.as_mut_ptr() as u64,
                    length: csr.len() as u32,
                };
                timed("SEV_PEK_CSR", || issue(&f, 3, &mut arg as *mut _ as u64))?
            }
        }
    }
}

/// A VM on the `sev-vm` node: INIT, LAUNCH_START (debugging allowed), a page of data, then
/// debug reads of its memory, and close; again.
fn debug(dir: &Path, rng: &mut Rng) -> Result<(), i32> {
    let sev = open(&dir.join("sev"))?;
    let vm = open(&dir.join("sev-vm"))?;
    // Guest RAM must be page-aligned, as KVM wants a slot's address.
    let mut buf = vec![0u8; 0x11000];
    let skew = buf.as_ptr().align_offset(4096);
    let ram = &mut buf[skew..skew + 0x10000];
    let region = uapi::kvm::KvmUserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.len() as u64,
        userspace_addr: ram.as_mut_ptr() as u64,
    };
    // SAFETY: the argument is a live kvm_userspace_memory_region, and `ram` outlives the VM.
    let r = unsafe {
        ioctl_sys::ioctl(
            vm.as_raw_fd(),
            uapi::ioctl::KVM_SET_USER_MEMORY_REGION as _,
            &region as *const uapi::kvm::KvmUserspaceMemoryRegion,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let op = |id: KvmSevCmdId, run: &mut dyn FnMut() -> Result<(), i32>| timed(id.name(), run);
    op(KvmSevCmdId::Init, &mut || {
        vm_encrypt_op(&vm, &sev, KvmSevCmdId::Init, &mut 0u64)
    })?;
    let mut start = KvmSevLaunchStart::default();
    op(KvmSevCmdId::LaunchStart, &mut || {
        vm_encrypt_op(&vm, &sev, KvmSevCmdId::LaunchStart, &mut start)
    })?;
    ram[..4096].fill(0x5a);
    let mut update = KvmSevLaunchUpdateData {
        uaddr: ram.as_ptr() as u64,
        len: 4096,
        pad0: 0,
    };
    op(KvmSevCmdId::LaunchUpdateData, &mut || {
        vm_encrypt_op(&vm, &sev, KvmSevCmdId::LaunchUpdateData, &mut update)
    })?;
    let mut out = vec![0u8; 4096];
    for _ in 0..rng.below(50) + 10 {
        let len = (rng.below(256) as u32 + 1) * 16;
        let mut dbg = KvmSevDbg {
            src_uaddr: ram.as_ptr() as u64,
            dst_uaddr: out.as_mut_ptr() as u64,
            len,
            pad0: 0,
        };
        op(KvmSevCmdId::DbgDecrypt, &mut || {
            vm_encrypt_op(&vm, &sev, KvmSevCmdId::DbgDecrypt, &mut dbg)
        })?;
    }
    drop(vm);
    Ok(())
}

/// The platform owner: now and then PDH_GEN, PEK_GEN or FACTORY_RESET, each followed by an
/// export of the keys it left, which the driver compares after every restart.
fn admin(dir: &Path, rng: &mut Rng) -> Result<(), i32> {
    let f = open(&dir.join("sev"))?;
    loop {
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        let (name, cmd) = match rng.below(10) {
            0 => ("SEV_FACTORY_RESET", 0),
            1..=4 => ("SEV_PEK_GEN", 2),
            _ => ("SEV_PDH_GEN", 4),
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "changing");
            let _ = out.flush();
        }
        timed(name, || issue(&f, cmd, 0))?;
        let t = Instant::now();
        let keys = pdh_export(&f).map_err(|e| e.0);
        let errno = keys.as_ref().err().copied().unwrap_or(0);
        if unanswered(errno) {
            return Err(errno);
        }
        report("SEV_PDH_CERT_EXPORT", errno, t.elapsed());
        if let Ok((pdh, chain)) = keys {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "keys {}", super::key_digest(&pdh, &chain));
            let _ = out.flush();
        }
    }
}
