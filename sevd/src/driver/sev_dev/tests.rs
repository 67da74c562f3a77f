//! The driver's behaviour (reference/linux-abi.md §2.2–§2.4), one test per rule, against
//! the firmware and a mock caller address space.

use std::sync::Mutex;

use uapi::ioctl::SEV_ISSUE_CMD;
use uapi::psp_sev::*;
use uapi::ByteValued;
use vfs::{CallerMemory, Errno, IoctlReply, IoctlRequest, UserAddr, VecMemory};

use super::*;
use crate::firmware::test_support::firmware;

const BASE: u64 = 0x10_0000;
const DATA: u64 = BASE; // the command's struct
const BUF1: u64 = BASE + 0x1000; // first blob
const BUF2: u64 = BASE + 0x4000; // second blob

struct Rig {
    dev: Mutex<SevDev>,
    mem: VecMemory,
}

impl Rig {
    fn new(mode: InitMode) -> Rig {
        Rig {
            dev: Mutex::new(SevDev::probe(firmware(), mode)),
            mem: VecMemory::new(BASE, 0x10000),
        }
    }

    /// Issues `cmd` with `data`: the result and the `error` copied back, if the header was.
    fn issue(&self, cmd: u32, data: u64, writable: bool) -> (Result<(), Errno>, Option<u32>) {
        let arg = SevIssueCmd {
            cmd,
            data,
            error: 0xdead_beef,
        };
        let r = sev_ioctl(
            &self.dev,
            writable,
            &self.mem,
            IoctlRequest {
                cmd: SEV_ISSUE_CMD,
                in_data: arg.as_bytes(),
                out_size: 16,
                compat: false,
            },
        );
        match r {
            Err(e) => (Err(e), None),
            Ok(IoctlReply { result, data }) => {
                let back = SevIssueCmd::from_slice(&data).unwrap();
                let r = if result == 0 {
                    Ok(())
                } else {
                    Err(Errno::from_raw(-result))
                };
                let error = back.error;
                (r, Some(error))
            }
        }
    }

    fn put<T: ByteValued>(&self, addr: u64, v: &T) {
        self.mem.write(UserAddr(addr), v.as_bytes()).unwrap();
    }

    fn get<T: ByteValued>(&self, addr: u64) -> T {
        let mut v = T::default();
        self.mem.read(UserAddr(addr), v.as_bytes_mut()).unwrap();
        v
    }

    fn status(&self) -> SevUserDataStatus {
        let (r, _) = self.issue(SevCmd::PlatformStatus as u32, DATA, false);
        r.unwrap();
        self.get(DATA)
    }
}

#[test]
fn platform_is_init_with_es_after_probe() {
    let rig = Rig::new(InitMode::AtProbe);
    let s = rig.status();
    assert_eq!((s.state, { s.flags }), (1, SEV_STATUS_FLAGS_CONFIG_ES));
    let rig = Rig::new(InitMode::PerCommand);
    assert_eq!(rig.status().state, 0);
}

#[test]
fn unknown_ids_and_requests_are_einval_without_copy_back() {
    let rig = Rig::new(InitMode::AtProbe);
    for id in [SEV_MAX, 14, 0x100, u32::MAX] {
        assert_eq!(rig.issue(id, DATA, true), (Err(Errno::EINVAL), None));
    }
    let arg = SevIssueCmd::default();
    let other = sev_ioctl(
        &rig.dev,
        true,
        &rig.mem,
        IoctlRequest {
            cmd: 0xC010_5301,
            in_data: arg.as_bytes(),
            out_size: 16,
            compat: false,
        },
    );
    assert_eq!(other, Err(Errno::EINVAL));
    let compat = sev_ioctl(
        &rig.dev,
        true,
        &rig.mem,
        IoctlRequest {
            cmd: SEV_ISSUE_CMD,
            in_data: arg.as_bytes(),
            out_size: 16,
            compat: true,
        },
    );
    assert_eq!(compat, Err(Errno::ENOTTY));
}

