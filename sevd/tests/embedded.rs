//! The embedded platform: the same firmware, driver and memory controller in this process,
//! over a local buffer, through the same ioctl boundary. Needs neither root nor FUSE.

use sevd::owner::secret::package;
use sevd::platform::{EmbeddedConfig, Platform};

#[test]
fn embedded_sev_es_launch_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::embedded(&EmbeddedConfig::new(dir.path())).unwrap();
    let st = p.status().unwrap();
    assert_eq!((st.state, { st.flags }), (1, 0x100));
    assert_eq!(p.get_id().unwrap().len(), 64);

    let mut vm = p.create_vm(1 << 20).unwrap();
    vm.sev_init(true).unwrap();
    let handle = vm.launch_start(0x5, None).unwrap();
    assert_eq!(handle, 1);
    vm.ram_mut()[..4096].copy_from_slice(&[0xAB; 4096]);
    vm.launch_update_data(0, 4096).unwrap();
    assert_ne!(vm.ram()[..16], [0xAB; 16], "ciphertext in the host's view");
    for vcpu in 0..2 {
        let mut page = [vcpu as u8 + 1; 4096];
        // DR7 as KVM accepts it in a save area.
        page[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes());
        vm.set_vmsa(vcpu, &page).unwrap();
    }
    vm.launch_update_vmsa().unwrap();
    let blob = vm.launch_measure().unwrap();
    let measure: [u8; 32] = blob[..32].try_into().unwrap();
    let (header, ct) = package(&[0; 16], &[0; 16], &measure, [7; 16], &[0x42; 48]).unwrap();
    vm.launch_secret(&header.encode(), 0x8000, &ct).unwrap();
    assert_eq!(vm.guest_read(0x8000, 48).unwrap(), [0x42; 48]);
    vm.launch_finish().unwrap();
    assert_eq!(vm.guest_status().unwrap().state, 3);
    assert_eq!({ p.status().unwrap().guest_count }, 1);
    drop(vm);
    assert_eq!(
        { p.status().unwrap().guest_count },
        0,
        "dropping the VM decommissions it"
    );
}

#[test]
fn one_embedded_firmware_per_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Platform::embedded(&EmbeddedConfig::new(dir.path())).unwrap();
    let second = Platform::embedded(&EmbeddedConfig::new(dir.path()));
    assert!(second.err().unwrap().to_string().contains("in use"));
}
