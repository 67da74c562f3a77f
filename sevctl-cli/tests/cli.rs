//! sevctl end to end on the embedded firmware (no root, no daemon): platform commands,
//! launches of the examples, refused attestations, bad manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The suite's shared chip (tests/src/lib.rs, `shared_chip`): one per run, in target/tmp.
fn chip() -> &'static [u8] {
    static CHIP: OnceLock<Vec<u8>> = OnceLock::new();
    CHIP.get_or_init(|| {
        let dir = Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/chip-fixture"));
        let state =
            sevd::state::StateDir::open_waiting(dir, std::time::Duration::from_secs(120)).unwrap();
        state
            .load_or_create_chip((1, 55), None, None)
            .unwrap()
            .encode()
            .to_vec()
    })
}

/// A state directory with a ready chip, so tests need not make RSA keys.
fn state() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chip.bin"), chip()).unwrap();
    dir
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn sevctl(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .arg("--emulated")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run sevctl")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(state: &Path, args: &[&str]) -> String {
    let o = sevctl(state, args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "sevctl {args:?} failed:\n{out}\n{err}");
    out
}

#[test]
fn launches_the_examples_and_the_secrets_arrive() {
    let st = state();
    let out = ok(
        st.path(),
        &["launch", examples().join("sev-es.yaml").to_str().unwrap()],
    );
    assert!(
        out.contains("verify measurement") && out.contains("matches"),
        "{out}"
    );
    // No plaintext of a secret without --show-secrets: each entry's GUID and length.
    assert!(!out.contains("correct horse battery staple"), "{out}");
    assert!(!out.contains("api-token-0123456789"), "{out}");
    assert!(out.contains("bytes, as sent"), "{out}");
    assert!(out.contains("state RUNNING"));
    let shown = ok(
        st.path(),
        &[
            "launch",
            "--show-secrets",
            examples().join("sev-es.yaml").to_str().unwrap(),
        ],
    );
    assert!(
        shown.contains("\"correct horse battery staple\""),
        "{shown}"
    );
    assert!(shown.contains("\"api-token-0123456789\""), "{shown}");
    let out = ok(
        st.path(),
        &["launch", examples().join("sev.yaml").to_str().unwrap()],
    );
    assert!(out.contains("kernel hashes table"), "{out}");

    let json = ok(
        st.path(),
        &[
            "--json",
            "launch",
            examples().join("sev-es.yaml").to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], 3);
    assert_eq!(v["policy"], 0x7);
    let entries = v["secret"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["matches"] == true));
    assert!(entries.iter().all(|e| e.get("data").is_none()));
    assert!(
        v["secret"]["guest_view"].is_null(),
        "no plaintext in --json either"
    );
    assert!(!json.contains(&hex::encode("correct horse battery staple")));
    let json = ok(
        st.path(),
        &[
            "--json",
            "launch",
            "--show-secrets",
            examples().join("sev-es.yaml").to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json.contains(&hex::encode("correct horse battery staple")));
    assert_ne!(v["secret"]["guest_view"], v["secret"]["hypervisor_view"]);
}