#[test]
fn state_changing_commands_are_eperm_on_read_only_files_and_keep_error() {
    let rig = Rig::new(InitMode::AtProbe);
    for cmd in [
        SevCmd::FactoryReset,
        SevCmd::PekGen,
        SevCmd::PdhGen,
        SevCmd::PekCsr,
        SevCmd::PekCertImport,
    ] {
        let (r, back) = rig.issue(cmd as u32, DATA, false);
        assert_eq!(r, Err(Errno::EPERM), "{cmd:?}");
        assert_eq!(
            back.unwrap(),
            0xdead_beef,
            "{cmd:?}: error left as the caller set it"
        );
    }
    // PDH_CERT_EXPORT and the read commands work read-only on an INIT platform.
    rig.put(DATA, &SevUserDataPdhCertExport::default());
    let (r, back) = rig.issue(SevCmd::PdhCertExport as u32, DATA, false);
    assert_eq!((r, back.unwrap()), (Err(Errno::EIO), 4), "a length query");
}

#[test]
fn pdh_export_on_uninit_platform_needs_a_writable_file() {
    let rig = Rig::new(InitMode::PerCommand);
    rig.put(DATA, &SevUserDataPdhCertExport::default());
    assert_eq!(
        rig.issue(SevCmd::PdhCertExport as u32, DATA, false).0,
        Err(Errno::EPERM)
    );
    let (r, back) = rig.issue(SevCmd::PdhCertExport as u32, DATA, true);
    assert_eq!((r, back.unwrap()), (Err(Errno::EIO), 4));
    let got: SevUserDataPdhCertExport = rig.get(DATA);
    assert_eq!(
        ({ got.pdh_cert_len }, { got.cert_chain_len }),
        (0x824, 0x186C)
    );
    assert_eq!(
        rig.status().state,
        0,
        "≥ 6.16 shuts the platform down again"
    );
}

#[test]
fn length_negotiation() {
    let rig = Rig::new(InitMode::AtProbe);
    // PEK_CSR query, then a real call.
    rig.put(
        DATA,
        &SevUserDataPekCsr {
            address: BUF1,
            length: 0,
        },
    );
    let (r, back) = rig.issue(SevCmd::PekCsr as u32, DATA, true);
    assert_eq!((r, back.unwrap()), (Err(Errno::EIO), 4));
    assert_eq!({ rig.get::<SevUserDataPekCsr>(DATA).length }, 0x824);
    let (r, back) = rig.issue(SevCmd::PekCsr as u32, DATA, true);
    assert_eq!((r, back.unwrap()), (Ok(()), 0));
    let csr = rig.mem.read_vec(UserAddr(BUF1), 0x824).unwrap();
    assert_eq!(
        uapi::cert::Certificate::decode(&csr).unwrap().usage,
        uapi::cert::usage::PEK
    );
    // A too-small buffer: INVALID_LENGTH, the length written back, nothing copied.
    rig.mem.write(UserAddr(BUF2), &[0xAA; 16]).unwrap();
    rig.put(
        DATA,
        &SevUserDataPekCsr {
            address: BUF2,
            length: 16,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PekCsr as u32, DATA, true).0,
        Err(Errno::EIO)
    );
    assert_eq!({ rig.get::<SevUserDataPekCsr>(DATA).length }, 0x824);
    assert_eq!(rig.mem.read_vec(UserAddr(BUF2), 16).unwrap(), [0xAA; 16]);
    // PDH_CERT_EXPORT: cert_chain_len 0 alone is not a query, but fails INVALID_LENGTH.
    rig.put(
        DATA,
        &SevUserDataPdhCertExport {
            pdh_cert_address: BUF1,
            pdh_cert_len: 0x824,
            cert_chain_address: BUF2,
            cert_chain_len: 0,
        },
    );
    let (r, back) = rig.issue(SevCmd::PdhCertExport as u32, DATA, true);
    assert_eq!((r, back.unwrap()), (Err(Errno::EIO), 4));
    rig.put(
        DATA,
        &SevUserDataPdhCertExport {
            pdh_cert_address: BUF1,
            pdh_cert_len: 0x824,
            cert_chain_address: BUF2,
            cert_chain_len: 0x186C,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PdhCertExport as u32, DATA, true).0,
        Ok(())
    );
    // GET_ID2 query and fetch.
    rig.put(
        DATA,
        &SevUserDataGetId2 {
            address: 0,
            length: 0,
        },
    );
    let (r, back) = rig.issue(SevCmd::GetId2 as u32, DATA, false);
    assert_eq!((r, back.unwrap()), (Err(Errno::EIO), 4));
    assert_eq!({ rig.get::<SevUserDataGetId2>(DATA).length }, 64);
    rig.put(
        DATA,
        &SevUserDataGetId2 {
            address: BUF1,
            length: 4096,
        },
    );
    assert_eq!(rig.issue(SevCmd::GetId2 as u32, DATA, false).0, Ok(()));
    assert_eq!({ rig.get::<SevUserDataGetId2>(DATA).length }, 64);
    let id = rig.mem.read_vec(UserAddr(BUF1), 64).unwrap();
    // Deprecated GET_ID writes socket1 only.
    rig.put(
        DATA,
        &SevUserDataGetId {
            socket1: [0; 64],
            socket2: [0x55; 64],
        },
    );
    assert_eq!(rig.issue(SevCmd::GetId as u32, DATA, false).0, Ok(()));
    let legacy: SevUserDataGetId = rig.get(DATA);
    assert_eq!((legacy.socket1.to_vec(), legacy.socket2), (id, [0x55; 64]));
}

