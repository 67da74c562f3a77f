//! One VMM holding one launched guest: `vm-hold VM_NODE SEV_NODE es|sev`. Opens the VM,
//! INIT (or ES_INIT), LAUNCH_START, prints `ready HANDLE`, then answers lines on stdin:
//! `status` (GUEST_STATUS: `status HANDLE STATE`, or `error ERRNO`), `init` (a second INIT:
//! `init ERRNO`, 0 for success). Closes the VM and exits at end of input.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

use uapi::ioctl::SEVD_VM_ENCRYPT_OP;
use uapi::kvm::{KvmSevCmd, KvmSevCmdId, KvmSevGuestStatus, KvmSevLaunchStart};

fn fail(why: &str) -> ! {
    println!("error {why}");
    std::process::exit(1);
}

fn open_rw(path: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| fail(&format!("{path}: {e}")))
}

fn encrypt_op<T>(vm: &File, sev: &File, id: KvmSevCmdId, data: &mut T) -> Result<(), i32> {
    let mut cmd = KvmSevCmd {
        id: id as u32,
        pad0: 0,
        data: data as *mut T as u64,
        error: 0,
        sev_fd: sev.as_raw_fd() as u32,
    };
    // SAFETY: `cmd` is a live kvm_sev_cmd for the duration of the call.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), SEVD_VM_ENCRYPT_OP as _, &mut cmd) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [vm_path, sev_path, kind] = &args[..] else {
        fail("usage: vm-hold VM_NODE SEV_NODE es|sev");
    };
    let es = kind == "es";
    let init = if es {
        KvmSevCmdId::EsInit
    } else {
        KvmSevCmdId::Init
    };
    let vm = open_rw(vm_path);
    let sev = open_rw(sev_path);
    let mut none = 0u64;
    if let Err(e) = encrypt_op(&vm, &sev, init, &mut none) {
        fail(&format!("init {e}"));
    }
    let mut ls = KvmSevLaunchStart {
        policy: if es { 0x4 } else { 0 },
        ..Default::default()
    };
    if let Err(e) = encrypt_op(&vm, &sev, KvmSevCmdId::LaunchStart, &mut ls) {
        fail(&format!("launch_start {e}"));
    }
    let handle = ls.handle;
    println!("ready {handle}");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "status" => {
                let mut st = KvmSevGuestStatus::default();
                match encrypt_op(&vm, &sev, KvmSevCmdId::GuestStatus, &mut st) {
                    Ok(()) => println!("status {} {}", st.handle, st.state),
                    Err(e) => println!("error {e}"),
                }
            }
            "init" => {
                let r = encrypt_op(&vm, &sev, init, &mut none);
                println!("init {}", r.err().unwrap_or(0));
            }
            other => println!("error unknown request {other:?}"),
        }
        let _ = std::io::stdout().flush();
    }
}
