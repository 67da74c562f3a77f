//! The virtee `sev` crate from crates.io, unmodified, manages the platform through sevd's
//! drop-in /dev/sev (the crate opens that path and no other).

use sev::certs::sev::sev::Usage;
use sev::certs::sev::{ca, sev as sevcert, Chain, Signer, Verifiable};
use sev::firmware::host::{Firmware, PlatformStatusFlags, State};
use sev::parser::{Decoder, Encoder};
use tests::{require_mount, Options, Sevd};

fn encode<T: Encoder<()>>(v: &T) -> Vec<u8> {
    let mut out = vec![];
    v.encode(&mut out, ()).unwrap();
    out
}

fn full_chain(sevd: &Sevd, platform: sevcert::Chain) -> Chain {
    let ask_ark = std::fs::read(sevd.state_dir.join("ask_ark.cert")).unwrap();
    let ca = ca::Chain::decode(&mut &ask_ark[..], ()).unwrap();
    Chain { ca, sev: platform }
}

#[test]
fn sev_crate_drives_every_platform_command() {
    require_mount!();
    let _dev_sev = tests::own_dev_sev!();
    let sevd = Sevd::start_with(Options {
        link: Some("/dev/sev".into()),
        ..Options::default()
    });
    let mut fw = Firmware::open().expect("open /dev/sev");

    let status = fw.platform_status().unwrap();
    assert_eq!(
        (
            status.build.version.major,
            status.build.version.minor,
            status.build.build
        ),
        (1, 55, 25)
    );
    assert_eq!(status.state, State::Initialized);
    assert!(status.flags.contains(PlatformStatusFlags::ENCRYPTED_STATE));
    assert!(!status.flags.contains(PlatformStatusFlags::OWNED));
    assert_eq!(status.guests, 0);

    let id = fw.get_identifier().unwrap();
    assert_eq!(Vec::<u8>::from(id).len(), 64);

    // The exported chain verifies from the firmware's own ARK down to the PDH.
    let first = fw.pdh_cert_export().unwrap();
    let first_bytes = encode(&first);
    (&full_chain(&sevd, first))
        .verify()
        .expect("chain verifies");

    // PDH_GEN: only the PDH changes.
    fw.pdh_generate().unwrap();
    let second = fw.pdh_cert_export().unwrap();
    let second_bytes = encode(&second);
    assert_eq!(first_bytes[0x824..], second_bytes[0x824..]);
    assert_ne!(first_bytes[..0x824], second_bytes[..0x824]);
    (&full_chain(&sevd, second)).verify().unwrap();

    // PEK_GEN: new OCA and PEK.
    fw.pek_generate().unwrap();
    let third = encode(&fw.pdh_cert_export().unwrap());
    assert_ne!(third[0x824..0x824 * 3], second_bytes[0x824..0x824 * 3]);

    // Take ownership with an OCA the crate makes, as sevctl provision does.
    let (mut oca, oca_key) = sevcert::Certificate::generate(Usage::OCA).unwrap();
    oca_key.sign(&mut oca).unwrap();
    let mut pek = fw.pek_csr().unwrap();
    oca_key.sign(&mut pek).unwrap();
    fw.pek_cert_import(&pek, &oca).unwrap();
    let status = fw.platform_status().unwrap();
    assert!(status.flags.contains(PlatformStatusFlags::OWNED));
    let owned = fw.pdh_cert_export().unwrap();
    assert_eq!(encode(&owned.oca), encode(&oca));
    (&full_chain(&sevd, owned))
        .verify()
        .expect("owned chain verifies");

    // A second import is refused with the firmware's ALREADY_OWNED.
    let err = fw.pek_cert_import(&pek, &oca).unwrap_err();
    assert!(
        format!("{err:?}").contains("AlreadyOwned") || format!("{err}").contains("owned"),
        "{err:?}"
    );

    // Factory reset: self-owned again with new keys.
    fw.platform_reset().unwrap();
    let status = fw.platform_status().unwrap();
    assert_eq!(status.state, State::Uninitialized);
    fw.pdh_generate().unwrap(); // implicit INIT
    let status = fw.platform_status().unwrap();
    assert_eq!(status.state, State::Initialized);
    assert!(!status.flags.contains(PlatformStatusFlags::OWNED));
    let fresh = fw.pdh_cert_export().unwrap();
    assert_ne!(encode(&fresh.oca), encode(&oca));
    (&full_chain(&sevd, fresh)).verify().unwrap();
    drop(fw);
    drop(sevd);
    assert!(
        !std::path::Path::new("/dev/sev").exists(),
        "the placeholder is removed"
    );
}