#[test]
fn sizes_are_capped_before_anything_is_allocated() {
    let rig = Rig::new(InitMode::AtProbe);
    rig.put(
        DATA,
        &SevUserDataPekCsr {
            address: BUF1,
            length: 0x4001,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PekCsr as u32, DATA, true).0,
        Err(Errno::EFAULT)
    );
    rig.put(
        DATA,
        &SevUserDataPdhCertExport {
            pdh_cert_address: BUF1,
            pdh_cert_len: 0x824,
            cert_chain_address: BUF2,
            cert_chain_len: u32::MAX,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PdhCertExport as u32, DATA, true).0,
        Err(Errno::EFAULT)
    );
    rig.put(
        DATA,
        &SevUserDataPekCertImport {
            pek_cert_address: BUF1,
            pek_cert_len: 0x4001,
            oca_cert_address: BUF2,
            oca_cert_len: 0x824,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PekCertImport as u32, DATA, true).0,
        Err(Errno::EINVAL)
    );
    rig.put(
        DATA,
        &SevUserDataPekCertImport {
            pek_cert_address: 0,
            pek_cert_len: 0x824,
            oca_cert_address: BUF2,
            oca_cert_len: 0x824,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PekCertImport as u32, DATA, true).0,
        Err(Errno::EINVAL)
    );
    rig.put(
        DATA,
        &SevUserDataGetId2 {
            address: BUF1,
            length: u32::MAX,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::GetId2 as u32, DATA, false).0,
        Err(Errno::ENOMEM)
    );
}

#[test]
fn bad_pointers_are_efault() {
    let rig = Rig::new(InitMode::AtProbe);
    assert_eq!(
        rig.issue(SevCmd::PlatformStatus as u32, 8, false).0,
        Err(Errno::EFAULT)
    );
    assert_eq!(
        rig.issue(SevCmd::PekCsr as u32, u64::MAX - 3, true).0,
        Err(Errno::EFAULT)
    );
    // A good struct pointing at an unmapped blob: the firmware ran, then the copy failed.
    rig.put(
        DATA,
        &SevUserDataPekCsr {
            address: 0x1000,
            length: 0x824,
        },
    );
    let (r, back) = rig.issue(SevCmd::PekCsr as u32, DATA, true);
    assert_eq!((r, back.unwrap()), (Err(Errno::EFAULT), 0));
    rig.put(
        DATA,
        &SevUserDataPekCertImport {
            pek_cert_address: 0x1000,
            pek_cert_len: 0x824,
            oca_cert_address: BUF2,
            oca_cert_len: 0x824,
        },
    );
    assert_eq!(
        rig.issue(SevCmd::PekCertImport as u32, DATA, true).0,
        Err(Errno::EFAULT)
    );
    // Pointer-less commands never touch `data`.
    assert_eq!(rig.issue(SevCmd::PdhGen as u32, 1, true).0, Ok(()));
}

