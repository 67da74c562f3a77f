//! `sevctl launch --migrate-to` and `sevctl receive` as a person runs them: SEV and SEV-ES
//! guests with secrets between two daemons, and between a daemon and the embedded firmware
//! both ways; a policy that forbids the move; a listener that never answers. Afterwards no
//! guest is left on either platform. Root (the daemons mount FUSE).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{platform_status, Sevd};

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

/// Where a side runs: a daemon's node, or the embedded firmware in a state directory.
enum Side<'a> {
    Daemon(&'a Sevd),
    Embedded(&'a Path),
}

impl Side<'_> {
    fn args(&self) -> Vec<String> {
        match self {
            Side::Daemon(d) => vec!["--device".into(), d.node().display().to_string()],
            Side::Embedded(dir) => vec![
                "--emulated".into(),
                "--state-dir".into(),
                dir.display().to_string(),
            ],
        }
    }

    fn guests(&self) -> u32 {
        match self {
            Side::Daemon(d) => {
                let st = platform_status(&d.open()).unwrap();
                st.guest_count
            }
            // The embedded firmware lives only as long as the sevctl process.
            Side::Embedded(_) => 0,
        }
    }
}

/// An embedded platform's state directory on the suite's shared chip.
fn embedded_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
    std::fs::write(dir.join(sevd::paths::KDS_FILE), tests::shared_kds()).unwrap();
    dir
}

