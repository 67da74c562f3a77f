//! SNP launch digests against sev-snp-measure (installed by scripts/test.sh into a
//! virtualenv), for random inputs made here: the example image and Debian's OVMF, random
//! kernels, initrds and command lines, 1 to 8 vCPUs, several CPU models, the QEMU, EC2 and
//! GCE VMMs, and several guest-features values.
//! - The owner's digest (`sevd::owner::snp_measurement`), over every guest-features value.
//! - Whole `sevctl launch`es of `mode: snp` manifests, embedded and through the daemon: the
//!   firmware's digest (the MEASUREMENT of the guest's attestation report) and sevctl's
//!   `launch_digest` are both sev-snp-measure's (guest features KVM offers: 0x1 and 0x21).
//!
//! Each run prints its seed; `VALIDATORS_SEED=N` repeats one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::{require_mount, require_validators, seed, Rng, Sevd};

const AMDSEV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/firmware/OVMF.amdsev.suffix.fd"
);
/// Debian's OVMF (package `ovmf`): no kernel hashes section, so no kernel with it.
const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const CPUS: &[&str] = &[
    "EPYC-v4",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Genoa",
    "EPYC-Turin",
];
const VMMS: &[&str] = &["QEMU", "ec2", "gce"];

/// One SNP guest.
#[derive(Debug)]
struct SnpCase {
    firmware: &'static str,
    kernel: Option<(PathBuf, PathBuf, String)>,
    vcpus: u32,
    cpu: &'static str,
    vmm: &'static str,
    guest_features: u64,
    /// Guest RAM: a guest's size changes nothing sev-snp-measure measures.
    memory: &'static str,
}

/// Guest sizes the cases take turns with: small, split around the PCI hole, large.
const MEMORY: &[&str] = &["64M", "4G", "64G", "1T"];

/// `n` random cases; `features` are the guest-features values to take turns with.
fn cases(rng: &mut Rng, dir: &Path, n: usize, features: &[u64]) -> Vec<SnpCase> {
    (0..n)
        .map(|i| {
            let firmware = if i % 3 == 2 { DEBIAN_OVMF } else { AMDSEV };
            let kernel = (firmware == AMDSEV && rng.below(2) == 0).then(|| {
                let k = dir.join(format!("vmlinuz-{i}"));
                let r = dir.join(format!("initrd-{i}"));
                let (kn, rn) = (1000 + rng.below(300_000), rng.below(200_000));
                std::fs::write(&k, rng.bytes(kn as usize)).unwrap();
                std::fs::write(&r, rng.bytes(rn as usize)).unwrap();
                (
                    k,
                    r,
                    format!("console=ttyS0 quiet root=/dev/vda{}", rng.below(64)),
                )
            });
            SnpCase {
                firmware,
                kernel,
                vcpus: 1 + rng.below(8) as u32,
                cpu: CPUS[(i + rng.below(2) as usize) % CPUS.len()],
                vmm: VMMS[(i + rng.below(3) as usize) % VMMS.len()],
                guest_features: features[i % features.len()],
                memory: MEMORY[i % MEMORY.len()],
            }
        })
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    tests::succeeds(cmd)
}

