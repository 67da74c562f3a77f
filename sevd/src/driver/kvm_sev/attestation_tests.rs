//! KVM_SEV_GET_ATTESTATION_REPORT on the node: KVM's struct, its length query, its errno,
//! and the firmware's states.

use uapi::kvm::*;
use uapi::launch::AttestationReport;
use uapi::Status;
use vfs::{CallerMemory, Errno, UserAddr};

use super::super::migrate::tests::{image, Host, OUT};

const MNONCE: [u8; 16] = [7; 16];

fn ask(host: &Host, uaddr: u64, len: u32) -> Result<KvmSevAttestationReport, (Errno, u32)> {
    let arg = KvmSevAttestationReport {
        mnonce: MNONCE,
        uaddr,
        len,
        pad0: 0,
    };
    host.op(KvmSevCmdId::GetAttestationReport, &arg)?;
    Ok(host.arg())
}

#[test]
fn a_running_guest_gets_its_report_after_the_length_query() {
    let host = Host::new();
    host.launched(0x1, &image());
    let eio = |status: Status| Err((Errno::EIO, status as u32));
    assert_eq!(ask(&host, 0, 0), eio(Status::InvalidLength));
    assert_eq!(
        host.arg::<KvmSevAttestationReport>().len,
        208,
        "the length back"
    );
    // A bigger buffer: the report, then zeros.
    host.mem.write(UserAddr(OUT), &[0xaa; 300]).unwrap();
    let back = ask(&host, OUT, 300).unwrap();
    assert_eq!(back.len, 208);
    let bytes = host.read(OUT, 300);
    let r = AttestationReport::decode(&bytes[..208]).unwrap();
    assert_eq!((r.mnonce, r.policy), (MNONCE, 0x1));
    assert!(bytes[208..].iter().all(|&b| b == 0));
    // No buffer but a length: the firmware gets none and says so; nothing is written back.
    assert_eq!(ask(&host, 0, 208), eio(Status::InvalidLength));
    assert_eq!(host.arg::<KvmSevAttestationReport>().len, 208);
    // Too short a buffer.
    assert_eq!(ask(&host, OUT, 100), eio(Status::InvalidLength));
}

#[test]
fn kvms_errno_for_bad_buffers_and_states() {
    let host = Host::new();
    // Not an SEV guest.
    host.kvm
        .create_vm(super::super::migrate::tests::FH, 1, 0)
        .unwrap();
    assert_eq!(ask(&host, OUT, 208).unwrap_err().0, Errno::ENOTTY);
    host.kvm.destroy_vm(super::super::migrate::tests::FH);
    // Before LAUNCH_MEASURE.
    host.vm();
    host.op(KvmSevCmdId::LaunchStart, &KvmSevLaunchStart::default())
        .unwrap();
    assert_eq!(
        ask(&host, OUT, 208),
        Err((Errno::EIO, Status::InvalidGuestState as u32))
    );
    host.kvm.destroy_vm(super::super::migrate::tests::FH);
    host.launched(0, &image());
    // Over 16 KiB, before the firmware.
    assert_eq!(ask(&host, OUT, 16 * 1024 + 1).unwrap_err().0, Errno::EINVAL);
    // A buffer the caller does not have: EFAULT, with the length written back as KVM does.
    assert_eq!(ask(&host, 0x7000_0000, 208).unwrap_err().0, Errno::EFAULT);
    // An unreadable struct.
    let cmd = KvmSevCmd {
        id: KvmSevCmdId::GetAttestationReport as u32,
        pad0: 0,
        data: 0x7000_0000,
        error: 0,
        sev_fd: 3,
    };
    let (r, _) = host.ioctl(
        uapi::ioctl::SEVD_VM_ENCRYPT_OP,
        uapi::ByteValued::as_bytes(&cmd),
    );
    assert_eq!(r, -(Errno::EFAULT as i32));
}
