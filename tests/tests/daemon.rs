//! The daemon's life: clean shutdown, stale mounts, persistence, corrupt state, refusing to
//! cover a real device, file modes.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use tests::{pdh_export, platform_status, sev_issue, shared_chip, Options, Sevd};

use tests::require_mount;

#[test]
fn sigterm_exits_zero_and_leaves_no_mount_or_placeholder() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sev");
    let mut sevd = Sevd::start_with(Options {
        link: Some(link.clone()),
        ..Options::default()
    });
    assert_eq!(sevd.our_mounts().len(), 3);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .unwrap();
    platform_status(&held).unwrap();
    let status = sevd.terminate();
    assert_eq!(status.code(), Some(0), "{}", sevd.log());
    assert!(
        sevd.our_mounts().is_empty(),
        "mounts left: {:?}",
        sevd.our_mounts()
    );
    assert!(!link.exists(), "placeholder left behind");
    assert!(
        !dir.path().join("sev-vm").exists(),
        "VM placeholder left behind"
    );
    assert_eq!(platform_status(&held).unwrap_err(), libc::ENOTCONN);
}

#[test]
fn a_stale_mount_from_a_killed_daemon_is_detached_at_start() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sev");
    let mut sevd = Sevd::start_with(Options {
        link: Some(link.clone()),
        ..Options::default()
    });
    let before = pdh_export(&sevd.open()).unwrap();
    sevd.kill();
    assert_eq!(
        sevd.our_mounts().len(),
        3,
        "SIGKILL leaves the mounts stale"
    );
    sevd.restart(&[]);
    assert_eq!(
        sevd.our_mounts().len(),
        3,
        "no mount stacked on a stale one"
    );
    assert_eq!(
        pdh_export(&sevd.open()).unwrap(),
        before,
        "keys survive the crash"
    );
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .unwrap();
    assert_eq!(platform_status(&f).unwrap().state, 1);
}

#[test]
fn keys_and_ownership_survive_a_restart() {
    require_mount!();
    let mut sevd = Sevd::start();
    let f = sevd.open();
    assert_eq!(sev_issue(&f, 4, 0, 0).0, Ok(()), "PDH_GEN");
    let before = pdh_export(&f).unwrap();
    drop(f);
    assert_eq!(sevd.terminate().code(), Some(0));
    sevd.restart(&[]);
    assert_eq!(pdh_export(&sevd.open()).unwrap(), before);
}

#[test]
fn a_corrupt_store_gets_secure_data_invalid_and_a_fresh_platform() {
    require_mount!();
    let mut sevd = Sevd::start();
    let before = pdh_export(&sevd.open()).unwrap();
    assert_eq!(sevd.terminate().code(), Some(0));
    let nv = sevd.state_dir.join("nv.bin");
    let mut bytes = std::fs::read(&nv).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&nv, &bytes).unwrap();
    sevd.restart(&[]);
    let log = sevd.log();
    assert!(log.contains("SECURE_DATA_INVALID"), "{log}");
    let f = sevd.open();
    assert_eq!(platform_status(&f).unwrap().state, 1);
    let after = pdh_export(&f).unwrap();
    assert_ne!(after.0, before.0, "new keys");
    assert_eq!(
        after.1[2 * 0x824..],
        before.1[2 * 0x824..],
        "same chip, same CEK"
    );
    let kept = std::fs::read_dir(&sevd.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("nv.bin.corrupt-")
        })
        .count();
    assert_eq!(kept, 1, "the corrupt store is kept aside");
}

#[test]
fn a_corrupt_chip_file_stops_the_daemon_with_a_clear_error() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut chip = shared_chip().to_vec();
    chip[50] ^= 1;
    std::fs::write(state.join("chip.bin"), chip).unwrap();
    let out = Command::new(tests::sevd_bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("--mountpoint")
        .arg(dir.path().join("mnt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chip identity is corrupt"), "{err}");
}

#[test]
fn refuses_to_cover_a_character_device() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("sev");
    nix::sys::stat::mknod(
        &fake,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("chip.bin"), shared_chip()).unwrap();
    let out = Command::new(tests::sevd_bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("--mountpoint")
        .arg(dir.path().join("mnt"))
        .arg("--link")
        .arg(&fake)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("character device"));
    assert!(std::fs::metadata(&fake)
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(vfs::find_mounts("sevd")
        .unwrap()
        .iter()
        .all(|p| !p.starts_with(dir.path())));
}

#[test]
fn group_and_mode_decide_who_may_open_the_node() {
    require_mount!();
    let sevd = Sevd::start_with(Options {
        args: vec![
            "--group".into(),
            "daemon".into(),
            "--mode".into(),
            "0640".into(),
        ],
        ..Options::default()
    });
    let meta = std::fs::metadata(sevd.node()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let daemon_gid = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), daemon_gid);
    // Let an unprivileged user reach the mount point, then try as `nobody`.
    std::fs::set_permissions(sevd.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_as = |uid: u32, gid: u32, mode: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3{mode} \"$0\""))
            .arg(sevd.node())
            .uid(uid)
            .gid(gid)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!open_as(65534, 65534, "<"), "others may not open it");
    assert!(open_as(65534, daemon_gid, "<"), "the group may read");
    assert!(!open_as(65534, daemon_gid, "<>"), "but not write with 0640");
}