#[test]
fn factory_reset_shuts_down_and_the_next_command_reinitialises() {
    let rig = Rig::new(InitMode::AtProbe);
    let before = {
        rig.put(
            DATA,
            &SevUserDataPekCsr {
                address: BUF1,
                length: 0x824,
            },
        );
        rig.issue(SevCmd::PekCsr as u32, DATA, true).0.unwrap();
        rig.mem.read_vec(UserAddr(BUF1), 0x824).unwrap()
    };
    let (r, back) = rig.issue(SevCmd::FactoryReset as u32, 1, true);
    assert_eq!((r, back.unwrap()), (Ok(()), 0));
    assert_eq!(
        rig.status().state,
        0,
        "left UNINIT as kernels up to 6.15 do"
    );
    rig.put(
        DATA,
        &SevUserDataPekCsr {
            address: BUF1,
            length: 0x824,
        },
    );
    rig.issue(SevCmd::PekCsr as u32, DATA, true).0.unwrap();
    assert_ne!(
        rig.mem.read_vec(UserAddr(BUF1), 0x824).unwrap(),
        before,
        "new PEK"
    );
    assert_eq!(rig.status().state, 1, "implicit INIT stays");
}

#[test]
fn per_command_mode_leaves_the_platform_as_it_found_it() {
    let rig = Rig::new(InitMode::PerCommand);
    assert_eq!(rig.issue(SevCmd::PekGen as u32, 0, true).0, Ok(()));
    assert_eq!(rig.status().state, 0);
}

#[test]
fn snp_commands_are_refused_as_on_a_platform_without_snp() {
    let rig = Rig::new(InitMode::AtProbe);
    for cmd in [
        SevCmd::SnpPlatformStatus,
        SevCmd::SnpCommit,
        SevCmd::SnpSetConfig,
        SevCmd::SnpVlekLoad,
    ] {
        let (r, back) = rig.issue(cmd as u32, DATA, true);
        assert_eq!(r, Err(Errno::EINVAL), "{cmd:?}");
        assert_eq!(back.unwrap(), 0xdead_beef);
    }
    assert_eq!(
        rig.issue(SevCmd::SnpVlekLoad as u32, DATA, false).0,
        Err(Errno::EPERM)
    );
}

fn snp_rig(mode: InitMode) -> Rig {
    Rig {
        dev: Mutex::new(SevDev::probe(
            firmware().with_snp(Box::new(crate::firmware::nv::MemStorage::default())),
            mode,
        )),
        mem: VecMemory::new(BASE, 0x10000),
    }
}

fn snp_config(reported: u64, mask: u32) -> SevUserDataSnpConfig {
    SevUserDataSnpConfig {
        reported_tcb: reported,
        mask_bits: mask,
        rsvd1: [0; 52],
    }
}

#[test]
fn with_snp_the_probe_initialises_snp_then_sev() {
    let rig = snp_rig(InitMode::AtProbe);
    assert_eq!(rig.status().state, 1);
    let (r, back) = rig.issue(SevCmd::SnpPlatformStatus as u32, DATA, false);
    assert_eq!((r, back), (Ok(()), Some(0)));
    let s: SevUserDataSnpStatus = rig.get(DATA);
    assert_eq!((s.state, s.is_rmp_initialized), (1, 0b11));
    let tcb = crate::firmware::chip::DEFAULT_TCB.to_u64();
    assert_eq!(
        ({ s.current_tcb_version }, { s.reported_tcb_version }),
        (tcb, tcb)
    );
    assert_eq!(
        rig.issue(SevCmd::SnpPlatformStatus as u32, 0, false).0,
        Err(Errno::EINVAL)
    );
}

