//! VM types and KVM_SEV_INIT2 on the `sev-vm` node, as KVM has them since Linux 6.10: the
//! type comes first, the legacy init works on the default type only, INIT2 on the SEV types
//! only, each wrong combination gets KVM's errno, and under INIT2 the save area LAUNCH_UPDATE_VMSA
//! measures is the one KVM's `sev_es_sync_vmsa` makes.

use sevd::owner::measurement::{measure, MeasuredPlatform};
use sevd::owner::session::TransportKeys;
use sevd::platform::{EmbeddedConfig, Platform};
use tests::{require_mount, Sevd, VmClient};
use uapi::kvm::*;

const MIB: usize = 1 << 20;

fn set_type(vm: &VmClient, ty: u64) -> Result<(), i32> {
    vm.ioctl(uapi::ioctl::SEVD_VM_SET_TYPE, &ty as *const u64 as u64)
}

fn init2(vm: &VmClient, p: &mut KvmSevInit) -> Result<(), (i32, u32)> {
    vm.encrypt_op(KvmSevCmdId::Init2, p)
}

#[test]
fn the_type_comes_first_and_must_be_offered() {
    require_mount!();
    let sevd = Sevd::start();
    // After another ioctl (VmClient::new maps the RAM), or a second time: EINVAL.
    let vm = VmClient::new(&sevd, MIB);
    assert_eq!(set_type(&vm, 2), Err(libc::EINVAL));
    let vm = VmClient::new_typed(&sevd, MIB, 3);
    assert_eq!(set_type(&vm, 3), Err(libc::EINVAL));
    // Types this node does not offer (SW_PROTECTED, SNP, TDX, unknown): EINVAL.
    for ty in [1, 4, 5, 6, 99, 1 << 32, u64::MAX] {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sevd.vm_node())
            .unwrap();
        let vm = VmClient::from_files_unmapped(f, sevd.open());
        assert_eq!(set_type(&vm, ty), Err(libc::EINVAL), "type {ty}");
    }
}

#[test]
fn each_init_on_its_own_type() {
    require_mount!();
    let sevd = Sevd::start();
    let fd = |vm: &VmClient| std::os::fd::AsRawFd::as_raw_fd(&vm.sev);
    // The default type: INIT2 is not for it.
    let vm = VmClient::new(&sevd, MIB);
    assert_eq!(
        init2(&vm, &mut KvmSevInit::default()),
        Err((libc::EINVAL, 0))
    );
    vm.encrypt_op_plain(KvmSevCmdId::EsInit).unwrap();

    // KVM_X86_SEV_VM: no legacy init, no SEV-ES features or GHCB version.
    let vm = VmClient::new_typed(&sevd, MIB, 2);
    for id in [KvmSevCmdId::Init, KvmSevCmdId::EsInit] {
        assert_eq!(vm.encrypt_op_plain(id), Err((libc::EINVAL, 0)), "{id:?}");
    }
    for bad in [
        KvmSevInit {
            ghcb_version: 1,
            ..Default::default()
        },
        KvmSevInit {
            vmsa_features: 1 << 5,
            ..Default::default()
        },
        KvmSevInit {
            flags: 1,
            ..Default::default()
        },
    ] {
        let mut p = bad;
        assert_eq!(init2(&vm, &mut p), Err((libc::EINVAL, 0)), "{bad:?}");
    }
    assert_eq!(
        vm.encrypt_op_raw(KvmSevCmdId::Init2, 8, fd(&vm)),
        Err((libc::EFAULT, 0)),
        "a bad pointer"
    );
    let mut p = KvmSevInit::default();
    init2(&vm, &mut p).unwrap();
    assert_eq!(init2(&vm, &mut p), Err((libc::EINVAL, 0)), "only once");

    // KVM_X86_SEV_ES_VM: DebugSwap only, GHCB versions up to 2; KVM leaves the padding alone.
    let vm = VmClient::new_typed(&sevd, MIB, 3);
    for bad in [
        KvmSevInit {
            vmsa_features: 1,
            ..Default::default()
        },
        KvmSevInit {
            vmsa_features: 1 << 6,
            ..Default::default()
        },
        KvmSevInit {
            ghcb_version: 3,
            ..Default::default()
        },
        KvmSevInit {
            flags: 0x8000_0000,
            ..Default::default()
        },
    ] {
        let mut p = bad;
        assert_eq!(init2(&vm, &mut p), Err((libc::EINVAL, 0)), "{bad:?}");
    }
    let page = [0u8; 4096];
    vm.set_vmsa(0, &page).unwrap();
    let mut ok = KvmSevInit {
        vmsa_features: 1 << 5,
        ghcb_version: 2,
        pad1: 7,
        pad2: [9; 8],
        flags: 0,
    };
    assert_eq!(
        init2(&vm, &mut ok),
        Err((libc::EINVAL, 0)),
        "a vCPU exists already"
    );
    let vm = VmClient::new_typed(&sevd, MIB, 3);
    init2(&vm, &mut ok).unwrap();
    let mut ls = KvmSevLaunchStart {
        policy: 0x4,
        ..Default::default()
    };
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls).unwrap();
}