/// The VCEK in the state directory (PEM and DER) and beside the nodes (DER) is the one for
/// `reported`, and chains to the published ARK and ASK.
fn assert_vcek_published(sevd: &Sevd, reported: &str) {
    use sevd::certs::x509;
    let want: uapi::snp::TcbVersion = reported.parse().unwrap();
    let read = |p: std::path::PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let served = read(sevd.mountpoint.join("vcek.der"));
    assert_eq!(served, read(sevd.state_dir.join("vcek.der")));
    let pem = String::from_utf8(read(sevd.state_dir.join("vcek.pem"))).unwrap();
    let vcek = x509::from_der(&served).unwrap();
    assert_eq!(x509::to_pem(&vcek).unwrap(), pem);
    assert_eq!(x509::vcek_tcb(&vcek), Some(want));
    let ask = x509::from_der(&read(sevd.mountpoint.join("ask.der"))).unwrap();
    x509::verify(&ask, &vcek, "VCEK").expect("the ASK signs the new VCEK");
}

fn tcb(fmc: Option<u8>, bl: u8, tee: u8, snp: u8, ucode: u8) -> sev::firmware::host::TcbVersion {
    sev::firmware::host::TcbVersion::new(fmc, bl, tee, snp, ucode)
}

/// The variable that tells this test's binary, run again under `sevctl exec`, which phase of
/// the SNP host test to run.
const SNP_PHASE: &str = "SEV_CRATE_SNP_PHASE";

/// Runs `phase` of the SNP host test in a process of its own under `sevctl exec`, which
/// shows the crate the daemon's emulated part: the crate picks the TCB layout from CPUID
/// 0x8000_0001 before it decodes SNP_PLATFORM_STATUS, and gives up on a host that is not an
/// EPYC of an SNP generation.
fn snp_phase_under_exec(sevd: &Sevd, phase: &str) {
    let out = tests::shown(
        std::process::Command::new(tests::sevd_bin().with_file_name("sevctl"))
            .args(["--device", &sevd.node().display().to_string(), "exec", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sev_crate_drives_the_snp_host_commands",
                "--nocapture",
            ])
            .env(SNP_PHASE, phase),
    );
    assert!(out.status.success(), "phase {phase} under sevctl exec");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("test result: ok. 1 passed"),
        "phase {phase} ran"
    );
}

/// One phase, on `/dev/sev` as the crate opens it (the daemon's node, in the namespace of
/// `sevctl exec`).
fn snp_phase(phase: &str) {
    use sev::firmware::host::{Config, MaskId};
    let mut fw = Firmware::open().expect("open /dev/sev");
    match phase {
        "fresh" => {
            let status = fw.snp_platform_status().expect("SNP_PLATFORM_STATUS");
            assert_eq!(
                (status.version, status.state, status.build_id),
                ((1, 55), 1, 25)
            );
            assert_eq!(status.guest_count, 0);
            assert_eq!(status.platform_tcb_version, tcb(None, 3, 0, 8, 115));
            assert_eq!(status.reported_tcb_version, tcb(None, 3, 0, 8, 115));
            // SEV came up too, after SNP.
            assert_eq!(fw.platform_status().unwrap().state, State::Initialized);
            // A lower reported TCB with the chip id masked; the crate's own bad configuration
            // gets the firmware's INVALID_PARAM (virtee's test_host_fw_error).
            fw.snp_set_config(Config::new(tcb(None, 3, 0, 8, 100), MaskId(1)))
                .expect("SNP_SET_CONFIG");
            let status = fw.snp_platform_status().unwrap();
            assert_eq!(status.reported_tcb_version, tcb(None, 3, 0, 8, 100));
            let err = fw
                .snp_set_config(Config::new(tcb(None, 100, 100, 100, 100), MaskId(31)))
                .unwrap_err();
            assert!(
                format!("{err}").contains("0x16: Given parameter is invalid"),
                "{err}"
            );
        }
        // A firmware and microcode update: current moves, reported stays until SNP_COMMIT.
        "update" => {
            let status = fw.snp_platform_status().unwrap();
            assert_eq!(status.platform_tcb_version, tcb(None, 3, 0, 9, 120));
            assert_eq!(status.reported_tcb_version, tcb(None, 3, 0, 8, 100));
            fw.snp_commit().expect("SNP_COMMIT");
            let status = fw.snp_platform_status().unwrap();
            assert_eq!(status.reported_tcb_version, tcb(None, 3, 0, 9, 120));
        }
        // Rolled back below the committed TCB: SNP did not start, SEV did.
        "rollback" => {
            assert!(fw.snp_platform_status().is_err());
            assert_eq!(fw.platform_status().unwrap().state, State::Initialized);
        }
        other => panic!("{SNP_PHASE}={other}: no such phase"),
    }
}

