//! Guest launches through the `sev-vm` node, with the virtee `sev` crate from crates.io as
//! an independent guest owner: its session is accepted by LAUNCH_START, its launch digest
//! (OVMF plus SEV-ES VMSAs, as QEMU 9.1+ on a current kernel makes them: a KVM_X86_SEV_ES_VM
//! under KVM_SEV_INIT2) matches ours, it verifies our measurement, and its secret packet
//! reaches the guest, which alone sees it in plaintext.

use sev::certs::sev::{ca, sev as sevcert, Chain};
use sev::firmware::host::{Build, Version};
use sev::launch::sev::{HeaderFlags, Measurement, Policy};
use sev::measurement::ovmf::OVMF;
use sev::measurement::sev::{seves_calc_launch_digest, SevEsMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType, VMSA};
use sev::parser::{Decoder, Encoder};
use sev::session::Session;
use tests::{pdh_export, platform_status, require_mount, Sevd, VmClient};
use uapi::kvm::*;

const OVMF_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/ovmf_AmdSev_suffix.bin");
const OVMF_GPA: u64 = 0x10000;
const SECRET_GPA: u64 = 0x20000;

fn chain(sevd: &Sevd) -> Chain {
    let (pdh, certs) = pdh_export(&sevd.open()).unwrap();
    let platform = sevcert::Chain::decode(&mut &[pdh, certs].concat()[..], ()).unwrap();
    let ask_ark = std::fs::read(sevd.state_dir.join("ask_ark.cert")).unwrap();
    Chain {
        ca: ca::Chain::decode(&mut &ask_ark[..], ()).unwrap(),
        sev: platform,
    }
}

fn encode<T: Encoder<()>>(v: &T) -> Vec<u8> {
    let mut out = vec![];
    v.encode(&mut out, ()).unwrap();
    out
}

fn session_bytes(s: &sev::launch::sev::Session) -> Vec<u8> {
    [
        &s.nonce[..],
        &s.wrap_tk,
        &s.wrap_iv,
        &s.wrap_mac,
        &s.policy_mac,
    ]
    .concat()
}

