//! Host SNP administration with virtee's unmodified `snphost` 0.9.0 under `sevctl exec`,
//! against a daemon reached through its `--link` (the way users reach `/dev/sev`), checked
//! against the platform's own state; and what a daemon with its own state directory
//! publishes, found through that link by sevctl and by a kept guest's extended reports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::{require_mount, sev_issue, shown, KeptGuest, Options, Sevd};
use uapi::psp_sev::SevUserDataSnpStatus;
use uapi::ByteValued;

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/snp.yaml")
}

/// A `--snp` daemon with its own state directory, reached through `--link DIR/sev`.
fn linked_daemon(dir: &Path) -> (Sevd, PathBuf) {
    let link = dir.join("sev");
    let sevd = Sevd::start_with(Options {
        args: ["--snp", "--snp-tcb", "3:0:8:115"]
            .map(String::from)
            .to_vec(),
        link: Some(link.clone()),
        ..Options::default()
    });
    (sevd, link)
}

/// The ARK, ASK and VCEK `sevd` publishes beside its nodes, copied into `dir`/certs.
fn published_certs(sevd: &Sevd, dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir(&certs).unwrap();
    for name in ["ark.der", "ask.der", "vcek.der"] {
        std::fs::copy(sevd.mountpoint.join(name), certs.join(name)).unwrap();
    }
    certs
}

/// SNP_PLATFORM_STATUS's guest count, current and reported TCB.
struct Status {
    guests: u32,
    current: u64,
    reported: u64,
}

fn snp_status(node: &Path) -> Status {
    let file = File::open(node).unwrap();
    let mut s = SevUserDataSnpStatus::default();
    let (r, error) = sev_issue(&file, 9, s.as_bytes_mut().as_mut_ptr() as u64, 0);
    assert!(r.is_ok(), "SNP_PLATFORM_STATUS: error {error:#x}");
    Status {
        guests: s.guest_count,
        current: s.current_tcb_version,
        reported: s.reported_tcb_version,
    }
}

/// A TCB_VERSION as snphost shows it: boot loader, TEE, SNP, microcode (Milan's layout).
fn spl(tcb: u64) -> [u8; 4] {
    let b = tcb.to_le_bytes();
    [b[0], b[1], b[6], b[7]]
}

/// The four SPLs of one of `show tcb`'s two parts ("Reported TCB" or "Platform TCB").
fn shown_tcb(text: &str, part: &str) -> [u8; 4] {
    let rest = &text[text.find(part).unwrap_or_else(|| panic!("{part}: {text}"))..];
    let field = |name: &str| -> u8 {
        let line = rest
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap();
        line.rsplit(' ').next().unwrap().trim().parse().unwrap()
    };
    [
        field("Boot Loader:"),
        field("TEE:"),
        field("SNP:"),
        field("Microcode:"),
    ]
}

struct Snphost {
    bin: String,
    node: String,
}

impl Snphost {
    /// `bin` on a fresh [`linked_daemon`] in a fresh directory.
    fn with_daemon(bin: &Path) -> (tempfile::TempDir, Sevd, PathBuf, Snphost) {
        let dir = tempfile::tempdir().unwrap();
        let (sevd, link) = linked_daemon(dir.path());
        let snphost = Snphost {
            bin: bin.display().to_string(),
            node: link.display().to_string(),
        };
        (dir, sevd, link, snphost)
    }

