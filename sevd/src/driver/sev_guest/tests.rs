//! `/dev/sev-guest`'s ioctls against the firmware, with a mock caller address space.

use std::sync::{Arc, Mutex};

use uapi::sev_guest::*;
use uapi::snp::PageType;
use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, IoctlRequest, UserAddr, VecMemory};

use super::*;
use crate::firmware::nv::MemStorage;
use crate::firmware::snp::SnpLaunchFinish;
use crate::firmware::test_support::firmware;
use crate::memctl::rmp::HostPage;
use crate::memctl::{GuestAddress, VecGuestMemory};

const BASE: u64 = 0x40_0000;
const REQ: u64 = BASE + 0x1000;
const RESP: u64 = BASE + 0x2000;
const CERTS: u64 = BASE + 0x4000;

/// A running SNP guest's device over a firmware, and the caller's memory.
fn device(certs: Vec<u8>) -> (SevGuestDevice, VecMemory) {
    let mut fw = firmware().with_snp(Box::new(MemStorage::default()));
    fw.snp_init().unwrap();
    fw.df_flush().unwrap();
    let gctx = fw.snp_gctx_create().unwrap();
    fw.snp_launch_start(gctx, 0x30000, [0; 16]).unwrap();
    fw.snp_activate(gctx, 1).unwrap();
    let mem = VecGuestMemory::new();
    mem.add_region(GuestAddress(0), 4096);
    let page = HostPage { object: 1, addr: 0 };
    fw.rmp_assign(page, 1, 0).unwrap();
    fw.snp_launch_update(gctx, page, PageType::Secrets, &mem, GuestAddress(0))
        .unwrap();
    let finish = SnpLaunchFinish {
        id_block: None,
        auth_key_en: false,
        vcek_disabled: false,
        host_data: [3; 32],
    };
    fw.snp_launch_finish(gctx, &finish).unwrap();
    let mut secrets = vec![0u8; 4096];
    fw.guest_view(gctx, GuestAddress(0), &mut secrets, &mem)
        .unwrap();
    let fw = Arc::new(Mutex::new(fw));
    let transport: Box<Transport> = Box::new(move |req: &[u8]| {
        fw.lock()
            .unwrap()
            .snp_guest_request(gctx, req)
            .map_err(|s| GuestRequestError::Refused(s as u64))
    });
    (
        SevGuestDevice::new(&secrets, transport, certs).unwrap(),
        VecMemory::new(BASE, 0x10000),
    )
}

fn call(
    dev: &SevGuestDevice,
    mem: &VecMemory,
    cmd: u32,
    io: SnpGuestRequestIoctl,
) -> (Result<(), Errno>, SnpGuestRequestIoctl) {
    let r = dev.guest_ioctl(
        mem,
        IoctlRequest {
            cmd,
            in_data: io.as_bytes(),
            out_size: 32,
            compat: false,
        },
    );
    match r {
        Err(e) => (Err(e), io),
        Ok(reply) => {
            let back = SnpGuestRequestIoctl::from_slice(&reply.data).unwrap();
            let r = if reply.result == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-reply.result))
            };
            (r, back)
        }
    }
}

fn io(version: u8) -> SnpGuestRequestIoctl {
    SnpGuestRequestIoctl {
        msg_version: version,
        req_data: REQ,
        resp_data: RESP,
        exitinfo2: 0x1234,
        ..Default::default()
    }
}

#[test]
fn a_report_as_linux_hands_it_on() {
    let (dev, mem) = device(vec![]);
    let req = SnpReportReq {
        user_data: [9; 64],
        ..Default::default()
    };
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    let (r, back) = call(&dev, &mem, SNP_GET_REPORT, io(1));
    assert_eq!(r, Ok(()));
    assert_eq!(back.exitinfo2, 0x1234, "not copied back after a success");
    let mut rsp = vec![0u8; 4000];
    mem.read(UserAddr(RESP), &mut rsp).unwrap();
    assert_eq!(rsp[0..4], [0; 4]);
    assert_eq!(u32::from_le_bytes(rsp[4..8].try_into().unwrap()), 0x4a0);
    assert_eq!(rsp[0x20..0x24], 3u32.to_le_bytes(), "version 3");
    assert_eq!(rsp[0x20 + 0x50..0x20 + 0x90], [9; 64]);
    assert_eq!(rsp[0x20 + 0xc0..0x20 + 0xe0], [3; 32]);
    // A second report: the sequence numbers stay in step.
    assert_eq!(call(&dev, &mem, SNP_GET_REPORT, io(1)).0, Ok(()));
}

