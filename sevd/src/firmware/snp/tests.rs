use uapi::snp::TcbVersion;
use uapi::Status;

use super::*;
use crate::firmware::nv::MemStorage;
use crate::firmware::test_support::{chip, firmware};

fn tcb(s: &str) -> TcbVersion {
    s.parse().unwrap()
}

/// A firmware with SNP on, its chip at `installed`, over `store`.
fn snp_firmware(installed: &str, store: MemStorage) -> Firmware {
    snp_firmware_of(crate::part::Product::Milan, installed, store)
}

/// The same, on a chip of `product`.
fn snp_firmware_of(product: crate::part::Product, installed: &str, store: MemStorage) -> Firmware {
    let mut c = chip();
    c.tcb = tcb(installed);
    c.product = product;
    Firmware::new(
        c,
        Box::new(MemStorage::default()),
        crate::firmware::FirmwareConfig::default(),
        Box::new(crate::firmware::random::OsRandom),
    )
    .unwrap()
    .with_snp(Box::new(store))
}

fn config(reported: u64, mask: u32) -> [u8; 64] {
    let mut c = [0u8; 64];
    c[..8].copy_from_slice(&reported.to_le_bytes());
    c[8..12].copy_from_slice(&mask.to_le_bytes());
    c
}

#[test]
fn snp_comes_first_and_needs_the_host_to_enable_it() {
    let mut fw = firmware();
    assert_eq!(fw.snp_init(), Err(Status::InvalidConfig));
    let mut fw = snp_firmware("3:0:8:115", MemStorage::default());
    fw.init(0).unwrap();
    assert_eq!(fw.snp_init(), Err(Status::InvalidPlatformState));
    fw.shutdown().unwrap();
    fw.snp_init().unwrap();
    assert_eq!(fw.snp_init(), Err(Status::InvalidPlatformState));
    fw.init(0).unwrap();
    assert_eq!(fw.snp_shutdown(), Err(Status::InvalidPlatformState));
    fw.shutdown().unwrap();
    fw.snp_shutdown().unwrap();
    assert_eq!(fw.snp_state(), SnpState::Uninit);
}

#[test]
fn status_reports_the_installed_and_committed_tcbs() {
    let mut fw = snp_firmware("3:0:8:115", MemStorage::default());
    let s = fw.snp_platform_status().unwrap();
    assert_eq!((s.state, s.is_rmp_initialized), (0, 0));
    fw.snp_init().unwrap();
    let s = fw.snp_platform_status().unwrap();
    assert_eq!((s.api_major, s.api_minor, { s.build_id }), (1, 55, 25));
    assert_eq!(
        (s.state, s.is_rmp_initialized, { s.guest_count }),
        (1, 0b11, 0),
        "the RMP is up and, on 1.55.25 of a Milan, its alias check done"
    );
    assert_eq!({ s.feature_bits }, status_bits::FEATURE_INFO);
    assert_eq!({ s.current_tcb_version }, tcb("3:0:8:115").to_u64());
    assert_eq!({ s.reported_tcb_version }, tcb("3:0:8:115").to_u64());
}

#[test]
fn config_sets_a_lower_reported_tcb_and_the_masks_and_persists() {
    let mut fw = snp_firmware("3:0:8:115", MemStorage::default());
    fw.snp_init().unwrap();
    let lower = tcb("2:0:8:100").to_u64();
    assert_eq!(
        fw.snp_config(&config(tcb("3:0:9:115").to_u64(), 0)),
        Err(Status::InvalidParam),
        "above the committed TCB"
    );
    // virtee's test_host_fw_error: TCB (100,100,100,100) with mask bits 31.
    assert_eq!(
        fw.snp_config(&config(tcb("100:100:100:100").to_u64(), 31)),
        Err(Status::InvalidParam)
    );
    let mut reserved = config(lower, 0);
    reserved[40] = 1;
    assert_eq!(fw.snp_config(&reserved), Err(Status::InvalidParam));
    assert_eq!(
        fw.snp_config(&config(lower | 1 << 16, 0)),
        Err(Status::InvalidParam)
    );
    assert_eq!(
        fw.reported_tcb(),
        tcb("3:0:8:115"),
        "failures change nothing"
    );
    fw.snp_config(&config(lower, 3)).unwrap();
    let s = fw.snp_platform_status().unwrap();
    assert_eq!({ s.reported_tcb_version }, lower);
    assert_eq!({ s.current_tcb_version }, tcb("3:0:8:115").to_u64());
    assert_eq!({ s.feature_bits } & 3, 3);
    // 0 means the committed TCB.
    fw.snp_config(&config(0, 0)).unwrap();
    assert_eq!(fw.reported_tcb(), tcb("3:0:8:115"));
    fw.snp_config(&config(lower, 1)).unwrap();

    // The store survives a power cycle.
    let store = MemStorage {
        data: fw.snp.nv.read().unwrap(),
        quarantined: None,
    };
    let fw = snp_firmware("3:0:8:115", store);
    let s = fw.snp_platform_status().unwrap();
    assert_eq!({ s.reported_tcb_version }, lower);
    assert_eq!({ s.feature_bits } & 3, 1);
}

