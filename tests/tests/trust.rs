//! The trust boundary of a root daemon (issue 8): callers that race their own structs, share
//! VM nodes across mounts, or hand over memory that never arrives cannot corrupt, hijack or
//! freeze the daemon.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{platform_status, require_mount, sev_issue, Options, Sevd, VmClient};
use uapi::kvm::{KvmSevCmdId, KvmSevLaunchStart};

fn helper(name: &str) -> PathBuf {
    tests::sevd_bin().with_file_name(name)
}

/// INVALID_LENGTH (SEV API status 0x13... as the status table names it).
fn invalid_length() -> u32 {
    uapi::Status::InvalidLength as u32
}

/// A struct the racing thread rewrites while the other issues commands with it.
#[repr(C, align(8))]
struct Shared([AtomicU32; 6]);

#[test]
fn nested_lengths_raced_by_another_thread_never_overflow_the_pass_through() {
    require_mount!();
    let first = Sevd::start();
    let second = Sevd::start_with(Options {
        args: vec![
            "--backend".into(),
            "hardware".into(),
            "--hw-device".into(),
            first.node().to_str().unwrap().into(),
        ],
        ..Options::default()
    });
    // Read-only suffices for PDH_CERT_EXPORT on an INIT platform.
    let node = second.open_ro();
    let (pdh, chain) = tests::pdh_export(&node).expect("a clean export");

    const GUARD: usize = 16 << 10;
    let mut pdh_buf = vec![0xaau8; GUARD];
    let mut chain_buf = vec![0xaau8; 3 * 0x824 + GUARD];
    let shared = Arc::new(Shared(Default::default()));
    let set64 = |at: usize, v: u64| {
        shared.0[at / 4].store(v as u32, Ordering::SeqCst);
        shared.0[at / 4 + 1].store((v >> 32) as u32, Ordering::SeqCst);
    };
    set64(0, pdh_buf.as_mut_ptr() as u64);
    set64(12, chain_buf.as_mut_ptr() as u64);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let lens = [1u32, 16 << 10, 0x824, 0, 3 * 0x824, 7];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                shared.0[2].store(lens[i % lens.len()], Ordering::Relaxed);
                shared.0[5].store(lens[(i / 3) % lens.len()], Ordering::Relaxed);
                i = i.wrapping_add(1);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let (mut ok, mut refused) = (0, 0);
    while Instant::now() < deadline {
        let data = shared.0.as_ptr() as u64;
        match sev_issue(&node, 5, data, 0) {
            (Ok(()), _) => ok += 1,
            (Err(libc::EIO), e) if e == invalid_length() => refused += 1,
            other => panic!("neither the kernel's error nor success: {other:?}"),
        }
        // Never more bytes than the device returned: everything past a certificate is as
        // it was, and what was written is the platform's certificate or nothing.
        assert!(
            pdh_buf[0x824..].iter().all(|&b| b == 0xaa),
            "PDH buffer overrun"
        );
        assert!(
            chain_buf[3 * 0x824..].iter().all(|&b| b == 0xaa),
            "chain buffer overrun"
        );
        assert!(pdh_buf[..0x824] == pdh[..] || pdh_buf[..0x824].iter().all(|&b| b == 0xaa));
        let c = &chain_buf[..3 * 0x824];
        assert!(c == &chain[..] || c.iter().all(|&b| b == 0xaa));
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(
        ok + refused > 100,
        "the race ran ({ok} exports, {refused} refused)"
    );
    let mut second = second;
    assert!(second.is_running(), "the pass-through daemon survived");
    assert!(platform_status(&node).is_ok());
}

/// A `vm-hold` process: one VMM with one launched guest.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    handle: u32,
}

