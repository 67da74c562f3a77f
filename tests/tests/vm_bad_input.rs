//! Bad input on the `sev-vm` node: each gets KVM's errno or the firmware's status, and no
//! guest, key slot or ASID is left half made.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use tests::{platform_status, Options, Sevd, VmClient};
use uapi::kvm::*;

use tests::require_mount;

fn guest_count(sevd: &Sevd) -> u32 {
    platform_status(&sevd.open()).unwrap().guest_count
}

#[test]
fn sev_fd_must_be_this_daemons_sev_node() {
    require_mount!();
    let sevd = Sevd::start();
    let vm = VmClient::new(&sevd, 1 << 20);
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let mut ls = KvmSevLaunchStart::default();
    let null = std::fs::File::open("/dev/null").unwrap();
    for fd in [null.as_raw_fd(), vm.vm.as_raw_fd(), 999, -1] {
        let r = vm.encrypt_op_raw(KvmSevCmdId::LaunchStart, &mut ls as *mut _ as u64, fd);
        assert_eq!(r, Err((libc::EBADF, 0)), "sev_fd {fd}");
    }
    // Another daemon's sev node is not ours either.
    let other = Sevd::start();
    let theirs = other.open();
    let r = vm.encrypt_op_raw(
        KvmSevCmdId::LaunchStart,
        &mut ls as *mut _ as u64,
        theirs.as_raw_fd(),
    );
    assert_eq!(r, Err((libc::EBADF, 0)));
    assert_eq!(guest_count(&sevd), 0);
    // A read-only open of our node is accepted (KVM does not check the mode).
    let ro = sevd.open_ro();
    vm.encrypt_op_raw(
        KvmSevCmdId::LaunchStart,
        &mut ls as *mut _ as u64,
        ro.as_raw_fd(),
    )
    .unwrap();
    assert_eq!(guest_count(&sevd), 1);
}

#[test]
fn commands_in_the_wrong_state() {
    require_mount!();
    let sevd = Sevd::start();
    let vm = VmClient::new(&sevd, 1 << 20);
    let mut ud = KvmSevLaunchUpdateData {
        uaddr: vm.uaddr(0),
        len: 4096,
        pad0: 0,
    };
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchUpdateData, &mut ud),
        Err((libc::ENOTTY, 0)),
        "not an SEV guest"
    );
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    assert_eq!(
        vm.encrypt_op_plain(KvmSevCmdId::Init),
        Err((libc::EINVAL, 0)),
        "already an SEV guest"
    );
    let mut ls = KvmSevLaunchStart::default();
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls),
        Err((libc::EINVAL, 0)),
        "a second LAUNCH_START"
    );
    assert_eq!(
        vm.encrypt_op_plain(KvmSevCmdId::LaunchUpdateVmsa),
        Err((libc::ENOTTY, 0)),
        "not SEV-ES"
    );
    assert_eq!(
        vm.encrypt_op_plain(KvmSevCmdId::LaunchFinish),
        Err((libc::EIO, 2)),
        "INVALID_GUEST_STATE in LUPDATE"
    );
    let hdr = [0u8; 52];
    let ct = [0u8; 16];
    let mut sec = KvmSevLaunchSecret {
        hdr_uaddr: hdr.as_ptr() as u64,
        hdr_len: 52,
        guest_uaddr: vm.uaddr(0x1000),
        guest_len: 16,
        trans_uaddr: ct.as_ptr() as u64,
        trans_len: 16,
        ..Default::default()
    };
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchSecret, &mut sec),
        Err((libc::EIO, 2))
    );
    let mut blob = [0u8; 48];
    let mut lm = KvmSevLaunchMeasure {
        uaddr: blob.as_mut_ptr() as u64,
        len: 48,
        pad0: 0,
    };
    vm.encrypt_op(KvmSevCmdId::LaunchMeasure, &mut lm).unwrap();
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchMeasure, &mut lm),
        Err((libc::EIO, 2))
    );
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchUpdateData, &mut ud),
        Err((libc::EIO, 2))
    );
    vm.encrypt_op_plain(KvmSevCmdId::LaunchFinish).unwrap();
    // Ids KVM does not know, or this daemon does not offer: EINVAL, nothing copied back.
    for id in [
        KvmSevCmdId::Init2,
        KvmSevCmdId::SendUpdateVmsa,
        KvmSevCmdId::ReceiveUpdateVmsa,
    ] {
        assert_eq!(
            vm.encrypt_op_raw(id, 0, vm.sev.as_raw_fd())
                .map_err(|e| e.0),
            Err(libc::EINVAL)
        );
    }
    // Migration and attestation reports are offered: a struct they cannot read is KVM's
    // EFAULT.
    for id in [KvmSevCmdId::SendStart, KvmSevCmdId::GetAttestationReport] {
        assert_eq!(
            vm.encrypt_op_raw(id, 0, vm.sev.as_raw_fd())
                .map_err(|e| e.0),
            Err(libc::EFAULT)
        );
    }
    let mut cmd = KvmSevCmd {
        id: 99,
        pad0: 0,
        data: 0,
        error: 0xdead,
        sev_fd: vm.sev.as_raw_fd() as u32,
    };
    assert_eq!(
        vm.ioctl(uapi::ioctl::SEVD_VM_ENCRYPT_OP, &mut cmd as *mut _ as u64),
        Err(libc::EINVAL)
    );
    assert_eq!(cmd.error, 0xdead, "not copied back");
    assert_eq!(
        vm.ioctl(
            uapi::ioctl::KVM_MEMORY_ENCRYPT_OP,
            &mut cmd as *mut _ as u64
        ),
        Err(libc::ENOTTY),
        "KVM's own number cannot carry the struct here"
    );
}