#[test]
fn sev_es_launch_with_the_sev_crate_as_guest_owner() {
    require_mount!();
    let sevd = Sevd::start();
    let mut vm = VmClient::new_typed(&sevd, 4 << 20, KVM_X86_SEV_ES_VM as u64);

    // Owner: verify the chain, make the session.
    let policy_bits = 0x5; // NODBG | ES
    let owner = Session::try_from(Policy::from(policy_bits)).unwrap();
    let start = owner
        .start(chain(&sevd))
        .expect("Session::start verifies the chain");
    let godh = encode(&start.cert);
    let session = session_bytes(&start.session);

    // Host: KVM_SEV_INIT2, LAUNCH_START.
    vm.encrypt_op(KvmSevCmdId::Init2, &mut KvmSevInit::default())
        .unwrap();
    let mut ls = KvmSevLaunchStart {
        policy: policy_bits,
        dh_uaddr: godh.as_ptr() as u64,
        dh_len: godh.len() as u32,
        session_uaddr: session.as_ptr() as u64,
        session_len: session.len() as u32,
        ..Default::default()
    };
    vm.encrypt_op(KvmSevCmdId::LaunchStart, &mut ls)
        .expect("LAUNCH_START accepts the crate's session");
    assert_eq!(ls.handle, 1);
    assert_eq!(platform_status(&sevd.open()).unwrap().state, 2, "WORKING");

    // OVMF into guest RAM, then LAUNCH_UPDATE_DATA.
    let ovmf = std::fs::read(OVMF_FILE).unwrap();
    vm.ram_mut()[OVMF_GPA as usize..][..ovmf.len()].copy_from_slice(&ovmf);
    let mut ud = KvmSevLaunchUpdateData {
        uaddr: vm.uaddr(OVMF_GPA),
        len: ovmf.len() as u32,
        pad0: 0,
    };
    vm.encrypt_op(KvmSevCmdId::LaunchUpdateData, &mut ud)
        .unwrap();
    assert_ne!(
        &vm.ram()[OVMF_GPA as usize..][..ovmf.len()],
        &ovmf[..],
        "the host sees ciphertext"
    );
    assert_eq!(
        vm.guest_read(OVMF_GPA, ovmf.len()).unwrap(),
        ovmf,
        "the guest sees plaintext"
    );

    // Four vCPUs' VMSAs, as the crate builds them for QEMU, then LAUNCH_UPDATE_VMSA.
    let eip = OVMF::new(OVMF_FILE.into())
        .unwrap()
        .sev_es_reset_eip()
        .unwrap();
    let vmsa = VMSA::new(
        eip.into(),
        CpuType::EpycV4,
        VMMType::QEMU,
        Some(4),
        GuestFeatures(0),
    );
    let pages = vmsa.pages(4).unwrap();
    for (i, page) in pages.iter().enumerate() {
        vm.set_vmsa(i as u32, page).unwrap();
    }
    vm.encrypt_op_plain(KvmSevCmdId::LaunchUpdateVmsa).unwrap();

    // LAUNCH_MEASURE: the length probe, then the measurement.
    let mut lm = KvmSevLaunchMeasure::default();
    assert_eq!(
        vm.encrypt_op(KvmSevCmdId::LaunchMeasure, &mut lm),
        Err((libc::EIO, 4))
    );
    assert_eq!(lm.len, 48);
    let mut blob = [0u8; 48];
    lm.uaddr = blob.as_mut_ptr() as u64;
    vm.encrypt_op(KvmSevCmdId::LaunchMeasure, &mut lm).unwrap();
    let msr = Measurement::decode(&mut &blob[..], ()).unwrap();

    // Owner: the crate's own launch digest for the same OVMF and vCPUs, and verification.
    let expected = seves_calc_launch_digest(SevEsMeasurementArgs {
        vcpus: 4,
        vcpu_type: CpuType::EpycV4,
        ovmf_file: OVMF_FILE.into(),
        kernel_file: None,
        initrd_file: None,
        append: None,
        vmm_type: None,
    })
    .unwrap();
    let build = Build {
        version: Version {
            major: 1,
            minor: 55,
        },
        build: 25,
    };
    let mut measuring = owner.measure().unwrap();
    measuring.update_data(&ovmf).unwrap();
    for page in &pages {
        measuring.update_data(page).unwrap();
    }
    let verified = measuring
        .verify(build, msr)
        .expect("Session::verify accepts our measurement");
    // What we measured is the crate's launch digest, computed by its measurement module.
    assert!(digest_of(&ovmf, &pages) == expected);

    // Owner: a secret; host: LAUNCH_SECRET.
    let secret = *b"0123456789abcdef-the-disk-key-!!";
    let packet = verified.secret(HeaderFlags::default(), &secret).unwrap();
    let header = [
        &packet.header.flags.bits().to_le_bytes()[..],
        &packet.header.iv,
        &packet.header.mac,
    ]
    .concat();
    let inject = |ct: &[u8]| {
        let mut sec = KvmSevLaunchSecret {
            hdr_uaddr: header.as_ptr() as u64,
            hdr_len: header.len() as u32,
            guest_uaddr: vm.uaddr(SECRET_GPA),
            guest_len: ct.len() as u32,
            trans_uaddr: ct.as_ptr() as u64,
            trans_len: ct.len() as u32,
            ..Default::default()
        };
        vm.encrypt_op(KvmSevCmdId::LaunchSecret, &mut sec)
    };
    let mut tampered = packet.ciphertext.clone();
    tampered[0] ^= 1;
    let host_before = vm.ram()[SECRET_GPA as usize..][..32].to_vec();
    assert_eq!(inject(&tampered), Err((libc::EIO, 0x0B)), "BAD_MEASUREMENT");
    assert_eq!(
        &vm.ram()[SECRET_GPA as usize..][..32],
        &host_before[..],
        "a refused packet changed nothing"
    );
    inject(&packet.ciphertext).unwrap();
    assert_eq!(
        vm.guest_read(SECRET_GPA, 32).unwrap(),
        secret,
        "the guest reads the secret"
    );
    assert_ne!(
        &vm.ram()[SECRET_GPA as usize..][..32],
        &secret,
        "the hypervisor sees ciphertext"
    );

    vm.encrypt_op_plain(KvmSevCmdId::LaunchFinish).unwrap();
    let mut st = KvmSevGuestStatus::default();
    vm.encrypt_op(KvmSevCmdId::GuestStatus, &mut st).unwrap();
    assert_eq!(
        (st.handle, st.policy, st.state),
        (1, policy_bits, 3),
        "RUNNING"
    );

    // Closing the VM decommissions the guest.
    drop(vm);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while platform_status(&sevd.open()).unwrap().guest_count != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest was not torn down"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(platform_status(&sevd.open()).unwrap().state, 1);
}

/// SHA-256(OVMF ‖ VMSAs): the bytes our firmware measured, in the order it measured them.
fn digest_of(ovmf: &[u8], pages: &[Vec<u8>]) -> [u8; 32] {
    let mut all = ovmf.to_vec();
    for p in pages {
        all.extend_from_slice(p);
    }
    openssl::sha::sha256(&all)
}
