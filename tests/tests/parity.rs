//! Our sevctl's `validate`, `ok` and `-q/--quiet` beside virtee sevctl 0.6.2's (SEVCTL_BIN,
//! installed by scripts/test.sh): virtee's `validate` accepts the ATTESTATION reports
//! `launch --attestation-report` writes, ours refuses a flipped byte and another platform's
//! chain, and `ok` prints virtee's lines, then names the platforms guests can use here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tests::Sevd;

fn ours() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn run(bin: &Path, args: &[&str]) -> Output {
    tests::shown(Command::new(bin).args(args))
}

/// An embedded platform's state directory on the suite's shared chip.
fn embedded(root: &Path, name: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
    std::fs::write(dir.join(sevd::paths::KDS_FILE), tests::shared_kds()).unwrap();
    dir.display().to_string()
}

/// Launches the SEV example with a report; returns the launch's JSON report.
fn launch_with_report(platform: &[&str], report: &Path) -> Value {
    let manifest = examples().join("sev.yaml");
    let mut args = platform.to_vec();
    let (m, r) = (manifest.display().to_string(), report.display().to_string());
    args.extend(["launch", &m, "--attestation-report", &r, "--json"]);
    let o = run(&ours(), &args);
    assert!(o.status.success(), "launch --attestation-report failed");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn export(platform: &[&str], file: &Path) {
    let mut args = platform.to_vec();
    let f = file.display().to_string();
    args.extend(["export", &f]);
    assert!(run(&ours(), &args).status.success());
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn virtee_validate_accepts_our_reports_and_ours_refuses_tampered_ones() {
    let virtee = tests::require_sevctl!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = embedded(d, "a");
    let platform = ["--emulated", "--state-dir", &state];
    let report = d.join("report.bin");
    let launched = launch_with_report(&platform, &report);
    let att = &launched["attestation"];
    assert_eq!(
        att["mnonce"].as_str().unwrap().len(),
        32,
        "the MNONCE in --json"
    );
    assert_eq!(std::fs::read(&report).unwrap().len(), 208);
    let chain = d.join("chain.cert");
    export(&platform, &chain);
    let (c, r) = (chain.display().to_string(), report.display().to_string());

    // virtee's own validate accepts it, and so does ours, with the digest and the policy.
    assert!(
        run(&virtee, &["validate", &c, &r]).status.success(),
        "virtee validate"
    );
    let digest = launched["launch_digest"].as_str().unwrap();
    let o = run(
        &ours(),
        &[
            "validate",
            &c,
            &r,
            "--measurement",
            digest,
            "--policy",
            "0x1",
        ],
    );
    assert!(o.status.success());
    let o = run(&ours(), &["validate", &c, &r, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["mnonce"].as_str()),
        (Some(true), att["mnonce"].as_str())
    );

    // Another policy or digest than the report carries: refused (3), as a launch refuses.
    let o = run(&ours(), &["validate", &c, &r, "--policy", "0x3"]);
    assert_eq!(code(&o), Some(3));
    let o = run(
        &ours(),
        &["validate", &c, &r, "--measurement", &"00".repeat(32)],
    );
    assert_eq!(code(&o), Some(3));

    // One flipped byte anywhere it matters: both refuse.
    for at in [0usize, 20, 48, 64, 150] {
        let mut bytes = std::fs::read(&report).unwrap();
        bytes[at] ^= 0x01;
        let f = d.join(format!("flipped-{at}.bin"));
        std::fs::write(&f, &bytes).unwrap();
        let f = f.display().to_string();
        assert_eq!(
            code(&run(&ours(), &["validate", &c, &f])),
            Some(3),
            "byte {at}"
        );
        assert!(
            !run(&virtee, &["validate", &c, &f]).status.success(),
            "virtee, byte {at}"
        );
    }

    // Another platform's chain: its PEK did not sign this report.
    let other = embedded(d, "b");
    let other_chain = d.join("other.cert");
    export(&["--emulated", "--state-dir", &other], &other_chain);
    let oc = other_chain.display().to_string();
    let o = run(&ours(), &["validate", &oc, &r]);
    assert_eq!(code(&o), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not sign"));
    assert!(!run(&virtee, &["validate", &oc, &r]).status.success());

    // Files that are not what they should be: bad input (2), never a panic.
    let short = d.join("short.bin");
    std::fs::write(&short, [0u8; 207]).unwrap();
    let o = run(&ours(), &["validate", &c, &short.display().to_string()]);
    assert_eq!(code(&o), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("207 bytes"));
    let garbage = d.join("garbage.cert");
    std::fs::write(&garbage, vec![0xffu8; 4 * 0x824]).unwrap();
    let o = run(&ours(), &["validate", &garbage.display().to_string(), &r]);
    assert_eq!(code(&o), Some(2));
    let o = run(&ours(), &["validate", &c, "/nonexistent/report.bin"]);
    assert_eq!(code(&o), Some(2));
    let o = run(&ours(), &["validate", &c, &r, "--measurement", "xyz"]);
    assert_eq!(code(&o), Some(2));
}

#[test]
fn a_daemons_guest_gets_its_report_through_the_node() {
    tests::require_mount!();
    let virtee = tests::require_sevctl!();
    let sevd = Sevd::start();
    let node = sevd.node().display().to_string();
    let platform = ["--device", &node];
    let report = sevd.dir.path().join("report.bin");
    launch_with_report(&platform, &report);
    let chain = sevd.dir.path().join("chain.cert");
    export(&platform, &chain);
    let (c, r) = (chain.display().to_string(), report.display().to_string());
    assert!(run(&virtee, &["validate", &c, &r]).status.success());
    assert!(run(&ours(), &["validate", &c, &r]).status.success());
}

/// Lines without their colour codes.
fn plain(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut lines = vec![];
    for line in text.lines() {
        let mut s = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                s.push(c);
            }
        }
        lines.push(s);
    }
    lines
}

#[test]
fn ok_prints_virtees_lines_and_then_where_guests_can_run() {
    let virtee = tests::require_sevctl!();
    let dir = tempfile::tempdir().unwrap();
    let state = embedded(dir.path(), "ok");
    for gen in [None, Some("sev"), Some("es"), Some("snp")] {
        let mut args = vec!["ok"];
        args.extend(gen);
        let theirs = run(&virtee, &args);
        let mut our_args = vec!["--state-dir", &state, "ok"];
        our_args.extend(gen);
        let mine = run(&ours(), &our_args);
        let (t, m) = (plain(&theirs.stdout), plain(&mine.stdout));
        assert_eq!(m[..t.len()], t[..], "virtee's lines, for {gen:?}");
        assert_eq!(
            mine.status.success(),
            theirs.status.success(),
            "the exit rule, for {gen:?}"
        );
        let rest = m[t.len()..].join("\n");
        assert!(
            rest.contains("Embedded firmware: built in (sevctl --emulated)"),
            "{rest}"
        );
        assert!(
            rest.contains("Guests on sevd (--device or --emulated)"),
            "{rest}"
        );
        assert!(
            rest.contains("Guests through KVM (--platform kvm)"),
            "{rest}"
        );
    }
    // --json, and -q: nothing printed, the same exit code.
    let j = run(&ours(), &["--state-dir", &state, "ok", "--json"]);
    let v: Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(v["ok"].as_bool(), Some(j.status.success()));
    let q = run(&ours(), &["--state-dir", &state, "-q", "ok"]);
    assert!(q.stdout.is_empty());
    assert_eq!(q.status.code(), j.status.code());
}

#[test]
fn ok_names_a_sevd_drop_in_and_its_backend() {
    tests::require_mount!();
    let sevd = Sevd::start();
    let node = sevd.node().display().to_string();
    let o = run(&ours(), &["--device", &node, "ok"]);
    let text = plain(&o.stdout).join("\n");
    assert!(
        text.contains(&format!(
            "- {node}: a sevd drop-in; behind it: the software firmware"
        )),
        "{text}"
    );
    assert!(text.contains("  - readable"), "{text}");
}

#[test]
fn quiet_leaves_only_errors_and_requested_data() {
    let dir = tempfile::tempdir().unwrap();
    let state = embedded(dir.path(), "q");
    let manifest = examples().join("sev.yaml").display().to_string();
    let ours_on_state = |args: &[&str]| {
        let mut all = vec!["--emulated", "--state-dir", &state];
        all.extend_from_slice(args);
        run(&ours(), &all)
    };
    let o = ours_on_state(&["-q", "launch", &manifest]);
    assert!(o.status.success());
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "nothing but errors"
    );
    let o = ours_on_state(&["--quiet", "show", "guests"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "requested data stays"
    );
    assert!(o.stderr.is_empty());
    let o = ours_on_state(&["-q", "launch", "/nonexistent.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!o.stderr.is_empty(), "errors stay");
}