/// An example manifest, made small (16 MiB) and with absolute paths, with `policy`.
fn manifest(dir: &Path, example: &str, policy: &str) -> PathBuf {
    let text = std::fs::read_to_string(examples().join(example)).unwrap();
    let ex = examples().display().to_string();
    let mut out = String::new();
    let mut skip_policy = false;
    for line in text.lines() {
        if skip_policy && line.starts_with("    ") {
            continue;
        }
        skip_policy = false;
        let line = line
            .replace("memory: 64M", "memory: 16M")
            .replace("memory: 32M", "memory: 16M")
            .replace(": firmware/", &format!(": {ex}/firmware/"))
            .replace(": kernel/", &format!(": {ex}/kernel/"))
            .replace(": secrets/", &format!(": {ex}/secrets/"));
        if line.trim_start().starts_with("policy:") {
            out.push_str(&format!("  policy:\n    raw: {policy}\n"));
            skip_policy = true;
            continue;
        }
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join(format!("{example}-{policy}.yaml"));
    std::fs::write(&path, out).unwrap();
    path
}

/// A listening `sevctl receive`, once its socket is there.
fn receiver(side: &Side<'_>, sock: &Path) -> Child {
    let mut args = side.args();
    args.extend(
        [
            "receive",
            "--listen",
            &format!("unix:{}", sock.display()),
            "--json",
            "--show-secrets",
            "--timeout",
            "20",
        ]
        .map(String::from),
    );
    let child = Command::new(sevctl())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tests::wait_for_path(sock, "receive never listened");
    child
}

fn launch(side: &Side<'_>, manifest: &Path, to: &str, extra: &[&str]) -> Output {
    let mut args = side.args();
    args.extend(
        [
            "launch",
            &manifest.display().to_string(),
            "--migrate-to",
            to,
            "--json",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    tests::shown(Command::new(sevctl()).args(&args))
}

fn finish(child: Child) -> Output {
    let o = child.wait_with_output().unwrap();
    eprintln!(
        "$ sevctl receive\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("a JSON report")
}

/// Moves `example` from `from` to `to`, and checks both reports and the guest's secrets as
/// the received guest reads them.
fn moves(dir: &Path, from: &Side<'_>, to: &Side<'_>, example: &str, policy: &str) {
    let sock = dir.join(format!("{example}.sock"));
    let m = manifest(dir, example, policy);
    let rx = receiver(to, &sock);
    let sent = launch(from, &m, &format!("unix:{}", sock.display()), &[]);
    let received = finish(rx);
    assert!(sent.status.success(), "launch --migrate-to failed");
    assert!(received.status.success(), "receive failed");
    let (s, r) = (json(&sent), json(&received));
    assert_eq!(s["state"], 6, "SENT on the source");
    assert_eq!(r["state"], 3, "RUNNING on the target");
    assert_eq!(s["migration"]["pages"], r["pages"]);
    let es = example.contains("es");
    assert_eq!(r["vmsas"], if es { 4 } else { 0 });
    let passphrase = std::fs::read(examples().join("secrets/disk-passphrase.txt")).unwrap();
    let entries = r["secret"]["entries"].as_array().expect("secret entries");
    assert_eq!(entries[0]["guid"], "736869e5-84f0-4973-92ec-06879ce3da0b");
    assert_eq!(
        entries[0]["data"],
        hex::encode(&passphrase),
        "the guest reads its secret"
    );
    if es {
        assert_eq!(entries[1]["data"], hex::encode("api-token-0123456789"));
    }
    assert_ne!(
        r["secret"]["hypervisor_view"], s["secret"]["hypervisor_view"],
        "each platform's own key"
    );
    assert_eq!((from.guests(), to.guests()), (0, 0), "no guest left behind");
}

#[test]
fn sev_and_sev_es_guests_move_between_two_daemons() {
    tests::require_mount!();
    let (a, b) = (Sevd::start(), Sevd::start());
    let dir = tempfile::tempdir().unwrap();
    moves(
        dir.path(),
        &Side::Daemon(&a),
        &Side::Daemon(&b),
        "sev.yaml",
        "0x1",
    );
    moves(
        dir.path(),
        &Side::Daemon(&b),
        &Side::Daemon(&a),
        "sev-es.yaml",
        "0x7",
    );
}

#[test]
fn guests_move_between_a_daemon_and_the_embedded_firmware() {
    tests::require_mount!();
    let daemon = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let emb = embedded_dir(dir.path(), "embedded");
    moves(
        dir.path(),
        &Side::Daemon(&daemon),
        &Side::Embedded(&emb),
        "sev-es.yaml",
        "0x5",
    );
    moves(
        dir.path(),
        &Side::Embedded(&emb),
        &Side::Daemon(&daemon),
        "sev.yaml",
        "0x1",
    );
    let other = embedded_dir(dir.path(), "other");
    moves(
        dir.path(),
        &Side::Embedded(&emb),
        &Side::Embedded(&other),
        "sev.yaml",
        "0x21",
    );
}

#[test]
fn a_nosend_guest_is_refused_at_send_start_and_both_sides_say_why() {
    tests::require_mount!();
    let (a, b) = (Sevd::start(), Sevd::start());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let m = manifest(dir.path(), "sev.yaml", "0x9");
    let rx = receiver(&Side::Daemon(&b), &sock);
    let sent = launch(
        &Side::Daemon(&a),
        &m,
        &format!("unix:{}", sock.display()),
        &[],
    );
    let received = finish(rx);
    assert_eq!(sent.status.code(), Some(4), "the firmware's refusal");
    let err = String::from_utf8_lossy(&sent.stderr);
    assert!(
        err.contains("SEND_START") && err.contains("POLICY_FAILURE"),
        "{err}"
    );
    assert_eq!(received.status.code(), Some(5));
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(
        err.contains("the source aborted") && err.contains("POLICY_FAILURE"),
        "{err}"
    );
    assert_eq!(Side::Daemon(&a).guests(), 0);
    assert_eq!(Side::Daemon(&b).guests(), 0);
}

#[test]
fn a_listener_that_never_answers_is_given_up_on() {
    tests::require_mount!();
    let a = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let m = manifest(dir.path(), "sev.yaml", "0x1");
    let t = Instant::now();
    let sent = launch(
        &Side::Daemon(&a),
        &m,
        &format!("unix:{}", sock.display()),
        &["--migrate-timeout", "2"],
    );
    assert_eq!(sent.status.code(), Some(5));
    let err = String::from_utf8_lossy(&sent.stderr);
    assert!(err.contains("no answer from the peer within 2 s"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(Side::Daemon(&a).guests(), 0);
    // Nothing listens at all.
    let sent = launch(&Side::Daemon(&a), &m, "unix:/nonexistent/sock", &[]);
    assert_eq!(sent.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("cannot connect to unix:/nonexistent/sock")
    );
}

#[test]
fn tcp_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (embedded_dir(dir.path(), "a"), embedded_dir(dir.path(), "b"));
    // Port 0: the kernel picks; receive says which on stderr.
    let mut args = Side::Embedded(&b).args();
    args.extend(["receive", "--listen", "tcp:127.0.0.1:0", "--json"].map(String::from));
    let mut rx = Command::new(sevctl())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(rx.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert_ne!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap(),
            0,
            "no listening line"
        );
        if let Some(a) = line.trim().strip_prefix("sevctl: listening on ") {
            break a.to_string();
        }
    };
    let m = manifest(dir.path(), "sev.yaml", "0x1");
    let sent = launch(&Side::Embedded(&a), &m, &addr, &[]);
    assert!(sent.status.success());
    let received = rx.wait_with_output().unwrap();
    assert!(received.status.success());
    assert_eq!(json(&received)["state"], 3);
}

/// Runs `sevctl ARGS` to its end, showing what it printed.
fn run(args: &[String]) -> Output {
    tests::shown(Command::new(sevctl()).args(args))
}

fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "it ended instead");
        assert!(t.elapsed() < Duration::from_secs(60), "{path:?} never came");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ends(child: &mut Child) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the keeper did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `sevctl COMMAND --keep --control CONTROL` on `side`, running.
/// A keeper of a guest with a control socket, run under `umask`.
fn keeper(side: &Side<'_>, command: &[&str], control: &Path, umask: u32) -> Child {
    use std::os::unix::process::CommandExt;
    let mut args = side.args();
    args.extend(command.iter().map(|s| s.to_string()));
    args.extend(["--keep", "--control", &control.display().to_string()].map(String::from));
    let mut cmd = Command::new(sevctl());
    cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: umask(2) is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// The permission bits of a control socket.
fn socket_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn migrate(control: &Path, to: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["migrate", &control.display().to_string(), "--to", to]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&args)
}

#[test]
fn a_kept_guest_moves_on_sevctl_migrate_and_on_again() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|n| embedded_dir(dir.path(), n));
    let m = manifest(dir.path(), "sev-es.yaml", "0x5");
    let unix = |p: &Path| format!("unix:{}", p.display());
    // An SEV-ES guest with its secrets, kept on `a` with a control socket.
    let ctl_a = dir.path().join("a.ctl");
    let mut keeper_a = keeper(
        &Side::Embedded(&a),
        &["launch", &m.display().to_string()],
        &ctl_a,
        0o022,
    );
    wait_for(&ctl_a, &mut keeper_a);
    // This user's alone from the moment it appears, whatever the umask (b's is 077).
    assert_eq!(socket_mode(&ctl_a), 0o600);
    // A move that fails (nobody listens) is the keeper's exit code, and the guest stays.
    let o = migrate(&ctl_a, "unix:/nonexistent/sock", &["--timeout", "2"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to unix:/nonexistent/sock"));
    assert!(keeper_a.try_wait().unwrap().is_none(), "still kept");
    // A bad order is refused and changes nothing.
    let mut bad = std::os::unix::net::UnixStream::connect(&ctl_a).unwrap();
    std::io::Write::write_all(&mut bad, b"{\"to\": \"udp:x\", \"timeout\": 1}\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut bad, &mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (answer["ok"].as_bool(), answer["exit"].as_u64()),
        (Some(false), Some(2))
    );
    assert!(keeper_a.try_wait().unwrap().is_none(), "still kept");
    // To `b`, which keeps it with a control socket of its own.
    let (sock_b, ctl_b) = (dir.path().join("b.sock"), dir.path().join("b.ctl"));
    let mut keeper_b = keeper(
        &Side::Embedded(&b),
        &["receive", "--listen", &unix(&sock_b)],
        &ctl_b,
        0o077,
    );
    wait_for(&sock_b, &mut keeper_b);
    let o = migrate(&ctl_a, &unix(&sock_b), &["--json"]);
    assert!(o.status.success(), "the first move");
    let report = json(&o);
    assert_eq!(report["migration"]["vmsas"], 4);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert!(
        steps.contains(&"SEND_FINISH") && steps.contains(&"RECEIVE_FINISH"),
        "{steps:?}"
    );
    assert!(
        ends(&mut keeper_a).success(),
        "the source's keeper ends after the move"
    );
    assert!(!ctl_a.exists(), "its control socket is gone");
    // And on from `b` to `c`, where the guest reads its secrets.
    wait_for(&ctl_b, &mut keeper_b);
    assert_eq!(socket_mode(&ctl_b), 0o600);
    let sock_c = dir.path().join("c.sock");
    let rx_c = receiver(&Side::Embedded(&c), &sock_c);
    let o = migrate(&ctl_b, &unix(&sock_c), &[]);
    assert!(o.status.success(), "the second move");
    assert!(String::from_utf8_lossy(&o.stdout).contains("guest moved to unix:"));
    assert!(ends(&mut keeper_b).success());
    let received = finish(rx_c);
    assert!(received.status.success());
    let r = json(&received);
    assert_eq!(
        (r["state"].as_u64(), r["vmsas"].as_u64()),
        (Some(3), Some(4))
    );
    let passphrase = std::fs::read(examples().join("secrets/disk-passphrase.txt")).unwrap();
    assert_eq!(r["secret"]["entries"][0]["data"], hex::encode(&passphrase));
    // No keeper there: a clear error; an SNP guest cannot be kept for a move.
    let o = migrate(&ctl_b, &unix(&sock_c), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach a kept guest"));
    let mut args = Side::Embedded(&c).args();
    args.extend(
        [
            "launch",
            &examples().join("snp.yaml").display().to_string(),
            "--keep",
            "--control",
        ]
        .map(String::from),
    );
    args.push(dir.path().join("snp.ctl").display().to_string());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SEV-SNP guests do not migrate"));
}