/// Copies the example tree so a test can change files in it.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["firmware", "secrets", "kernel"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(examples().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn a_changed_image_is_refused_and_no_secret_is_released() {
    let st = state();
    let ex = example_copy();
    let manifest = ex.path().join("guest.yaml");
    let base = std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap();
    std::fs::write(&manifest, &base).unwrap();
    let json = ok(st.path(), &["--json", "launch", manifest.to_str().unwrap()]);
    let digest = serde_json::from_str::<serde_json::Value>(&json).unwrap()["launch_digest"]
        .as_str()
        .unwrap()
        .to_string();

    // The owner fixes the expected digest; the same image launches.
    std::fs::write(
        &manifest,
        base.replace("measurement: auto", &format!("measurement: {digest}")),
    )
    .unwrap();
    ok(st.path(), &["launch", manifest.to_str().unwrap()]);

    // Then the image changes: refused, exit code 3, no LAUNCH_SECRET.
    let fw = ex.path().join("firmware/OVMF.amdsev.suffix.fd");
    let mut image = std::fs::read(&fw).unwrap();
    image[100] ^= 1;
    std::fs::write(&fw, image).unwrap();
    let o = sevctl(st.path(), &["launch", manifest.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(
        err.contains("does not match") && err.contains("no secret was released"),
        "{err}"
    );
    assert!(err.contains(&digest), "the expected digest is shown: {err}");
    assert!(!out.contains("LAUNCH_SECRET"), "{out}");
}

fn check(manifest: &str) -> (Option<i32>, String) {
    let ex = example_copy();
    let path = ex.path().join("m.yaml");
    std::fs::write(&path, manifest).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .args(["manifest", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    (o.status.code(), text(&o).1)
}

const GOOD: &str = "apiVersion: sevctl/v1
guest:
  memory: 64M
  vcpus: 2
  mode: sev-es
images:
  ovmf: firmware/OVMF.amdsev.suffix.fd
secrets:
  entries:
    - guid: 736869e5-84f0-4973-92ec-06879ce3da0b
      file: secrets/disk-passphrase.txt
";

#[test]
fn bad_manifests_are_refused_with_the_line() {
    assert_eq!(check(GOOD).0, Some(0));
    let cases = [
        (
            "unknown key",
            GOOD.replace("  vcpus: 2", "  vcpus: 2\n  cpus: 4"),
            ":5:",
            "unknown field `cpus`",
        ),
        (
            "wrong type",
            GOOD.replace("vcpus: 2", "vcpus: two"),
            ":4:",
            "invalid",
        ),
        (
            "missing file",
            GOOD.replace("OVMF.amdsev.suffix.fd", "missing.fd"),
            ":7:",
            "no such file",
        ),
        (
            "api version",
            GOOD.replace("sevctl/v1", "sevctl/v9"),
            ":1:",
            "apiVersion",
        ),
        (
            "bad guid",
            GOOD.replace("736869e5-84f0", "736869e5-84fz"),
            ":10:",
            "not a GUID",
        ),
        (
            "bad mode",
            GOOD.replace("sev-es", "tdx"),
            ":5:",
            "expected one of `sev`, `sev-es`, `snp`",
        ),
        ("bad memory", GOOD.replace("64M", "lots"), ":3:", "memory"),
        (
            "kernel alone",
            GOOD.replace(
                "  ovmf: firmware/OVMF.amdsev.suffix.fd",
                "  ovmf: firmware/OVMF.amdsev.suffix.fd\n  kernel: kernel/vmlinuz-demo",
            ),
            ":8:",
            "go together",
        ),
        (
            "raw and flags",
            GOOD.replace(
                "  mode: sev-es",
                "  mode: sev-es\n  policy:\n    raw: 5\n    flags: [nodbg]",
            ),
            ":7:",
            "either raw or flags",
        ),
        (
            "bad digest",
            GOOD.replace("secrets:", "measurement: 1234\nsecrets:"),
            ":8:",
            "64 hex digits",
        ),
        (
            "legacyVmType without a save area",
            GOOD.replace("  mode: sev-es", "  mode: sev\n  legacyVmType: true"),
            ":6:",
            "only for sev-es",
        ),
        (
            "unknown vmm",
            GOOD.replace("  mode: sev-es", "  mode: sev-es\n  vmm: krun"),
            ":6:",
            "`qemu`, `ec2`, `gce`",
        ),
        (
            "unknown vcpuType",
            GOOD.replace("  mode: sev-es", "  mode: sev-es\n  vcpuType: EPYC-Venice"),
            ":6:",
            "EPYC-Rome-v3, EPYC-Milan",
        ),
        (
            "legacyVmType not a bool",
            GOOD.replace("  mode: sev-es", "  mode: sev-es\n  legacyVmType: maybe"),
            ":6:",
            "invalid",
        ),
        ("not yaml", "apiVersion: [".to_string(), ":1:", ""),
        (
            "missing section",
            "apiVersion: sevctl/v1\n".to_string(),
            ":1:",
            "missing field",
        ),
    ];
    for (name, text, line, what) in cases {
        let (code, err) = check(&text);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(line) && err.contains(what), "{name}: {err}");
    }
}

#[test]
fn platform_commands_on_the_embedded_firmware() {
    let st = state();
    let s = st.path();
    assert_eq!(ok(s, &["show", "flags"]).trim(), "es");
    assert_eq!(ok(s, &["show", "guests"]).trim(), "0");
    assert_eq!(ok(s, &["show", "identifier"]).trim().len(), 128);
    assert!(ok(s, &["status"]).contains("embedded firmware"));
    // The embedded platform is a host with SNP enabled, at the default TCB.
    assert_eq!(
        ok(s, &["show", "tcb"]),
        "current:  3:0:8:115\nreported: 3:0:8:115\n"
    );
    assert!(ok(s, &["status"]).contains("snp:        INIT, TCB 3:0:8:115"));
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(s, &["export", "--full", &p("full.cert")]);
    assert_eq!(
        std::fs::read(p("full.cert")).unwrap().len(),
        4 * 0x824 + 2 * 1600
    );
    ok(s, &["verify", "--sev", &p("full.cert")]);
    ok(s, &["export", &p("chain.cert")]);
    ok(
        s,
        &[
            "verify",
            "--sev",
            &p("chain.cert"),
            "--ca",
            s.join("ask_ark.cert").to_str().unwrap(),
        ],
    );
    // A forged chain fails verification with exit code 3.
    let mut forged = std::fs::read(p("chain.cert")).unwrap();
    forged[0x41C + 10] ^= 1; // the PEK's signature on the PDH
    std::fs::write(p("forged.cert"), forged).unwrap();
    let o = sevctl(s, &["verify", "--sev", &p("forged.cert")]);
    assert_eq!(o.status.code(), Some(3));
    // Ownership.
    ok(s, &["generate", &p("oca.cert"), &p("oca.key")]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(p("oca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    ok(s, &["provision", &p("oca.cert"), &p("oca.key")]);
    assert_eq!(
        ok(s, &["show", "flags"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["owned", "es"]
    );
    ok(s, &["export", &p("owned.cert")]);
    assert_eq!(
        std::fs::read(p("owned.cert")).unwrap()[0x824 * 2..0x824 * 3],
        std::fs::read(p("oca.cert")).unwrap()[..]
    );
    ok(
        s,
        &["verify", "--sev", &p("owned.cert"), "--oca", &p("oca.cert")],
    );
    ok(s, &["rotate"]);
    ok(s, &["reset"]);
    assert!(!ok(s, &["show", "flags"]).contains("owned"));
    // A key that is not the OCA's is refused with exit code 2.
    ok(s, &["generate", &p("other.cert"), &p("other.key")]);
    assert_eq!(
        sevctl(s, &["provision", &p("oca.cert"), &p("other.key")])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn session_files_drive_a_launch() {
    let st = state();
    let s = st.path();
    let ex = example_copy();
    let d = ex.path();
    // The platform's PDH, as sevctl export writes it first in the chain.
    ok(s, &["export", d.join("chain.cert").to_str().unwrap()]);
    let chain = std::fs::read(d.join("chain.cert")).unwrap();
    std::fs::write(d.join("pdh.cert"), &chain[..0x824]).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .current_dir(d)
        .args(["session", "--name", "guest", "pdh.cert", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    for f in [
        "guest_godh.b64",
        "guest_session.b64",
        "guest_tek.bin",
        "guest_tik.bin",
    ] {
        assert!(d.join(f).exists(), "{f}");
    }
    let manifest = std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap()
        + "owner:\n  session:\n    godh: guest_godh.b64\n    session: guest_session.b64\n    tek: guest_tek.bin\n    tik: guest_tik.bin\n";
    std::fs::write(d.join("m.yaml"), manifest).unwrap();
    let out = ok(s, &["launch", d.join("m.yaml").to_str().unwrap()]);
    assert!(
        out.contains("from") && out.contains("guest_session.b64") && out.contains("matches"),
        "{out}"
    );
}

#[test]
fn launches_on_debians_ovmf_when_installed() {
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
        let why = "Debian's ovmf package is not installed (scripts/setup.sh installs it)";
        // Under CI and as root the set-up has run: a missing package is a failure.
        let must =
            std::env::var("CI").is_ok_and(|v| v == "true") || nix::unistd::geteuid().is_root();
        assert!(!must, "prerequisite missing: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let st = state();
    let out = ok(
        st.path(),
        &[
            "launch",
            examples().join("debian-ovmf.yaml").to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("matches") && out.contains("28 bytes, as sent"),
        "{out}"
    );
}

#[test]
fn raw_regions_are_loaded_measured_and_encrypted() {
    let st = state();
    let dir = tempfile::tempdir().unwrap();
    // Several of the embedded platform's load pieces, and a tail that is not a block.
    let blob: Vec<u8> = (0..700_001u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("blob.bin"), &blob).unwrap();
    let manifest = "apiVersion: sevctl/v1\nguest:\n  memory: 4M\n  mode: sev\nimages:\n  regions:\n    - address: 0x100000\n      file: blob.bin\nsecrets:\n  placement: 0x10000\n  entries:\n    - guid: 736869e5-84f0-4973-92ec-06879ce3da0b\n      value: hello\n";
    std::fs::write(dir.path().join("m.yaml"), manifest).unwrap();
    let json = ok(
        st.path(),
        &[
            "--json",
            "launch",
            dir.path().join("m.yaml").to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut padded = blob.clone();
    padded.resize(blob.len().div_ceil(16) * 16, 0);
    assert_eq!(
        v["launch_digest"],
        hex::encode(sevd::crypto::sha256(&padded)),
        "the digest covers the region, padded to 16 bytes"
    );
    // A region outside guest memory is refused.
    let outside = manifest.replace("0x100000", "0x400000");
    std::fs::write(dir.path().join("m2.yaml"), outside).unwrap();
    let o = sevctl(
        st.path(),
        &["launch", dir.path().join("m2.yaml").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("outside guest memory"));
}

#[test]
fn keep_holds_the_guest_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let st = state();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .args(["--emulated", "--state-dir"])
        .arg(st.path())
        .args(["launch", "--keep"])
        .arg(examples().join("sev-es.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("guest kept") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "sevctl ended before keeping the guest"
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // The state directory is the kept platform's: another sevctl cannot reach it. That is
    // not a command the platform refused (4) but "anything else" (1).
    let o = sevctl(st.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("in use"), "{}", text(&o).1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let st = state();
    // A device path that is a directory: bad input.
    let o = Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .arg("--device")
        .arg(st.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(text(&o).1.contains("Is a directory"), "{}", text(&o).1);
    // A state directory others may write: bad input, the user must fix it.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        open.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let o = sevctl(open.path(), &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    // Embedded mode always says so on stderr.
    let o = sevctl(st.path(), &["status"]);
    assert!(text(&o).1.contains("embedded firmware"), "{}", text(&o).1);
}

#[test]
fn the_kvm_path_says_what_this_host_lacks() {
    let st = state();
    let o = sevctl(
        st.path(),
        &[
            "launch",
            "--platform",
            "kvm",
            examples().join("sev-es.yaml").to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}\n{err}");
    if Path::new("/dev/kvm").exists() && nix::unistd::geteuid().is_root() {
        // These machines have KVM without SEV: the first refused step is named.
        assert!(
            err.contains("has no SEV")
                && err.contains("KVM_CAP_VM_TYPES")
                && err.contains("KVM_CREATE_VM"),
            "{err}"
        );
    } else {
        assert!(err.contains("KVM"), "{err}");
    }
    assert!(out.is_empty(), "nothing was launched: {out}");
    // The manifest field does the same; a wrong value is refused with its line.
    let ex = example_copy();
    let m = ex.path().join("m.yaml");
    std::fs::write(
        &m,
        std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap() + "platform: kvm\n",
    )
    .unwrap();
    assert_eq!(
        sevctl(st.path(), &["launch", m.to_str().unwrap()])
            .status
            .code(),
        Some(4)
    );
    std::fs::write(
        &m,
        std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap() + "platform: xen\n",
    )
    .unwrap();
    let o = sevctl(st.path(), &["launch", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("expected `sevd` or `kvm`"),
        "{}",
        text(&o).1
    );
}

#[test]
fn manifest_errors_are_where_the_parser_found_the_value() {
    let example = std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap();
    let cases = [
        // The comment on line 2 mentions the word; the value is on line 14.
        (
            example.replace("measurement: auto", "measurement: 1234"),
            ":14:14: measurement: expected auto or 64 hex digits",
        ),
        // A value elsewhere that reads `memory`: the error is at guest.memory.
        (
            example
                .replace("name: demo-sev-es", "name: memory")
                .replace("memory: 64M", "memory: lots"),
            ":6:11: guest.memory: expected bytes",
        ),
        // Sizes no part could address: at the value, with what fits.
        (
            example.replace("memory: 64M", "memory: 200t"),
            ":6:11: guest.memory: 219902325555200 bytes do not fit a guest's 128 TiB of physical addresses",
        ),
        (
            example.replace("memory: 64M", "memory: 2P"),
            ":6:11: guest.memory: expected bytes or a number with K, M, G or T",
        ),
        // A key given twice: at the second one.
        (
            example.replace("  vcpuType: EPYC-v4", "  mode: sev"),
            ":9:3: guest.mode: mode is given twice",
        ),
        (
            example.replace("EPYC-v4", "EPYC-Venice"),
            ":9:13: guest.vcpuType: expected one of EPYC,",
        ),
        (
            example.replace("[nodbg, noks]", "[nodbg, nokeys]"),
            ":11:20: guest.policy.flags.1: unknown flag \"nokeys\" (expected one of nodbg, noks, es, nosend, domain, sev)",
        ),
        // Another version's schema is not judged by this one's.
        (
            example.replace("sevctl/v1", "sevctl/v2").replace("guest:", "vm:"),
            ":3:13: apiVersion: \"sevctl/v2\" is not a version this sevctl reads (it reads \"sevctl/v1\")",
        ),
        (
            example.replace("apiVersion: sevctl/v1\n", ""),
            "apiVersion: missing",
        ),
    ];
    for (text, expected) in cases {
        let (code, err) = check(&text);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
}

#[test]
fn guest_memory_takes_binary_units_in_either_case_up_to_terabytes() {
    let example = std::fs::read_to_string(examples().join("sev-es.yaml")).unwrap();
    for size in ["1t", "1T", "4g", "3584m", "65536K", "1099511627776"] {
        let (code, err) = check(&example.replace("memory: 64M", &format!("memory: {size}")));
        assert_eq!(code, Some(0), "{size}: {err}");
    }
}