#[test]
fn tells_systemd_it_is_ready() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("chip.bin"), shared_chip()).unwrap();
    let mut child = Command::new(tests::sevd_bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("--mountpoint")
        .arg(dir.path().join("mnt"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means the node answers.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("mnt/sev"))
        .unwrap();
    assert_eq!(platform_status(&f).unwrap().state, 1);
    drop(f);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_systemd_units_are_valid() {
    for unit in ["sevd.service", "sevd-hardware.service"] {
        check_unit(unit);
    }
}

fn check_unit(name: &str) {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        tests::missing!("systemd-analyze is not installed (scripts/setup.sh installs systemd)");
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(format!("{}/../systemd/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("Restart=on-failure"));
    // Point ExecStart at the binary just built, so verify can check it exists.
    let unit = unit.replace("/usr/local/bin/sevd", tests::sevd_bin().to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Only complaints about this unit count (the host's own units may have their own).
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
    assert!(
        ours.is_empty() && out.status.success(),
        "systemd-analyze verify:\n{text}"
    );
}

/// The product links no C crypto library: no libssl or libcrypto in sevd or sevctl. (The
/// binaries of this build's profile: a release build links the same crates.)
#[test]
fn sevd_and_sevctl_link_no_openssl() {
    let sevd = tests::sevd_bin();
    for bin in [sevd.clone(), sevd.with_file_name("sevctl")] {
        let out = Command::new("ldd").arg(&bin).output().expect("run ldd");
        let libs = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ldd {}", bin.display());
        assert!(
            !libs.contains("libssl") && !libs.contains("libcrypto"),
            "{} links OpenSSL:\n{libs}",
            bin.display()
        );
    }
}

/// A daemon killed while PEK_GEN runs, many times over: each time the store opens under the
/// chip's seal, holds a chain that verifies (old keys or new, never a mix), no temporary or
/// quarantined file is left once it restarts, and a PEK_GEN whose caller saw it succeed is
/// never lost (issue 14 §4).
#[test]
fn sigkill_in_the_middle_of_pek_gen_never_loses_or_tears_the_store() {
    use sevd::certs::PlatformChain;
    use sevd::firmware::chip::Chip;
    use sevd::firmware::nv::PlatformKeys;
    use std::sync::{Arc, Mutex};
    use uapi::cert::Certificate;

    require_mount!();
    let mut rng = tests::Rng(tests::seed());
    let chip = Chip::decode(shared_chip()).unwrap();
    let (seal, v1) = (chip.nv_seal_key().unwrap(), chip.nv_v1_mac_key().unwrap());
    let mut sevd = Sevd::start();
    // Every export a caller saw after a successful PEK_GEN, oldest first.
    let mut confirmed = vec![pdh_export(&sevd.open()).unwrap()];
    let rounds = 30;
    let mut cut_short = 0;
    for round in 0..rounds {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let f = sevd.open();
        let client = {
            let seen = seen.clone();
            std::thread::spawn(move || loop {
                if sev_issue(&f, 2, 0, 0).0.is_err() {
                    return;
                }
                match pdh_export(&f) {
                    Ok(keys) => seen.lock().unwrap().push(keys),
                    Err(_) => return,
                }
            })
        };
        // A PEK_GEN takes from tens to hundreds of milliseconds (key generation, signatures,
        // fsync): the kill lands anywhere in the first few.
        std::thread::sleep(std::time::Duration::from_micros(1_000 + rng.below(600_000)));
        sevd.kill();
        client.join().unwrap();
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        confirmed.extend(seen);

        let bytes = std::fs::read(sevd.state_dir.join("nv.bin")).unwrap();
        let keys = PlatformKeys::decode(&bytes, &seal, &v1)
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        sevd.restart(&[]);
        let (pdh, chain) = pdh_export(&sevd.open()).unwrap();
        assert_eq!(
            pdh,
            keys.pdh.encode(),
            "round {round}: served vs stored PDH"
        );
        let cert = |i: usize| Certificate::decode(&chain[i * 0x824..(i + 1) * 0x824]).unwrap();
        PlatformChain {
            pdh: Certificate::decode(&pdh).unwrap(),
            pek: cert(0),
            oca: cert(1),
            cek: cert(2),
        }
        .verify()
        .unwrap_or_else(|e| panic!("round {round}: a torn chain: {e}"));
        // The last confirmed keys, or newer ones whose reply the kill cut off; never older.
        let at = confirmed.iter().position(|k| k.0 == pdh);
        match at {
            Some(i) => assert_eq!(
                i,
                confirmed.len() - 1,
                "round {round}: a completed PEK_GEN was lost"
            ),
            None => {
                cut_short += 1;
                confirmed.push((pdh, chain));
            }
        }
        let left: Vec<String> = std::fs::read_dir(&sevd.state_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.contains(".corrupt-"))
            .collect();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
        assert!(
            !sevd.log().contains("SECURE_DATA_INVALID"),
            "{}",
            sevd.log()
        );
    }
    eprintln!(
        "{rounds} kills, {} PEK_GENs confirmed, {cut_short} completed on disk after their caller lost the reply",
        confirmed.len() - 1 - cut_short
    );
}