#[test]
fn addresses_and_lengths_outside_guest_memory() {
    require_mount!();
    let sevd = Sevd::start();
    let vm = VmClient::new(&sevd, 1 << 20);
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let mut ls = KvmSevLaunchStart::default();
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
    let update = |uaddr: u64, len: u32| {
        let mut ud = KvmSevLaunchUpdateData {
            uaddr,
            len,
            pad0: 0,
        };
        vm.encrypt_op(KvmSevCmdId::LaunchUpdateData, &mut ud)
    };
    assert_eq!(
        update(vm.uaddr(8), 4096),
        Err((libc::EIO, 0x09)),
        "misaligned: INVALID_ADDRESS"
    );
    assert_eq!(
        update(vm.uaddr(0), 24),
        Err((libc::EIO, 0x04)),
        "not a multiple of 16: INVALID_LENGTH"
    );
    assert_eq!(update(vm.uaddr(0), 0), Err((libc::EINVAL, 0)));
    assert_eq!(
        update(vm.uaddr((1 << 20) - 4096), 8192),
        Err((libc::EFAULT, 0)),
        "past the registered memory"
    );
    let elsewhere = vec![0u8; 4096];
    assert_eq!(
        update(elsewhere.as_ptr() as u64, 4096),
        Err((libc::EFAULT, 0)),
        "not guest memory"
    );
    assert_eq!(
        update(u64::MAX - 16, 4096),
        Err((libc::EINVAL, 0)),
        "overflow"
    );
    assert_eq!(
        vm.guest_read(1 << 20, 16),
        Err(libc::EFAULT),
        "a GPA outside any region"
    );
    assert_eq!(vm.guest_read(0, 0), Err(libc::EINVAL));
    // Memory slots: KVM's checks.
    let set = |slot: u32, gpa: u64, size: u64, uaddr: u64| {
        let r = KvmUserspaceMemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: uaddr,
        };
        vm.ioctl(
            uapi::ioctl::KVM_SET_USER_MEMORY_REGION,
            &r as *const _ as u64,
        )
    };
    assert_eq!(set(1, 0x1000, 4096, vm.uaddr(0)), Err(libc::EEXIST));
    assert_eq!(set(1, 0x10_0800, 4096, vm.uaddr(0)), Err(libc::EINVAL));
    // A bad pointer to the command struct itself.
    assert_eq!(
        vm.encrypt_op_raw(KvmSevCmdId::LaunchUpdateData, 8, vm.sev.as_raw_fd()),
        Err((libc::EFAULT, 0))
    );
    // Nothing above made or broke the guest: it still launches.
    assert_eq!(update(vm.uaddr(0), 4096), Ok(()));
    assert_eq!(guest_count(&sevd), 1);
}