#[test]
fn bad_requests_get_linuxs_errno() {
    let (dev, mem) = device(vec![]);
    assert_eq!(
        call(&dev, &mem, SNP_GET_REPORT, io(0)).0,
        Err(Errno::EINVAL)
    );
    let mut no_req = io(1);
    no_req.req_data = 0;
    assert_eq!(
        call(&dev, &mem, SNP_GET_REPORT, no_req).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(call(&dev, &mem, 0xC020_5307, io(1)).0, Err(Errno::ENOTTY));
    let mut bad = io(1);
    bad.req_data = 0xdead_0000;
    assert_eq!(call(&dev, &mem, SNP_GET_REPORT, bad).0, Err(Errno::EFAULT));
    // A payload status is no error: VMPL 4 gives 0x16 in the response, the ioctl succeeds.
    let req = SnpReportReq {
        vmpl: 4,
        ..Default::default()
    };
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    assert_eq!(call(&dev, &mem, SNP_GET_REPORT, io(1)).0, Ok(()));
    let mut status = [0u8; 4];
    mem.read(UserAddr(RESP), &mut status).unwrap();
    assert_eq!(u32::from_le_bytes(status), Status::InvalidParam as u32);
    // A firmware refusal (an unknown message version) is EIO with exitinfo2 back, and the
    // key is gone for good.
    let (r, back) = call(&dev, &mem, SNP_GET_REPORT, io(7));
    assert_eq!(r, Err(Errno::EIO));
    assert_eq!(back.exitinfo2, Status::InvalidParam as u64);
    assert_eq!(
        call(&dev, &mem, SNP_GET_REPORT, io(1)).0,
        Err(Errno::ENOTTY)
    );
}

#[test]
fn derived_keys_and_virtees_guest_fw_error() {
    let (dev, mem) = device(vec![]);
    let req = SnpDerivedKeyReq {
        guest_field_select: 0b1001,
        ..Default::default()
    };
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    assert_eq!(call(&dev, &mem, SNP_GET_DERIVED_KEY, io(1)).0, Ok(()));
    let mut rsp = vec![0u8; 64];
    mem.read(UserAddr(RESP), &mut rsp).unwrap();
    assert_eq!(rsp[..4], [0; 4]);
    assert!(rsp[0x20..].iter().any(|b| *b != 0));
    // virtee's guest_fw_error: message version 2, fields 48, everything else all ones.
    let req = SnpDerivedKeyReq {
        root_key_select: 0,
        rsvd: 0,
        guest_field_select: 48,
        vmpl: u32::MAX,
        guest_svn: u32::MAX,
        tcb_version: u64::MAX,
    };
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    assert_eq!(call(&dev, &mem, SNP_GET_DERIVED_KEY, io(2)).0, Ok(()));
    mem.read(UserAddr(RESP), &mut rsp).unwrap();
    assert_eq!(u32::from_le_bytes(rsp[..4].try_into().unwrap()), 0x16);
}

#[test]
fn extended_reports_negotiate_the_certificate_buffer() {
    let certs = cert_table(&[(cert_guid::ARK, &[1; 100]), (cert_guid::VCEK, &[2; 5000])]);
    let (dev, mem) = device(certs.clone());
    let mut req = SnpExtReportReq {
        certs_address: CERTS,
        certs_len: 0,
        ..Default::default()
    };
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    let (r, back) = call(&dev, &mem, SNP_GET_EXT_REPORT, io(1));
    assert_eq!(r, Err(Errno::EIO));
    assert_eq!(back.exitinfo2, 1 << 32, "the VMM's INVALID_LEN");
    let mut got = SnpExtReportReq::default();
    mem.read(UserAddr(REQ), got.as_bytes_mut()).unwrap();
    assert_eq!(got.certs_len, 8192, "the pages needed");
    req.certs_len = 4097;
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    assert_eq!(
        call(&dev, &mem, SNP_GET_EXT_REPORT, io(1)).0,
        Err(Errno::EINVAL)
    );
    req.certs_len = 8192;
    mem.write(UserAddr(REQ), req.as_bytes()).unwrap();
    assert_eq!(call(&dev, &mem, SNP_GET_EXT_REPORT, io(1)).0, Ok(()));
    let mut blob = vec![0u8; 8192];
    mem.read(UserAddr(CERTS), &mut blob).unwrap();
    assert_eq!(blob[..certs.len()], certs[..]);
    assert_eq!(
        blob[..16],
        *uuid::Uuid::parse_str(cert_guid::ARK).unwrap().as_bytes()
    );
    assert_eq!(
        u32::from_le_bytes(blob[16..20].try_into().unwrap()),
        72,
        "after 3 entries"
    );
    assert!(
        blob[48..72].iter().all(|b| *b == 0),
        "the table ends with a zero entry"
    );
    let mut rsp = [0u8; 8];
    mem.read(UserAddr(RESP), &mut rsp).unwrap();
    assert_eq!(u32::from_le_bytes(rsp[4..8].try_into().unwrap()), 0x4a0);
}
