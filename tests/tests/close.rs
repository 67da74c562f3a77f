//! Closing a VM behaves as KVM's: once `close(2)` of the last fd on a VM has returned, the
//! guest is gone (DECOMMISSION done, ASID free), though FUSE releases files only after
//! `close` returns. While any fd remains (a `dup`, a child after `fork`), the VM lives.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use tests::{platform_status, require_mount, vm_encrypt_op, Options, Sevd};
use uapi::kvm::{KvmSevCmdId, KvmSevLaunchStart};

/// The tests of this file one at a time: a `fork` copies every fd of the process, so a
/// child forked by one test would hold the VMs another test is closing (as it would under
/// KVM).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The daemon's drop-in `sev-vm` node: a mount of its own, so its RELEASE and the `sev`
/// node's requests travel on different FUSE connections, as with `/dev/sev`.
fn open_vm(sevd: &Sevd) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sevd.links()[1])
        .expect("open sev-vm")
}

/// The drop-in `sev` node.
fn open_sev(sevd: &Sevd) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sevd.links()[0])
        .expect("open sev")
}

/// KVM_SEV_INIT and LAUNCH_START with policy 0: a guest holding the platform's one ASID.
fn launch(vm: &File, sev: &File) -> Result<(), i32> {
    vm_encrypt_op(vm, sev, KvmSevCmdId::Init, &mut 0u64)?;
    vm_encrypt_op(
        vm,
        sev,
        KvmSevCmdId::LaunchStart,
        &mut KvmSevLaunchStart::default(),
    )
}

fn guests(sev: &File) -> u32 {
    platform_status(sev).expect("PLATFORM_STATUS").guest_count
}

/// One SEV ASID, so a VM still held makes the next LAUNCH_START fail with EBUSY; the nodes
/// as drop-ins in `dir`.
fn one_asid(dir: &std::path::Path) -> Sevd {
    Sevd::start_with(Options {
        link: Some(dir.join("sev")),
        args: ["--max-asid", "1", "--min-sev-asid", "1"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
}

#[test]
fn the_last_close_destroys_the_vm_before_it_returns() {
    require_mount!();
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sevd = one_asid(dir.path());
    let sev = open_sev(&sevd);
    for cycle in 0..1000 {
        let vm = open_vm(&sevd);
        launch(&vm, &sev).unwrap_or_else(|e| panic!("cycle {cycle}: errno {e}"));
        drop(vm);
        assert_eq!(
            guests(&sev),
            0,
            "cycle {cycle}: the closed VM is still there\n{}",
            sevd.log()
        );
    }
}

#[test]
fn a_vm_lives_while_any_fd_on_it_remains() {
    require_mount!();
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sevd = one_asid(dir.path());
    let sev = open_sev(&sevd);

    // A dup: the first close is not the last.
    let vm = open_vm(&sevd);
    launch(&vm, &sev).unwrap();
    let dup = vm.try_clone().unwrap();
    drop(vm);
    assert_eq!(guests(&sev), 1, "the dup still holds the VM");
    drop(dup);
    assert_eq!(guests(&sev), 0);

    // A child after fork holds it until it exits.
    let vm = open_vm(&sevd);
    launch(&vm, &sev).unwrap();
    let (rx, tx) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only reads the pipe and calls _exit, both async-signal-safe.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(tx);
            let mut b = [0u8; 1];
            // SAFETY: a one-byte read into a live buffer, then _exit.
            unsafe {
                libc::read(rx.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(rx);
    drop(vm);
    assert_eq!(guests(&sev), 1, "the child's inherited fd holds the VM");
    let second = open_vm(&sevd);
    assert_eq!(
        launch(&second, &sev),
        Err(libc::EBUSY),
        "its ASID is still taken"
    );
    drop(second);
    drop(tx); // the child reads EOF and exits, closing its fds
    nix::sys::wait::waitpid(child, None).unwrap();
    assert_eq!(guests(&sev), 0, "gone once the child has exited");
    let third = open_vm(&sevd);
    launch(&third, &sev).expect("the ASID is free again");
}