#[test]
fn a_forged_session_leaves_nothing_behind() {
    require_mount!();
    let sevd = Sevd::start();
    let vm = VmClient::new(&sevd, 1 << 20);
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let godh = [0u8; 0x824];
    let session = [0u8; 128];
    let mut ls = KvmSevLaunchStart {
        dh_uaddr: godh.as_ptr() as u64,
        dh_len: 0x824,
        session_uaddr: session.as_ptr() as u64,
        session_len: 128,
        ..Default::default()
    };
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls),
        Err((libc::EIO, 0x06)),
        "INVALID_CERTIFICATE"
    );
    ls.dh_len = 0x4001;
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls),
        Err((libc::EINVAL, 0)),
        "a blob above 16 KiB"
    );
    ls.dh_len = 0x100;
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls),
        Err((libc::EIO, 0x04)),
        "INVALID_LENGTH"
    );
    assert_eq!(guest_count(&sevd), 0);
    // The VM's ASID is still there: a launch without a session works.
    let mut ls = KvmSevLaunchStart::default();
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
    assert_eq!(guest_count(&sevd), 1);
}

#[test]
fn more_guests_than_asids() {
    require_mount!();
    // SEV-ES ASIDs 1..=2, SEV ASIDs 3..=4.
    let sevd = Sevd::start_with(Options {
        args: ["--max-asid", "4", "--min-sev-asid", "3"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let launch = |vm: &VmClient, es: bool| {
        vm.encrypt_op_plain(if es {
            KvmSevCmdId::EsInit
        } else {
            KvmSevCmdId::Init
        })?;
        let mut ls = KvmSevLaunchStart {
            policy: if es { 4 } else { 0 },
            ..Default::default()
        };
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls)
    };
    let a = VmClient::new(&sevd, 1 << 20);
    let b = VmClient::new(&sevd, 1 << 20);
    let c = VmClient::new(&sevd, 1 << 20);
    launch(&a, false).unwrap();
    launch(&b, false).unwrap();
    assert_eq!(launch(&c, false), Err((libc::EBUSY, 0)), "no SEV ASID left");
    let es = VmClient::new(&sevd, 1 << 20);
    launch(&es, true).unwrap();
    assert_eq!(guest_count(&sevd), 3, "the refused VM made no guest");
    drop(a);
    // a's ASID is reclaimed: KVM flushes and reuses it.
    launch(&c, false).unwrap();
    assert_eq!(guest_count(&sevd), 3);
}

#[test]
fn a_killed_client_s_vm_is_torn_down() {
    require_mount!();
    let sevd = Sevd::start_with(Options {
        args: ["--max-asid", "2", "--min-sev-asid", "2"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    // A VMM holding a launched guest (tests/src/bin/vm-hold.rs), killed below.
    let mut child = Command::new(tests::sevd_bin().with_file_name("vm-hold"))
        .arg(sevd.vm_node())
        .arg(sevd.node())
        .arg("sev")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.starts_with("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child died before launching"
        );
    }
    assert_eq!(guest_count(&sevd), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while guest_count(&sevd) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed client's guest is still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Its only SEV ASID is recycled for the next VM.
    let vm = VmClient::new(&sevd, 1 << 20);
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let mut ls = KvmSevLaunchStart::default();
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
}

/// Random commands, structs and pointers on `vm`: `pick_id` chooses each command id from
/// a random number, `requests` are the node's requests to spread them over.
fn hammer(vm: &VmClient, rounds: usize, pick_id: impl Fn(u64) -> u64, requests: &[u32]) {
    let mut scratch = vec![0u8; 0x4000];
    let base = scratch.as_mut_ptr() as u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..rounds {
        if i % 5 == 0 {
            for chunk in scratch.chunks_mut(8).take(64) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
        }
        let id = pick_id(next());
        let data = match next() % 4 {
            0 => 0,
            1 => next(),
            _ => base + next() % 0x3000,
        };
        let sev_fd = if next() % 4 == 0 {
            next() as i32
        } else {
            vm.sev.as_raw_fd()
        };
        let mut cmd = KvmSevCmd {
            id: id as u32,
            pad0: 0,
            data,
            error: 0,
            sev_fd: sev_fd as u32,
        };
        // Memory slots stay the VM's own RAM, so nothing can map this process's stack.
        let request = requests[(next() % requests.len() as u64) as usize];
        let _ = vm.ioctl(request, &mut cmd as *mut _ as u64);
    }
}

#[test]
fn random_garbage_on_the_vm_node_leaves_the_daemon_serving() {
    require_mount!();
    let sevd = Sevd::start();
    let vm = VmClient::new(&sevd, 1 << 20);
    let pick = |r: u64| match r % 3 {
        0 => (r >> 8) % 24,
        1 => (r >> 8) % 200,
        _ => (r >> 8) % 8,
    };
    use uapi::ioctl::{SEVD_VM_ENCRYPT_OP as OP, SEVD_VM_GUEST_ACCESS as GA};
    hammer(&vm, 3000, pick, &[OP, OP, OP, OP, OP, GA]);
    assert!(platform_status(&sevd.open()).is_ok(), "still serving");
    let other = VmClient::new(&sevd, 1 << 20);
    other.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let mut ls = KvmSevLaunchStart::default();
    other.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
}

#[test]
fn random_garbage_on_an_snp_vm_leaves_the_daemon_serving() {
    require_mount!();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    for round in 0..3 {
        let vm = VmClient::new_typed(&sevd, 1 << 20, uapi::kvm::KVM_X86_SNP_VM as u64);
        let mut init = uapi::kvm::KvmSevInit::default();
        vm.encrypt_op(KvmSevCmdId::Init2, &mut init).unwrap();
        if round > 0 {
            let mut start = uapi::kvm::KvmSevSnpLaunchStart {
                policy: 0x30000,
                ..Default::default()
            };
            vm.encrypt_op(KvmSevCmdId::SnpLaunchStart, &mut start)
                .unwrap();
        }
        // Mostly SNP's ids, some of the others (EPERM on an SNP VM).
        let pick = |r: u64| match r % 4 {
            0 => (r >> 8) % 24,
            _ => 100 + (r >> 8) % 3,
        };
        use uapi::ioctl::{
            SEVD_VM_ENCRYPT_OP as OP, SEVD_VM_GUEST_ACCESS as GA, SEVD_VM_SNP_GUEST_REQUEST as GR,
        };
        hammer(&vm, 1500, pick, &[OP, OP, OP, OP, GA, GR]);
    }
    assert!(platform_status(&sevd.open()).is_ok(), "still serving");
    // Every VM closed: every context gone, every ASID back (15 SEV-ES ASIDs, 20 launches).
    for _ in 0..20 {
        let vm = VmClient::new_typed(&sevd, 1 << 20, uapi::kvm::KVM_X86_SNP_VM as u64);
        let mut init = uapi::kvm::KvmSevInit::default();
        vm.encrypt_op(KvmSevCmdId::Init2, &mut init).unwrap();
        let mut start = uapi::kvm::KvmSevSnpLaunchStart {
            policy: 0x30000,
            ..Default::default()
        };
        vm.encrypt_op(KvmSevCmdId::SnpLaunchStart, &mut start)
            .unwrap();
    }
}
