//! Guests of real sizes: 4 GiB, 64 GiB and 1 TiB guests of SEV, SEV-ES and SEV-SNP launch
//! embedded and through the daemon with the digests of their small selves, and 64 GiB ones
//! migrate between daemons, all in little memory: guest RAM is reserved, not committed, and
//! a migration moves only the pages the guest touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tests::{example_sized as sized, measured, require_mount, vm_hwm_kib as peak_rss, Sevd};

/// The most a sevctl or sevd may hold resident (peak) for guests of any size.
const RSS_LIMIT_KIB: u64 = 256 * 1024;

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("a JSON report")
}

/// The embedded platform's flags, on the suite's shared chip and key server.
fn embedded(dir: &Path) -> Vec<String> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
    std::fs::write(state.join(sevd::paths::KDS_FILE), tests::shared_kds()).unwrap();
    vec![
        "--emulated".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ]
}

/// Launches each example at 64M (as a reference) and at 4G, 64G and 1T on `platform`: every
/// launch succeeds, its digest that of the small guest, and none holds more than
/// [`RSS_LIMIT_KIB`] resident.
fn launches_of_every_size(dir: &Path, platform: &[String]) {
    for example in ["sev.yaml", "sev-es.yaml", "snp.yaml"] {
        let mut digest = None;
        for memory in ["64M", "4G", "64G", "1T"] {
            let m = sized(dir, example, memory);
            let (o, rss) = measured(
                Command::new(sevctl())
                    .args(platform)
                    .args(["--json", "launch"])
                    .arg(&m),
            );
            assert!(o.status.success(), "{example} with {memory}");
            // The launch itself checked the firmware's measurement against the owner's
            // digest (`measurement: auto`); SNP's is the digest itself.
            let r = json(&o);
            if example == "snp.yaml" {
                assert_eq!(r["measurement"], r["launch_digest"], "{memory}");
            }
            let d = digest.get_or_insert_with(|| r["launch_digest"].clone());
            assert_eq!(
                &r["launch_digest"], d,
                "{example}: {memory} of RAM measures as 64M does"
            );
            eprintln!("{example} {memory}: peak RSS {rss} KiB");
            assert!(
                rss <= RSS_LIMIT_KIB,
                "{example} with {memory}: sevctl's peak RSS {rss} KiB"
            );
        }
    }
}

#[test]
fn guests_of_4g_64g_and_1t_launch_embedded_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let platform = embedded(dir.path());
    launches_of_every_size(dir.path(), &platform);
}

#[test]
fn guests_of_4g_64g_and_1t_launch_through_the_daemon_in_little_memory() {
    require_mount!();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..tests::Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let platform = ["--device".to_string(), sevd.node().display().to_string()];
    launches_of_every_size(dir.path(), &platform);
    let rss = peak_rss(sevd.pid());
    eprintln!("sevd: peak RSS {rss} KiB");
    assert!(rss <= RSS_LIMIT_KIB, "sevd's peak RSS {rss} KiB");
}

/// Moves `example` with 64 GiB of RAM from `from` to `to`: both sides succeed, the guest
/// reads its secret there, only the pages it touched move, and neither sevctl holds more
/// than [`RSS_LIMIT_KIB`].
fn a_64g_guest_moves(dir: &Path, from: &Sevd, to: &Sevd, example: &str) {
    let sock = dir.join(format!("{example}.sock"));
    let m = sized(dir, example, "64G");
    let node = |d: &Sevd| d.node().display().to_string();
    let rx_node = node(to);
    let rx_sock = sock.clone();
    let receiver = std::thread::spawn(move || {
        measured(
            Command::new(sevctl())
                .args(["--device", &rx_node, "receive", "--listen"])
                .arg(format!("unix:{}", rx_sock.display()))
                .args(["--json", "--show-secrets", "--timeout", "60"]),
        )
    });
    tests::wait_for_path(&sock, "receive never listened");
    let (sent, send_rss) = measured(
        Command::new(sevctl())
            .args(["--device", &node(from), "launch"])
            .arg(&m)
            .args(["--json", "--migrate-to"])
            .arg(format!("unix:{}", sock.display())),
    );
    let (received, receive_rss) = receiver.join().unwrap();
    assert!(sent.status.success(), "{example}: launch --migrate-to");
    assert!(received.status.success(), "{example}: receive");
    let (s, r) = (json(&sent), json(&received));
    assert_eq!(
        (&s["state"], &r["state"]),
        (&6.into(), &3.into()),
        "SENT, RUNNING"
    );
    assert_eq!(s["migration"]["pages"], r["pages"]);
    let pages = r["pages"].as_u64().unwrap();
    assert!(
        pages < (256 << 20) / 4096,
        "{pages} pages moved of a 64 GiB guest"
    );
    let passphrase = std::fs::read(examples().join("secrets/disk-passphrase.txt")).unwrap();
    assert_eq!(
        r["secret"]["entries"][0]["data"],
        hex::encode(passphrase),
        "{example}: the guest reads its secret there"
    );
    eprintln!(
        "{example}: {pages} pages; peak RSS {send_rss} KiB sending, {receive_rss} KiB receiving"
    );
    assert!(
        send_rss <= RSS_LIMIT_KIB,
        "the sender's peak RSS {send_rss} KiB"
    );
    assert!(
        receive_rss <= RSS_LIMIT_KIB,
        "the receiver's peak RSS {receive_rss} KiB"
    );
}

#[test]
fn guests_of_64g_move_between_daemons_in_little_memory() {
    require_mount!();
    let (a, b) = (Sevd::start(), Sevd::start());
    let dir = tempfile::tempdir().unwrap();
    a_64g_guest_moves(dir.path(), &a, &b, "sev.yaml");
    a_64g_guest_moves(dir.path(), &b, &a, "sev-es.yaml");
    for d in [&a, &b] {
        let rss = peak_rss(d.pid());
        assert!(rss <= RSS_LIMIT_KIB, "sevd's peak RSS {rss} KiB");
    }
}
