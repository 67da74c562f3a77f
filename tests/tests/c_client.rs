//! A C client compiled against the system's <linux/psp-sev.h> (tests/c/sevclient.c) runs
//! its conformance checks against sevd: length probes, read-only files, bad requests.

use std::process::Command;

use tests::{require_mount, Sevd};

#[test]
fn c_client_conformance_checks_pass() {
    require_mount!();
    let sevd = Sevd::start();
    let client = tests::build_c_client(sevd.dir.path());
    let out = Command::new(&client)
        .arg("check")
        .arg(sevd.node())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "checks failed:\n{text}\n{}",
        sevd.log()
    );
    assert!(text.contains(" passed, 0 failed"));
    let info = Command::new(&client)
        .arg("info")
        .arg(sevd.node())
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("api 1.55 build 25, state 1"), "{info}");
}
