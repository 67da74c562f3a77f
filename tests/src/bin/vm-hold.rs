//! One VMM holding one launched guest: `vm-hold VM_NODE SEV_NODE es|sev`. Opens the VM,
//! INIT (or ES_INIT), LAUNCH_START, prints `ready HANDLE`, then answers lines on stdin:
//! `status` (GUEST_STATUS: `status HANDLE STATE`, or `error ERRNO`), `init` (a second INIT:
//! `init ERRNO`, 0 for success). Closes the VM and exits at end of input.

use std::io::{BufRead, Write};

use tests::{open_rw_or_exit as open_rw, vm_encrypt_op as encrypt_op};
use uapi::kvm::{KvmSevCmdId, KvmSevGuestStatus, KvmSevLaunchStart};

fn fail(why: &str) -> ! {
    println!("error {why}");
    std::process::exit(1);
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