/// sev-snp-measure's digest of case `c`.
fn sev_snp_measure(snp_measure: &Path, c: &SnpCase) -> String {
    let mut cmd = Command::new(snp_measure);
    cmd.args([
        "--mode",
        "snp",
        "--ovmf",
        c.firmware,
        "--output-format",
        "hex",
    ])
    .args(["--vcpus", &c.vcpus.to_string(), "--vcpu-type", c.cpu])
    .args(["--vmm-type", c.vmm])
    .args(["--guest-features", &format!("{:#x}", c.guest_features)]);
    if let Some((k, r, cmdline)) = &c.kernel {
        cmd.arg("--kernel").arg(k).arg("--initrd").arg(r);
        cmd.args(["--append", cmdline]);
    }
    String::from_utf8(run(&mut cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Case `i`'s manifest in `dir`.
fn manifest(dir: &Path, i: usize, c: &SnpCase) -> PathBuf {
    let mut m = format!(
        "apiVersion: sevctl/v1\nname: snp-{i}\nguest:\n  memory: {}\n  vcpus: {}\n  mode: snp\n  vcpuType: {}\n  vmm: {}\n  guestFeatures: {:#x}\n",
        c.memory,
        c.vcpus,
        c.cpu,
        c.vmm.to_ascii_lowercase(),
        c.guest_features
    );
    m += &format!("images:\n  ovmf: {}\n", c.firmware);
    if let Some((k, r, cmdline)) = &c.kernel {
        m += &format!(
            "  kernel: {}\n  initrd: {}\n  cmdline: \"{cmdline}\"\n",
            k.display(),
            r.display()
        );
    }
    let path = dir.join(format!("snp-{i}.yaml"));
    std::fs::write(&path, m).unwrap();
    path
}

fn sevctl() -> PathBuf {
    tests::sevd_bin().with_file_name("sevctl")
}

/// Launches every case on `platform` and compares with sev-snp-measure.
fn launches_agree(platform: &[String]) {
    let (snp_measure, _) = require_validators!();
    if !Path::new(DEBIAN_OVMF).exists() {
        tests::missing!("Debian's OVMF (package ovmf) is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    for (i, c) in cases(&mut rng, dir.path(), 6, &[0x1, 0x21])
        .iter()
        .enumerate()
    {
        let theirs = sev_snp_measure(&snp_measure, c);
        let path = manifest(dir.path(), i, c);
        let out = run(Command::new(sevctl())
            .args(platform)
            .args(["--json", "launch"])
            .arg(&path));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!(
            "snp launch {i}: {c:?}: sev-snp-measure {theirs}, firmware {}",
            report["measurement"]
        );
        assert_eq!(
            report["measurement"],
            theirs.as_str(),
            "launch {i}: the firmware's digest"
        );
        assert_eq!(
            report["launch_digest"],
            theirs.as_str(),
            "launch {i}: sevctl's digest"
        );
        assert_eq!(report["mode"], "SEV-SNP");
    }
}

#[test]
fn embedded_snp_launches_agree_with_sev_snp_measure() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("chip.bin"), tests::shared_chip()).unwrap();
    launches_agree(&[
        "--emulated".to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ]);
}

#[test]
fn snp_launches_through_the_daemon_agree_with_sev_snp_measure() {
    require_mount!();
    let sevd = Sevd::start_with(tests::Options {
        args: vec!["--snp".into()],
        ..Default::default()
    });
    launches_agree(&["--device".to_string(), sevd.node().display().to_string()]);
}

/// The owner's digest alone, over guest features beyond what KVM offers.
#[test]
fn snp_launch_digests_agree_with_sev_snp_measure() {
    use sevd::owner::ovmf::Ovmf;
    use sevd::owner::snp_measurement::OvmfLaunch;
    use sevd::owner::vmsa::{cpu_model_signature, Vmm};
    let (snp_measure, _) = require_validators!();
    if !Path::new(DEBIAN_OVMF).exists() {
        tests::missing!("Debian's OVMF (package ovmf) is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let features: Vec<u64> = vec![
        0x1,
        0x21,
        0x1 | (rng.below(0x40) << 1),
        0x1 | (rng.below(0x800) << 1),
    ];
    for (i, c) in cases(&mut rng, dir.path(), 12, &features)
        .iter()
        .enumerate()
    {
        let image = std::fs::read(c.firmware).unwrap();
        let ovmf = Ovmf::parse(&image).unwrap();
        let hashes = c.kernel.as_ref().map(|(k, r, cmdline)| {
            sevd::owner::tables::kernel_hashes(
                &std::fs::read(k).unwrap(),
                &std::fs::read(r).unwrap(),
                cmdline,
            )
            .unwrap()
        });
        let vmm = match c.vmm {
            "ec2" => Vmm::Ec2,
            "gce" => Vmm::Gce,
            _ => Vmm::Qemu,
        };
        let ours = OvmfLaunch {
            image: &image,
            ovmf: &ovmf,
            kernel_hashes: hashes.as_deref(),
            vmm,
            vcpus: c.vcpus,
            signature: cpu_model_signature(c.cpu).unwrap(),
            guest_features: c.guest_features,
        }
        .digest()
        .unwrap();
        let theirs = sev_snp_measure(&snp_measure, c);
        assert_eq!(hex::encode(ours.bytes()), theirs, "snp case {i}: {c:?}");
    }
}