/// An SEV-ES launch of `vm_type` with `vmsa_features`, with a session whose TIK the test
/// knows; returns MEASURE and the digest the given save area must have been measured as.
fn es_launch(
    p: &Platform,
    vm_type: u32,
    vmsa_features: u64,
    page: &[u8; 4096],
) -> ([u8; 32], [u8; 32]) {
    let keys = TransportKeys::generate().unwrap();
    let (godh, session) = tests::owner_session(p, &keys, 0x5);
    let vm = p.create_vm_of(vm_type, MIB).unwrap();
    if vm_type == KVM_X86_DEFAULT_VM {
        vm.sev_init(true).unwrap();
    } else {
        vm.sev_init2(vmsa_features, 0).unwrap();
    }
    vm.launch_start(0x5, Some((&godh, &session))).unwrap();
    vm.set_vmsa(0, page).unwrap();
    vm.launch_update_vmsa().unwrap();
    let blob = vm.launch_measure().unwrap();
    let st = p.status().unwrap();
    let platform = MeasuredPlatform {
        api_major: st.api_major,
        api_minor: st.api_minor,
        build: st.build,
    };
    // What the owner expects the node to have measured: the save area as KVM syncs it.
    let mut synced = *page;
    synced[0x3b0..0x3b8].copy_from_slice(&vmsa_features.to_le_bytes());
    if vm_type == KVM_X86_DEFAULT_VM {
        synced[0x400..0x670].fill(0);
    }
    let digest = sevd::crypto::sha256(&synced);
    let expected = measure(
        &keys.tik,
        platform,
        0x5,
        &digest,
        blob[32..].try_into().unwrap(),
    )
    .unwrap();
    (blob[..32].try_into().unwrap(), expected)
}

/// A save area with QEMU's reset FPU state and SEV_FEATURES that the sync replaces.
fn vmm_page() -> [u8; 4096] {
    let mut page = [0u8; 4096];
    page[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes()); // DR7
    page[0x178..0x180].copy_from_slice(&0xfff0u64.to_le_bytes()); // RIP
    page[0x3b0] = 0xff;
    page[0x408..0x40c].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR
    page[0x410..0x412].copy_from_slice(&0x037fu16.to_le_bytes()); // FCW
    page
}

fn measures_the_synced_save_area(p: &Platform) {
    let page = vmm_page();
    for (ty, features) in [
        (KVM_X86_DEFAULT_VM, 0),
        (KVM_X86_SEV_ES_VM, 0),
        (KVM_X86_SEV_ES_VM, 1 << 5),
    ] {
        let (got, expected) = es_launch(p, ty, features, &page);
        assert_eq!(got, expected, "type {ty}, vmsa_features {features:#x}");
    }
}

#[test]
fn init2_measures_the_save_area_kvm_syncs_in_process() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chip.bin"), tests::shared_chip()).unwrap();
    let p = Platform::embedded(&EmbeddedConfig::new(dir.path())).unwrap();
    measures_the_synced_save_area(&p);
}

#[test]
fn init2_measures_the_save_area_kvm_syncs_through_the_daemon() {
    require_mount!();
    let sevd = Sevd::start();
    measures_the_synced_save_area(&Platform::device(&sevd.node()).unwrap());
}