#[test]
fn snp_set_config_needs_a_writable_file_and_a_tcb_not_above_the_committed_one() {
    let rig = snp_rig(InitMode::AtProbe);
    let committed = crate::firmware::chip::DEFAULT_TCB;
    let lower = uapi::snp::TcbVersion {
        microcode: committed.microcode - 1,
        ..committed
    };
    rig.put(DATA, &snp_config(lower.to_u64(), 1));
    assert_eq!(
        rig.issue(SevCmd::SnpSetConfig as u32, DATA, false).0,
        Err(Errno::EPERM)
    );
    assert_eq!(
        rig.issue(SevCmd::SnpSetConfig as u32, DATA, true),
        (Ok(()), Some(0))
    );
    rig.put(DATA, &snp_config(0x6464_0000_0000_6464, 31));
    assert_eq!(
        rig.issue(SevCmd::SnpSetConfig as u32, DATA, true),
        (Err(Errno::EIO), Some(Status::InvalidParam as u32))
    );
    assert_eq!(
        rig.issue(SevCmd::SnpSetConfig as u32, 0, true).0,
        Err(Errno::EINVAL)
    );
    // SNP_COMMIT works on a read-only file and ignores `data`; it drops the configured TCB.
    assert_eq!(
        rig.issue(SevCmd::SnpCommit as u32, 0x1234, false),
        (Ok(()), Some(0))
    );
    rig.issue(SevCmd::SnpPlatformStatus as u32, DATA, false)
        .0
        .unwrap();
    let s: SevUserDataSnpStatus = rig.get(DATA);
    assert_eq!({ s.reported_tcb_version }, committed.to_u64());
}

#[test]
fn snp_vlek_load_checks_its_struct_then_the_firmware_its_hashstick() {
    let rig = snp_rig(InitMode::AtProbe);
    let load = |len: u32, version: u8, address: u64| SevUserDataSnpVlekLoad {
        len,
        vlek_wrapped_version: version,
        rsvd: [0; 3],
        vlek_wrapped_address: address,
    };
    for (arg, want) in [
        (load(12, 0, BUF1), Errno::EINVAL),
        (load(16, 1, BUF1), Errno::EINVAL),
        (load(16, 0, 0), Errno::EINVAL),
        (load(16, 0, 0xdead_0000), Errno::EFAULT),
    ] {
        rig.put(DATA, &arg);
        assert_eq!(
            rig.issue(SevCmd::SnpVlekLoad as u32, DATA, true).0,
            Err(want)
        );
    }
    // A hashstick for the reported TCB that this chip cannot unwrap.
    let mut stick = [0x11u8; 432];
    stick[0x190..0x198].copy_from_slice(&crate::firmware::chip::DEFAULT_TCB.to_u64().to_le_bytes());
    rig.mem.write(UserAddr(BUF1), &stick).unwrap();
    rig.put(DATA, &load(16, 0, BUF1));
    assert_eq!(
        rig.issue(SevCmd::SnpVlekLoad as u32, DATA, true),
        (Err(Errno::EIO), Some(Status::BadMeasurement as u32))
    );
    stick[0x190] ^= 1;
    rig.mem.write(UserAddr(BUF1), &stick).unwrap();
    assert_eq!(
        rig.issue(SevCmd::SnpVlekLoad as u32, DATA, true),
        (Err(Errno::EIO), Some(Status::BadSvn as u32))
    );
}

#[test]
fn per_command_mode_initialises_snp_only_for_its_status() {
    let rig = snp_rig(InitMode::PerCommand);
    assert_eq!(
        rig.issue(SevCmd::SnpPlatformStatus as u32, DATA, false),
        (Ok(()), Some(0))
    );
    let s: SevUserDataSnpStatus = rig.get(DATA);
    assert_eq!(s.state, 1);
    rig.put(DATA, &snp_config(0, 0));
    assert_eq!(
        rig.issue(SevCmd::SnpSetConfig as u32, DATA, true).0,
        Err(Errno::ENODEV)
    );
    assert_eq!(
        rig.issue(SevCmd::SnpCommit as u32, 0, false),
        (Ok(()), Some(0))
    );
    assert_eq!(rig.status().state, 0);
}
