//! The embedded firmware and the daemon give the same launch digest and measurement for the
//! same inputs, owner keys and nonce source.

use sevd::owner::session::TransportKeys;
use sevd::platform::{EmbeddedConfig, Platform};
use tests::{require_mount, Options, Sevd};
use zeroize::Zeroizing;

const SEED: [u8; 32] = [0x5e; 32];

/// An SEV-ES launch with a session whose TEK and TIK are fixed; returns MEASURE ‖ MNONCE.
fn launch(p: &Platform) -> [u8; 48] {
    let keys = TransportKeys {
        tek: Zeroizing::new([1; 16]),
        tik: Zeroizing::new([2; 16]),
    };
    let (godh, session) = tests::owner_session(p, &keys, 0x5);

    let mut vm = p.create_vm(2 << 20).unwrap();
    vm.sev_init(true).unwrap();
    vm.launch_start(0x5, Some((&godh, &session))).unwrap();
    for (i, b) in vm.ram_mut()[..0x10000].iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    vm.launch_update_data(0, 0x10000).unwrap();
    for vcpu in 0..4 {
        let mut page = [vcpu as u8 + 1; 4096];
        // DR7 as KVM accepts it in a save area.
        page[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes());
        vm.set_vmsa(vcpu, &page).unwrap();
    }
    vm.launch_update_vmsa().unwrap();
    vm.launch_measure().unwrap()
}

#[test]
fn embedded_and_daemon_measure_alike() {
    require_mount!();
    let seed_hex: String = SEED.iter().map(|b| format!("{b:02x}")).collect();
    let sevd = Sevd::start_with(Options {
        args: vec!["--nonce-seed".into(), seed_hex],
        ..Options::default()
    });
    let through_daemon = launch(&Platform::device(&sevd.node()).unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chip.bin"), tests::shared_chip()).unwrap();
    let embedded = Platform::embedded(&EmbeddedConfig {
        nonce_seed: Some(SEED),
        ..EmbeddedConfig::new(dir.path())
    })
    .unwrap();
    let in_process = launch(&embedded);
    assert_eq!(through_daemon, in_process);
}