    /// `snphost ARGS` under `sevctl --device NODE exec`, in `dir`.
    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(sevctl());
        cmd.current_dir(dir)
            .args(["--device", &self.node, "exec", "--", &self.bin])
            .args(args);
        shown(&mut cmd)
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.run(dir, args);
        assert!(o.status.success(), "snphost {args:?}: {}", o.status);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

#[test]
fn snphost_administers_the_platform_through_the_daemons_link() {
    require_mount!();
    let bin = match tests::snphost_bin() {
        Ok(b) => b,
        Err(why) => tests::missing!(why),
    };
    let (dir, sevd, link, snphost) = Snphost::with_daemon(&bin);
    let d = dir.path();

    // show guests follows a kept guest.
    assert_eq!(snphost.ok(d, &["show", "guests"]).trim(), "0");
    let kept = KeptGuest::serve_through(&link, &manifest(), &d.join("sev-guest"), &[]);
    assert_eq!(snphost.ok(d, &["show", "guests"]).trim(), "1");
    assert_eq!(snp_status(&link).guests, 1);
    drop(kept);
    assert_eq!(snphost.ok(d, &["show", "guests"]).trim(), "0");

    // config set moves the reported TCB (SNP_SET_CONFIG), and show tcb follows it.
    let before = snp_status(&link);
    assert_eq!(spl(before.reported), [3, 0, 8, 115]);
    snphost.ok(d, &["config", "set", "1", "0", "3", "100", "0"]);
    let set = snp_status(&link);
    assert_eq!(spl(set.reported), [1, 0, 3, 100]);
    assert_eq!(set.current, before.current);
    let tcb = snphost.ok(d, &["show", "tcb"]);
    assert_eq!(shown_tcb(&tcb, "Reported TCB"), [1, 0, 3, 100], "{tcb}");
    assert_eq!(shown_tcb(&tcb, "Platform TCB"), [3, 0, 8, 115], "{tcb}");
    // A reported TCB above the installed one is refused, as firmware refuses it.
    let o = snphost.run(d, &["config", "set", "9", "0", "9", "200", "0"]);
    assert!(!o.status.success());
    assert_eq!(spl(snp_status(&link).reported), [1, 0, 3, 100]);
    // config reset: back to the committed TCB.
    snphost.ok(d, &["config", "reset"]);
    assert_eq!(spl(snp_status(&link).reported), [3, 0, 8, 115]);
    let tcb = snphost.ok(d, &["show", "tcb"]);
    assert_eq!(shown_tcb(&tcb, "Reported TCB"), [3, 0, 8, 115], "{tcb}");

    // commit: the reported TCB is the installed one again after a config set.
    snphost.ok(d, &["config", "set", "1", "0", "3", "100", "0"]);
    snphost.ok(d, &["commit"]);
    assert_eq!(snp_status(&link).reported, before.current);

    // The published chain, found beside the link's mount: verify, import, export.
    let certs = published_certs(&sevd, d);
    let verified = snphost.ok(d, &["verify", "certs", "certs"]);
    assert!(!links_broken(&verified), "{verified}");
    snphost.ok(d, &["import", "certs", "table.bin"]);
    let table = std::fs::read(d.join("table.bin")).unwrap();
    let entries = uapi::snp::cert_table::entries(&table).unwrap();
    assert_eq!(entries.len(), 3);
    for (encoding, out) in [("der", "der"), ("pem", "pem")] {
        snphost.ok(d, &["export", encoding, "table.bin", out]);
    }
    for name in ["ark", "ask", "vcek"] {
        assert_eq!(
            std::fs::read(d.join("der").join(format!("{name}.der"))).unwrap(),
            std::fs::read(certs.join(format!("{name}.der"))).unwrap(),
            "{name}"
        );
        let pem = std::fs::read_to_string(d.join("pem").join(format!("{name}.pem"))).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
    }
    // A tampered chain fails verification.
    let mut vcek = std::fs::read(certs.join("vcek.der")).unwrap();
    let last = vcek.len() - 1;
    vcek[last] ^= 1;
    std::fs::write(certs.join("vcek.der"), vcek).unwrap();
    let o = snphost.run(d, &["verify", "certs", "certs"]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() || links_broken(&shown),
        "a tampered VCEK verified"
    );
}

/// Whether `verify certs` marks a link of the chain invalid (U+0338 through its arrow): its
/// lines ARK → ARK, ARK → ask, ask → vcek, after the legend.
fn links_broken(shown: &str) -> bool {
    let links: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with("ARK ") || l.starts_with("ask "))
        .collect();
    assert_eq!(links.len(), 3, "{shown}");
    links.iter().any(|l| l.contains('\u{338}'))
}