impl Holder {
    fn start(vm_node: &Path, sev_node: &Path, es: bool) -> Result<Holder, String> {
        let mut child = Command::new(helper("vm-hold"))
            .arg(vm_node)
            .arg(sev_node)
            .arg(if es { "es" } else { "sev" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn vm-hold");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("vm-hold answers");
        let Some(handle) = line.trim().strip_prefix("ready ") else {
            let _ = child.wait();
            return Err(line.trim().to_string());
        };
        Ok(Holder {
            handle: handle.parse().expect("handle"),
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, what: &str) -> String {
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{what}").expect("write");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line.trim().to_string()
    }

    fn close(mut self) {
        self.stdin.take();
        assert!(self.child.wait().expect("wait").success());
    }
}

/// Every order of 0..4.
fn permutations4() -> Vec<[usize; 4]> {
    let mut all = vec![];
    for a in 0..4 {
        for b in (0..4).filter(|&b| b != a) {
            for c in (0..4).filter(|&c| c != a && c != b) {
                all.push([a, b, c, 6 - a - b - c]);
            }
        }
    }
    all
}

fn guest_count(sevd: &Sevd) -> u32 {
    platform_status(&sevd.open()).unwrap().guest_count
}

/// Waits (up to 10 s) until the platform has `n` guests.
fn wait_guest_count(sevd: &Sevd, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while guest_count(sevd) != n {
        assert!(
            Instant::now() < deadline,
            "{} guests, expected {n}",
            guest_count(sevd)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_vm_belongs_to_its_open_file_across_every_mount() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sev");
    // ES ASIDs 1..=2, SEV ASIDs 3..=4.
    let sevd = Sevd::start_with(Options {
        link: Some(link.clone()),
        args: ["--max-asid", "4", "--min-sev-asid", "3"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let link_vm = sevd.links()[1].clone();
    let paths = [
        (link_vm.clone(), link.clone()),
        (sevd.vm_node(), sevd.node()),
    ];

    // The reproduction: opens on the other mount must not replace the first VM. Each mount
    // used to number its files from 1, so one of these opens met the first VM's number.
    let b = VmClient::new(&sevd, 1 << 16);
    b.encrypt_op_plain(KvmSevCmdId::EsInit).unwrap();
    for _ in 0..2000 {
        let x = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link_vm)
            .unwrap();
        assert_eq!(
            b.encrypt_op_plain(KvmSevCmdId::EsInit),
            Err((libc::EINVAL, 0)),
            "the first VM is still an SEV-ES guest"
        );
        drop(x);
    }
    drop(b);

    // Four processes on both paths, closed in every order.
    for order in permutations4() {
        let mut holders: Vec<Option<Holder>> = (0..4)
            .map(|i| {
                let (vm, sev) = &paths[i % 2];
                Some(Holder::start(vm, sev, i < 2).expect("a guest per ASID"))
            })
            .collect();
        assert_eq!(guest_count(&sevd), 4);
        let fifth = Holder::start(&paths[0].0, &paths[0].1, true);
        assert_eq!(
            fifth.err().as_deref(),
            Some("error init 16"),
            "EBUSY: no ES ASID left"
        );
        for (closed, &i) in order.iter().enumerate() {
            holders[i].take().expect("open").close();
            // The kernel sends the last close to the daemon after the process is gone.
            wait_guest_count(&sevd, 3 - closed as u32);
            for h in holders.iter_mut().flatten() {
                let handle = h.handle;
                assert_eq!(
                    h.ask("status"),
                    format!("status {handle} 1"),
                    "still LUPDATE"
                );
                assert_eq!(h.ask("init"), "init 22", "still initialised: EINVAL");
            }
        }
    }
    // Every ASID came back exactly once: all four launch again (a double free would hand
    // one ASID to two guests, and ACTIVATE would refuse the second).
    let again: Vec<Holder> = (0..4)
        .map(|i| Holder::start(&paths[i % 2].0, &paths[i % 2].1, i < 2).expect("ASIDs freed"))
        .collect();
    assert_eq!(guest_count(&sevd), 4);
    again.into_iter().for_each(Holder::close);
}

/// The first line a helper prints, or a failure after `secs` (a helper stuck before it
/// speaks must fail the test, not hang it).
fn first_line(out: ChildStdout, secs: u64) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the helper answered in time")
        .trim()
        .to_string()
}

/// A `stall-fuse` server, its mount, and the `stall-client`s stalled on it. Dropping it
/// kills the server first (which lets every stalled request fail, in the clients and in the
/// daemon: a killed client waits for its request to finish), then the clients.
struct StallMount {
    child: Child,
    dir: PathBuf,
    clients: Vec<Child>,
}

impl StallMount {
    fn start(dir: &Path) -> StallMount {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(helper("stall-fuse"))
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn stall-fuse");
        let stdout = child.stdout.take().unwrap();
        let mount = StallMount {
            child,
            dir: dir.to_path_buf(),
            clients: vec![],
        };
        assert_eq!(first_line(stdout, 20), "mounted");
        mount
    }

    fn file(&self) -> PathBuf {
        self.dir.join("stall")
    }

    /// A `stall-client` with `args`, once it is in its stalled ioctl.
    fn stall(&mut self, args: &[&Path]) {
        let mut child = Command::new(helper("stall-client"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn stall-client");
        let stdout = child.stdout.take().unwrap();
        self.clients.push(child);
        assert_eq!(first_line(stdout, 20), "issuing");
        // Let the request reach the daemon.
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for StallMount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = vfs::detach(&self.dir);
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_caller_whose_memory_never_arrives_stalls_no_one_else() {
    require_mount!();
    let mut sevd = Sevd::start();
    let mut stall = StallMount::start(&sevd.dir.path().join("stall"));
    let file = stall.file();
    stall.stall(&[Path::new("sev"), &sevd.node(), &file]);
    stall.stall(&[Path::new("vm"), &sevd.node(), &sevd.vm_node(), &file]);

    // Others are served: the platform, and a whole launch on the VM node. On a thread, so a
    // daemon that froze fails this test instead of hanging it.
    let (node_path, (tx, rx)) = (sevd.node(), std::sync::mpsc::channel());
    let vm_path = sevd.vm_node();
    std::thread::spawn(move || {
        let node = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node_path)
            .unwrap();
        assert!(platform_status(&node).is_ok());
        let (pdh, _) = tests::pdh_export(&node).expect("PDH_CERT_EXPORT");
        assert_eq!(pdh.len(), 0x824);
        let vm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&vm_path)
            .unwrap();
        let vm = VmClient::from_files(vm, node, 1 << 16);
        vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
        let mut ls = KvmSevLaunchStart::default();
        vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
        let mut ud = uapi::kvm::KvmSevLaunchUpdateData {
            uaddr: vm.uaddr(0),
            len: 4096,
            pad0: 0,
        };
        vm.encrypt_op(KvmSevCmdId::LaunchUpdateData, &mut ud)
            .unwrap();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("other callers are served while one stalls");

    // And SIGTERM still ends the daemon, cleanly and promptly.
    let t = Instant::now();
    let status = sevd.terminate();
    assert!(status.success(), "sevd exited with {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn the_policy_covers_the_vm_node_and_the_opens() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let audit = dir.path().join("audit.log");
    std::fs::write(&policy, "rules:\n  - classes: [read]\n    users: [root]\n").unwrap();
    let sevd = Sevd::start_with(Options {
        args: [
            "--policy",
            policy.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--mode",
            "666",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    });
    std::fs::set_permissions(
        sevd.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Granted nothing: no file at all, on either node.
    let open_as_nobody = |node: &Path| {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$0\"")
            .arg(node)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    for node in [sevd.node(), sevd.vm_node()] {
        let o = open_as_nobody(&node);
        assert!(!o.status.success(), "{} opened", node.display());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not permitted"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Root has `read` only: the VM node does not open.
    let e = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sevd.vm_node())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));

    // `launch` opens the VM node and launches; `debug` stays refused.
    std::fs::write(
        &policy,
        "rules:\n  - classes: [read, launch]\n    users: [root]\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sevd.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::File::open(sevd.vm_node()).is_err() {
        assert!(
            Instant::now() < deadline,
            "the reloaded policy is not in force"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let vm = VmClient::new(&sevd, 1 << 16);
    vm.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    let mut ls = KvmSevLaunchStart::default();
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
    let mut out = [0u8; 16];
    let mut dbg = uapi::kvm::KvmSevDbg {
        src_uaddr: vm.uaddr(0),
        dst_uaddr: out.as_mut_ptr() as u64,
        len: 16,
        pad0: 0,
    };
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::DbgDecrypt, &mut dbg),
        Err((libc::EPERM, 0))
    );
    assert_eq!(vm.guest_read(0, 16), Err(libc::EPERM));
    drop(vm);

    // The audit log has the VM node's commands, refused ones without a status.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = audit_lines(&audit);
        if lines.iter().any(|l| l["command"] == "SEVD_VM_GUEST_ACCESS") {
            break lines;
        }
        assert!(Instant::now() < deadline, "no audit line for the VM node");
        std::thread::sleep(Duration::from_millis(20));
    };
    let find = |name: &str| {
        lines
            .iter()
            .find(|l| l["command"] == name)
            .unwrap_or_else(|| panic!("{name} in the audit log"))
    };
    assert_eq!(find("KVM_SEV_LAUNCH_START")["status"], 0);
    assert_eq!(find("KVM_SEV_LAUNCH_START")["errno"], 0);
    assert!(find("KVM_SEV_INIT")["status"].is_null() || find("KVM_SEV_INIT")["status"] == 0);
    for refused in ["KVM_SEV_DBG_DECRYPT", "SEVD_VM_GUEST_ACCESS"] {
        assert!(find(refused)["status"].is_null(), "{}", find(refused));
        assert_eq!(find(refused)["errno"], libc::EPERM);
    }
    assert_eq!(find("KVM_SET_USER_MEMORY_REGION")["errno"], 0);
}

#[test]
fn per_user_limits_get_the_kernels_errno_and_one_log_line() {
    require_mount!();
    let mut sevd = Sevd::start_with(Options {
        args: [
            "--max-vms-per-uid",
            "3",
            "--max-vcpus-per-vm",
            "2",
            "--max-memory-per-vm-mib",
            "1",
            "--max-asids-per-uid",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    });
    let open_vm = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sevd.vm_node())
    };
    // ASIDs per uid: the second INIT fails as the misc cgroup's charge does.
    let a = VmClient::new(&sevd, 1 << 20);
    let b = VmClient::new(&sevd, 1 << 16);
    a.encrypt_op_plain(KvmSevCmdId::Init).unwrap();
    for _ in 0..3 {
        assert_eq!(b.encrypt_op_plain(KvmSevCmdId::Init), Err((libc::EBUSY, 0)));
    }
    // Guest memory per VM: 1 MiB is registered already.
    let more = uapi::kvm::KvmUserspaceMemoryRegion {
        slot: 1,
        flags: 0,
        guest_phys_addr: 1 << 30,
        memory_size: 4096,
        userspace_addr: a.uaddr(0),
    };
    assert_eq!(
        a.ioctl(
            uapi::ioctl::KVM_SET_USER_MEMORY_REGION,
            &more as *const _ as u64
        ),
        Err(libc::ENOMEM)
    );
    // vCPU save areas per VM.
    let page = [0u8; 4096];
    b.set_vmsa(0, &page).unwrap();
    b.set_vmsa(1, &page).unwrap();
    assert_eq!(b.set_vmsa(2, &page), Err(libc::ENOSPC));
    b.set_vmsa(1, &page).expect("replacing one is not another");
    // VMs per uid.
    let c = open_vm().unwrap();
    assert_eq!(open_vm().unwrap_err().raw_os_error(), Some(libc::ENOMEM));
    drop(c);
    let c = open_vm().expect("a closed VM is given back");
    drop((a, b, c));
    assert_eq!(
        sevd.log().matches("reached the limit on ASIDs").count(),
        1,
        "{}",
        sevd.log()
    );
    assert!(sevd.is_running());
}