/// A Turin's TCBs are in its layout (FMC in byte 0, SNP in byte 3), in and out, and its
/// FMC counts as a component: a reported TCB above the committed FMC is refused.
#[test]
fn a_turins_tcbs_carry_its_fmc() {
    let mut fw = snp_firmware_of(
        crate::part::Product::Turin,
        "1:3:0:8:115",
        MemStorage::default(),
    );
    fw.snp_init().unwrap();
    let s = fw.snp_platform_status().unwrap();
    assert_eq!({ s.current_tcb_version }, 0x7300_0000_0800_0301);
    assert_eq!({ s.reported_tcb_version }, 0x7300_0000_0800_0301);
    assert_eq!(
        s.is_rmp_initialized, 0b11,
        "every Turin firmware checks aliases"
    );
    assert_eq!(
        fw.snp_config(&config(tcb("2:3:0:8:115").to_u64(), 0)),
        Err(Status::InvalidParam),
        "the FMC above the committed one"
    );
    assert_eq!(
        fw.snp_config(&config(1 << 48, 0)),
        Err(Status::InvalidParam),
        "a reserved byte of Turin's layout"
    );
    fw.snp_config(&config(tcb("0:3:0:8:100").to_u64(), 0))
        .unwrap();
    assert_eq!(fw.reported_tcb(), tcb("0:3:0:8:100"));
    // Its store reads back in its layout after a power cycle.
    let store = MemStorage {
        data: fw.snp.nv.read().unwrap(),
        quarantined: None,
    };
    let fw = snp_firmware_of(crate::part::Product::Turin, "1:3:0:8:115", store);
    assert_eq!(fw.reported_tcb(), tcb("0:3:0:8:100"));
}

#[test]
fn an_update_is_committed_only_by_snp_commit_and_never_rolled_back() {
    let mut fw = snp_firmware("3:0:8:115", MemStorage::default());
    fw.snp_init().unwrap();
    let stored = || MemStorage {
        data: fw.snp.nv.read().unwrap(),
        quarantined: None,
    };
    // Firmware and microcode updates installed: current moves, committed and reported stay.
    let mut fw = snp_firmware("3:0:9:120", stored());
    fw.snp_init().unwrap();
    let s = fw.snp_platform_status().unwrap();
    assert_eq!({ s.current_tcb_version }, tcb("3:0:9:120").to_u64());
    assert_eq!({ s.reported_tcb_version }, tcb("3:0:8:115").to_u64());
    assert_eq!(fw.snp_commit(0), Err(Status::InvalidParam));
    fw.snp_config(&config(tcb("3:0:8:100").to_u64(), 0))
        .unwrap();
    fw.snp_commit(COMMIT_LEN).unwrap();
    let s = fw.snp_platform_status().unwrap();
    assert_eq!({ s.reported_tcb_version }, tcb("3:0:9:120").to_u64());
    // Going back below what was committed: SNP refuses to start.
    let store = MemStorage {
        data: fw.snp.nv.read().unwrap(),
        quarantined: None,
    };
    let mut old = snp_firmware("3:0:8:115", store);
    assert_eq!(old.snp_init(), Err(Status::BadSvn));
    assert_eq!(old.snp_state(), SnpState::Uninit);
}

#[test]
fn a_corrupt_store_is_set_aside() {
    let store = MemStorage {
        data: Some(b"not a store at all, not at all".to_vec()),
        quarantined: None,
    };
    let mut fw = snp_firmware("3:0:8:115", store);
    fw.snp_init().unwrap();
    assert_eq!(fw.reported_tcb(), tcb("3:0:8:115"));
}

#[test]
fn vlek_load_unwraps_only_this_chips_hashstick_at_the_reported_tcb() {
    let mut fw = snp_firmware("3:0:8:115", MemStorage::default());
    let seed = [0x5au8; 0x180];
    let stick = wrap_vlek_hashstick(&fw.chip, tcb("3:0:8:115"), &seed).unwrap();
    assert_eq!(
        fw.snp_vlek_load(16, 0, [0; 3], &stick),
        Err(Status::InvalidPlatformState)
    );
    fw.snp_init().unwrap();
    assert_eq!(
        fw.snp_vlek_load(12, 0, [0; 3], &stick),
        Err(Status::InvalidParam)
    );
    assert_eq!(
        fw.snp_vlek_load(16, 1, [0; 3], &stick),
        Err(Status::InvalidParam)
    );
    let other = wrap_vlek_hashstick(&fw.chip, tcb("3:0:8:114"), &seed).unwrap();
    assert_eq!(fw.snp_vlek_load(16, 0, [0; 3], &other), Err(Status::BadSvn));
    let mut tampered = stick;
    tampered[0x20] ^= 1;
    assert_eq!(
        fw.snp_vlek_load(16, 0, [0; 3], &tampered),
        Err(Status::BadMeasurement)
    );
    let foreign =
        wrap_vlek_hashstick(&fw.chip.with_seed([9; 32]), tcb("3:0:8:115"), &seed).unwrap();
    assert_eq!(
        fw.snp_vlek_load(16, 0, [0; 3], &foreign),
        Err(Status::BadMeasurement)
    );
    assert_eq!(
        { fw.snp_platform_status().unwrap().feature_bits } & status_bits::VLEK_EN,
        0
    );
    fw.snp_vlek_load(16, 0, [0; 3], &stick).unwrap();
    assert_ne!(
        { fw.snp_platform_status().unwrap().feature_bits } & status_bits::VLEK_EN,
        0
    );
    fw.snp_shutdown().unwrap();
    assert_eq!(
        { fw.snp_platform_status().unwrap().feature_bits } & status_bits::VLEK_EN,
        0
    );
}