/// SNP_GET_EXT_REPORT on `device` with a 16 KiB certificate buffer: the buffer.
fn ext_report_certs(device: &Path) -> Vec<u8> {
    use uapi::sev_guest::*;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .unwrap();
    let mut certs = vec![0u8; 0x4000];
    let mut resp = vec![0u8; SNP_REPORT_RESP_LEN];
    let req = SnpExtReportReq {
        data: SnpReportReq::default(),
        certs_address: certs.as_mut_ptr() as u64,
        certs_len: certs.len() as u32,
        pad: 0,
    };
    let mut io = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req.as_bytes().as_ptr() as u64,
        resp_data: resp.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `io` points at a request, a response and a certificate buffer of the lengths the driver takes, live for the call.
    let r = unsafe { tests::sev_guest_ioctl(&dev, SNP_GET_EXT_REPORT, &mut io) };
    assert_eq!(r, 0, "SNP_GET_EXT_REPORT: exitinfo2 {:#x}", {
        io.exitinfo2
    });
    certs
}

#[test]
fn an_imported_table_is_what_the_guests_extended_reports_carry() {
    require_mount!();
    let bin = match tests::snphost_bin() {
        Ok(b) => b,
        Err(why) => tests::missing!(why),
    };
    let (dir, sevd, link, snphost) = Snphost::with_daemon(&bin);
    let d = dir.path();
    let certs = published_certs(&sevd, d);
    snphost.ok(d, &["import", "certs", "table.bin"]);
    let table = std::fs::read(d.join("table.bin")).unwrap();

    let device = d.join("sev-guest");
    let kept = KeptGuest::serve_through(
        &link,
        &manifest(),
        &device,
        &["--certs", d.join("table.bin").to_str().unwrap()],
    );
    let served = ext_report_certs(&device);
    assert_eq!(
        &served[..table.len()],
        &table[..],
        "the table, byte for byte"
    );
    assert!(served[table.len()..].iter().all(|b| *b == 0));
    drop(kept);

    // Without --certs: the platform's own table, its VCEK the published one.
    let kept = KeptGuest::serve_through(&link, &manifest(), &device, &[]);
    let served = ext_report_certs(&device);
    let entries = uapi::snp::cert_table::entries(&served).unwrap();
    let vcek = std::fs::read(certs.join("vcek.der")).unwrap();
    assert!(entries.iter().any(|e| e.bytes(&served) == vcek));
    drop(kept);

    // A malformed table is refused before the guest starts, and no guest is left.
    let mut bad = table.clone();
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(d.join("bad.bin"), &bad).unwrap();
    for file in ["bad.bin", "certs/vcek.der"] {
        let o = shown(Command::new(sevctl()).args([
            "--device",
            link.to_str().unwrap(),
            "launch",
            manifest().to_str().unwrap(),
            "--keep",
            "--guest-device",
            device.to_str().unwrap(),
            "--certs",
            d.join(file).to_str().unwrap(),
        ]));
        assert_eq!(o.status.code(), Some(2), "{file}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not a certificate table"), "{err}");
        assert_eq!(snp_status(&link).guests, 0);
    }
}

#[test]
fn a_daemon_with_its_own_state_is_found_through_its_link() {
    require_mount!();
    let snpguest = match tests::snpguest_bin() {
        Ok(b) => b,
        Err(why) => tests::missing!(why),
    };
    let _guard = match tests::own_dev_sev_guest() {
        Ok(g) => g,
        Err(why) => tests::missing!(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sevd, link) = linked_daemon(d);
    assert_ne!(sevd.state_dir, Path::new(sevd::paths::DEFAULT_STATE_DIR));

    // export --full finds AMD's part of the chain through the link.
    let full = d.join("full.cert");
    let o = shown(Command::new(sevctl()).args([
        "--device",
        link.to_str().unwrap(),
        "export",
        "--full",
        full.to_str().unwrap(),
    ]));
    assert!(o.status.success());
    let ca = std::fs::read(sevd.state_dir.join("ask_ark.cert")).unwrap();
    assert!(std::fs::read(&full).unwrap().ends_with(&ca));

    // A guest kept through the link: its extended reports carry the published chain.
    let kept = KeptGuest::serve_through(&link, &manifest(), Path::new("/dev/sev-guest"), &[]);
    let snpguest = |args: &[&str]| {
        let o = shown(Command::new(&snpguest).current_dir(d).args(args));
        assert!(o.status.success(), "snpguest {args:?}");
    };
    snpguest(&["report", "report.bin", "request.bin", "--random"]);
    snpguest(&["certificates", "der", "certs"]);
    snpguest(&["verify", "certs", "certs"]);
    snpguest(&["verify", "attestation", "certs", "report.bin"]);
    drop(kept);
}
