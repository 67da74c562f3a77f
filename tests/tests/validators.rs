//! Guest owners verify our launches with the validators of both worlds, for random inputs
//! made here (firmware, kernel, initrd, command line, vCPUs, CPU model), on the embedded
//! firmware and through the daemon:
//! - under KVM_SEV_INIT2 (the default), the launch digest `sevctl launch --json` reports is
//!   what `sev-snp-measure --mode sev|seves` computes for the same inputs (QEMU 9.1+ on a
//!   current kernel);
//! - under the legacy init (`legacyVmType: true`), libvirt's `virt-qemu-sev-validate`
//!   accepts the measurement, given the session's TIK and TEK and the firmware's version.
//!
//! Each run prints its seed; `VALIDATORS_SEED=N` repeats one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::{require_mount, require_validators, seed, Rng, Sevd};

const AMDSEV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/firmware/OVMF.amdsev.suffix.fd"
);
/// Debian's OVMF (package `ovmf`, installed by scripts/setup.sh): no hashes table, so no
/// kernel with it.
const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// CPU models tried, each with CPUID 1's family, model and stepping.
const CPUS: &[(&str, (u32, u32, u32))] = &[
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// One guest to launch.
#[derive(Debug)]
struct Case {
    es: bool,
    legacy: bool,
    firmware: &'static str,
    /// Kernel, initrd and command line, measured through the hashes table.
    kernel: Option<(PathBuf, PathBuf, String)>,
    vcpus: u32,
    cpu: (&'static str, (u32, u32, u32)),
    /// The VMM whose reset state the save areas hold (sev-snp-measure's name).
    vmm: &'static str,
    /// Guest RAM: a guest's size changes nothing the validators measure.
    memory: &'static str,
}

/// Guest sizes the cases take turns with: split around the PCI hole, large, very large.
const MEMORY: &[&str] = &["4G", "64G", "1T"];

fn cases(rng: &mut Rng, dir: &Path) -> Vec<Case> {
    let mut out = vec![];
    for i in 0..8 {
        let es = i % 4 != 0;
        // The legacy world for half the SEV-ES guests; a plain SEV guest measures alike in
        // both, so virt-qemu-sev-validate checks it as launched.
        let legacy = es && i % 2 == 1;
        let firmware = if i % 3 == 2 { DEBIAN_OVMF } else { AMDSEV };
        let kernel = (firmware == AMDSEV && rng.below(2) == 0).then(|| {
            let k = dir.join(format!("vmlinuz-{i}"));
            let r = dir.join(format!("initrd-{i}"));
            let (kn, rn) = (1000 + rng.below(300_000), rng.below(200_000));
            std::fs::write(&k, rng.bytes(kn as usize)).unwrap();
            std::fs::write(&r, rng.bytes(rn as usize)).unwrap();
            let cmdline = format!("console=ttyS0 root=/dev/vda{} quiet", rng.below(100));
            (k, r, cmdline)
        });
        let vcpus = if es { 1 + rng.below(8) as u32 } else { 1 };
        // Each model in turn, so every run tries several.
        let cpu = CPUS[(i + rng.below(2) as usize) % CPUS.len()];
        // libvirt's validator knows QEMU's reset state only.
        let vmm = match (legacy, rng.below(3)) {
            (false, 1) => "ec2",
            (false, 2) => "gce",
            _ => "QEMU",
        };
        out.push(Case {
            memory: MEMORY[i % MEMORY.len()],
            vmm,
            es,
            legacy,
            firmware,
            kernel,
            vcpus,
            cpu,
        });
    }
    out
}

fn run(cmd: &mut Command) -> Output {
    tests::succeeds(cmd)
}

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

/// Writes case `i`'s manifest into `dir` with session files made by `sevctl session` for
/// the platform's PDH (`platform` = the global arguments choosing it).
fn manifest(dir: &Path, i: usize, c: &Case, platform: &[String]) -> PathBuf {
    let chain = dir.join(format!("chain-{i}.cert"));
    run(Command::new(sevctl())
        .args(platform)
        .arg("export")
        .arg(&chain));
    let pdh = dir.join(format!("pdh-{i}.cert"));
    std::fs::write(&pdh, &std::fs::read(&chain).unwrap()[..2084]).unwrap();
    let policy = if c.es { 0x5 } else { 0x1 };
    run(Command::new(sevctl())
        .current_dir(dir)
        .args(["session", "--name", &format!("s{i}")])
        .arg(&pdh)
        .arg(policy.to_string()));
    let mut m = format!(
        "apiVersion: sevctl/v1\nguest:\n  memory: {}\n  vcpus: {}\n  mode: {}\n  vcpuType: {}\n",
        c.memory,
        c.vcpus,
        if c.es { "sev-es" } else { "sev" },
        c.cpu.0
    );
    if c.es {
        m += &format!("  legacyVmType: {}\n", c.legacy);
    }
    m += &format!("  vmm: {}\n", c.vmm.to_ascii_lowercase());
    m += &format!(
        "  policy:\n    raw: {policy}\nimages:\n  ovmf: {}\n",
        c.firmware
    );
    if let Some((k, r, cmdline)) = &c.kernel {
        m += &format!(
            "  kernel: {}\n  initrd: {}\n  cmdline: \"{cmdline}\"\n",
            k.display(),
            r.display()
        );
    }
    m += &format!("owner:\n  session:\n    godh: s{i}_godh.b64\n    session: s{i}_session.b64\n    tek: s{i}_tek.bin\n    tik: s{i}_tik.bin\n");
    let path = dir.join(format!("m{i}.yaml"));
    std::fs::write(&path, m).unwrap();
    path
}

/// Launches case `i` and checks it with the validator of its world.
fn check(dir: &Path, i: usize, c: &Case, platform: &[String], launch_extra: &[String]) {
    let (snp_measure, legacy_validate) = tests::validators().unwrap();
    let m = manifest(dir, i, c, platform);
    let out = run(Command::new(sevctl())
        .args(platform)
        .arg("--json")
        .arg("launch")
        .arg(&m)
        .args(launch_extra));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = v["launch_digest"].as_str().unwrap().to_string();
    let measurement = v["measurement"].as_str().unwrap().to_string();

    if !c.legacy {
        let mut cmd = Command::new(&snp_measure);
        cmd.args(["--mode", if c.es { "seves" } else { "sev" }])
            .args(["--ovmf", c.firmware, "--output-format", "hex"]);
        if c.es {
            cmd.args(["--vcpus", &c.vcpus.to_string(), "--vcpu-type", c.cpu.0])
                .args(["--vmm-type", c.vmm]);
        }
        if let Some((k, r, cmdline)) = &c.kernel {
            cmd.arg("--kernel").arg(k).arg("--initrd").arg(r);
            cmd.args(["--append", cmdline]);
        }
        let expected = String::from_utf8(run(&mut cmd).stdout).unwrap();
        eprintln!(
            "case {i} {c:?}: ours {digest}, sev-snp-measure {}",
            expected.trim()
        );
        assert_eq!(digest, expected.trim(), "case {i}: {c:?}");
    }
    if c.legacy || !c.es {
        let status = run(Command::new(sevctl())
            .args(platform)
            .args(["--json", "status"]));
        let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let (major, minor) = st["api"].as_str().unwrap().split_once('.').unwrap();
        let b64 = base64_of(&hex::decode(&measurement).unwrap());
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(&legacy_validate)
            .args([
                "--measurement",
                &b64,
                "--api-major",
                major,
                "--api-minor",
                minor,
            ])
            .args(["--build-id", &st["build"].to_string()])
            .args(["--policy", &v["policy"].as_u64().unwrap().to_string()])
            .args(["--firmware", c.firmware])
            .arg("--tik")
            .arg(dir.join(format!("s{i}_tik.bin")))
            .arg("--tek")
            .arg(dir.join(format!("s{i}_tek.bin")));
        if c.es {
            let (f, mo, s) = c.cpu.1;
            cmd.args(["--num-cpus", &c.vcpus.to_string()])
                .args([
                    "--cpu-family",
                    &f.to_string(),
                    "--cpu-model",
                    &mo.to_string(),
                ])
                .args(["--cpu-stepping", &s.to_string()]);
        }
        if let Some((k, r, cmdline)) = &c.kernel {
            cmd.arg("--kernel").arg(k).arg("--initrd").arg(r);
            cmd.args(["--cmdline", cmdline]);
        }
        let said = run(&mut cmd);
        let said = String::from_utf8_lossy(&said.stdout);
        eprintln!(
            "case {i} {c:?}: digest {digest}; virt-qemu-sev-validate: {}",
            said.trim()
        );
        assert!(said.contains("OK"), "case {i}: {said}");
        // The validator is not a formality: one flipped bit of the measure is refused.
        let mut tampered = hex::decode(&measurement).unwrap();
        tampered[i % 32] ^= 1;
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let at = args.iter().position(|a| a == "--measurement").unwrap() + 1;
        let mut again = Command::new("/usr/bin/python3");
        for (n, a) in args.iter().enumerate() {
            if n == at {
                again.arg(base64_of(&tampered));
            } else {
                again.arg(a);
            }
        }
        let refused = again.output().unwrap();
        assert!(
            !refused.status.success(),
            "case {i}: a tampered measure was accepted"
        );
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn both_worlds_validate_embedded_launches() {
    require_validators!();
    if !Path::new(DEBIAN_OVMF).exists() {
        tests::missing!("Debian's OVMF (package ovmf) is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("chip.bin"), tests::shared_chip()).unwrap();
    let platform = vec![
        "--emulated".to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ];
    let mut rng = Rng(seed());
    for (i, c) in cases(&mut rng, dir.path()).iter().enumerate() {
        check(dir.path(), i, c, &platform, &[]);
    }
}

#[test]
fn both_worlds_validate_launches_through_the_daemon() {
    require_mount!();
    require_validators!();
    if !Path::new(DEBIAN_OVMF).exists() {
        tests::missing!("Debian's OVMF (package ovmf) is not installed");
    }
    let sevd = Sevd::start();
    let dir = tempfile::tempdir().unwrap();
    let platform = vec!["--device".to_string(), sevd.node().display().to_string()];
    let ca = vec![
        "--ca".to_string(),
        sevd.state_dir.join("ask_ark.cert").display().to_string(),
    ];
    let mut rng = Rng(seed());
    for (i, c) in cases(&mut rng, dir.path()).iter().enumerate() {
        check(dir.path(), i, c, &platform, &ca);
    }
}

#[test]
fn vmsa_build_init2_is_the_save_area_sev_snp_measure_measures() {
    let (snp_measure, _) = require_validators!();
    let dir = tempfile::tempdir().unwrap();
    for vmm in ["QEMU", "ec2", "gce"] {
        run(Command::new(&snp_measure)
            .current_dir(dir.path())
            .args([
                "--mode",
                "seves",
                "--vcpus",
                "2",
                "--vcpu-type",
                "EPYC-Milan",
            ])
            .args(["--vmm-type", vmm, "--ovmf", AMDSEV, "--dump-vmsa"]));
        for cpu in 0..2 {
            let ours = dir.path().join(format!("ours{cpu}.bin"));
            run(Command::new(sevctl())
                .args(["vmsa", "build", "--init2", "--userspace", vmm])
                .args(["--cpu", &cpu.to_string(), "--family", "25", "--model", "1"])
                .args(["--stepping", "1", "--firmware", AMDSEV])
                .arg(&ours));
            let theirs = std::fs::read(dir.path().join(format!("vmsa{cpu}.bin"))).unwrap();
            assert_eq!(std::fs::read(&ours).unwrap(), theirs, "{vmm}, vCPU {cpu}");
        }
    }
}