#[test]
fn sev_crate_drives_the_snp_host_commands() {
    if let Ok(phase) = std::env::var(SNP_PHASE) {
        return snp_phase(&phase);
    }
    require_mount!();
    let snp = |tcb: &str| ["--snp", "--snp-tcb", tcb].map(String::from).to_vec();
    let mut sevd = Sevd::start_with(Options {
        args: snp("3:0:8:115"),
        ..Options::default()
    });
    snp_phase_under_exec(&sevd, "fresh");
    assert_vcek_published(&sevd, "3:0:8:100");
    sevd.terminate();
    sevd.restart(&snp("3:0:9:120"));
    snp_phase_under_exec(&sevd, "update");
    assert_vcek_published(&sevd, "3:0:9:120");
    sevd.terminate();
    sevd.restart(&snp("3:0:8:115"));
    snp_phase_under_exec(&sevd, "rollback");
    assert!(
        sevd.log().contains("below the committed TCB"),
        "{}",
        sevd.log()
    );
}

/// The source of the `sev` crate this workspace locks, as cargo unpacked it.
fn sev_crate_source() -> std::path::PathBuf {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"sev\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .expect("sev in Cargo.lock")
        .to_string();
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
    std::fs::read_dir(home.join("registry/src"))
        .expect("cargo's registry sources")
        .flatten()
        .map(|d| d.path().join(format!("sev-{version}")))
        .find(|p| p.join("tests/api.rs").exists())
        .expect("the sev crate's unpacked source")
}

/// The crate's own host tests (its tests/api.rs, unmodified), built and run under
/// `sevctl exec` against a daemon with SNP. Its build script turns them on only where
/// /dev/sev exists, and its SNP ones decode by the CPU's generation: both are what
/// `sevctl exec` shows it. The tests it calls dangerous (resets, PEK/PDH generation,
/// SNP_COMMIT, SNP_SET_CONFIG and the firmware's refusal of a bad TCB) are dangerous
/// to a real part only: this one is the test's own. Only those needing its `openssl`
/// feature (a vendored OpenSSL build) stay off; other tests here cover that export.
#[test]
fn the_sev_crates_own_host_tests_pass_under_sevctl_exec() {
    require_mount!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sev");
    tests::succeeds(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(sev_crate_source())
            .arg(&src),
    );
    // Its own workspace root: the copy may lie inside this one (the suite's TMPDIR is under
    // target/), where cargo would take it for a member. Its code and tests stay as shipped.
    let manifest = src.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text + "\n[workspace]\n").unwrap();
    let sevd = Sevd::start_with(Options {
        args: vec!["--snp".into()],
        ..Options::default()
    });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Kept between runs (it builds the crate and its test dependencies once).
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/sev-crate-tests");
    let out = tests::shown(
        std::process::Command::new(tests::sevd_bin().with_file_name("sevctl"))
            .args(["--device", &sevd.node().display().to_string(), "exec", "--"])
            .arg(cargo)
            .args(["test", "--test", "api", "--features", "dangerous_hw_tests"])
            .args(["--", "--test-threads=1"])
            .env("CARGO_TARGET_DIR", target)
            // Where its resets remove a cached chain: never the user's own.
            .env("SEV_CHAIN", dir.path().join("chain"))
            .current_dir(&src),
    );
    assert!(out.status.success(), "the sev crate's tests/api.rs");
    let text = String::from_utf8_lossy(&out.stdout);
    // Ignored would mean its build script saw no /dev/sev.
    assert!(text.contains(" 0 ignored;"), "none of them ignored");
    for t in [
        "sev::platform_reset",
        "sev::platform_status",
        "sev::pek_generate",
        "sev::pek_csr",
        "sev::pdh_generate",
        "sev::get_identifier",
        "snp::get_identifier",
        "snp::platform_status",
        "snp::commit_snp",
        "snp::set_config_generation",
        "snp::test_host_fw_error",
    ] {
        assert!(
            text.contains(&format!("test {t} ... ok")),
            "{t} ran and passed"
        );
    }
}
