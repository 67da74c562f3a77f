//! Runs of pages through `SEVD_VM_SEND_PAGES` / `SEVD_VM_RECEIVE_PAGES`, between the two
//! hosts of the migration tests.

use uapi::ioctl::{SEVD_VM_RECEIVE_PAGES, SEVD_VM_SEND_PAGES};
use uapi::kvm::*;
use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, UserAddr};

use super::super::migrate::tests::{
    image, receive_start, send_start, Host, BASE, FH, RAM, RAM_LEN,
};

const HDRS: u64 = BASE + 0x18000;
const TRANS: u64 = BASE + 0x20000;
const PAGES: u32 = (RAM_LEN / 4096) as u32;

impl Host {
    fn run(&self, cmd: u32, arg: &SevdPages) -> (Result<(), Errno>, SevdPages) {
        let (r, back) = self.ioctl(cmd, arg.as_bytes());
        let back = SevdPages::from_slice(&back).unwrap_or_default();
        (
            if r == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-r))
            },
            back,
        )
    }
}

fn whole_ram() -> SevdPages {
    SevdPages {
        guest_uaddr: RAM,
        npages: PAGES,
        hdr_uaddr: HDRS,
        trans_uaddr: TRANS,
        ..Default::default()
    }
}

/// Both hosts with a guest between SEND_START and RECEIVE_START.
fn started() -> (Host, Host) {
    let (src, dst) = (Host::new(), Host::new());
    src.launched(0, &image());
    dst.vm();
    let started = send_start(&src, &dst).unwrap();
    receive_start(&src, &dst, started.policy).unwrap();
    (src, dst)
}

/// Copies the run's packets from `src`'s buffers to `dst`'s.
fn carry(src: &Host, dst: &Host) {
    let hdrs = src.read(HDRS, PAGES as usize * 52);
    let trans = src.read(TRANS, RAM_LEN as usize);
    dst.mem.write(UserAddr(HDRS), &hdrs).unwrap();
    dst.mem.write(UserAddr(TRANS), &trans).unwrap();
}

#[test]
fn a_run_moves_the_whole_guest() {
    let (src, dst) = started();
    let (r, back) = src.run(SEVD_VM_SEND_PAGES, &whole_ram());
    r.unwrap();
    assert_eq!((back.done, back.error), (PAGES, 0));
    carry(&src, &dst);
    let (r, back) = dst.run(SEVD_VM_RECEIVE_PAGES, &whole_ram());
    r.unwrap();
    assert_eq!(back.done, PAGES);
    src.plain(KvmSevCmdId::SendFinish).unwrap();
    dst.plain(KvmSevCmdId::ReceiveFinish).unwrap();
    let img = image();
    assert_eq!(dst.guest_view(0x1000, img.len()), img);
    assert_ne!(dst.read(RAM + 0x1000, img.len()), img, "ciphertext");
    src.kvm.destroy_vm(FH);
    dst.kvm.destroy_vm(FH);
    assert_eq!((src.guests(), dst.guests()), (0, 0));
}

#[test]
fn a_bad_packet_stops_the_run_where_it_is() {
    let (src, dst) = started();
    src.run(SEVD_VM_SEND_PAGES, &whole_ram()).0.unwrap();
    carry(&src, &dst);
    // One bit of page 5's ciphertext.
    let at = TRANS + 5 * 4096 + 100;
    let byte = dst.read(at, 1)[0] ^ 0x10;
    dst.mem.write(UserAddr(at), &[byte]).unwrap();
    let before = dst.read(RAM, RAM_LEN as usize);
    let (r, back) = dst.run(SEVD_VM_RECEIVE_PAGES, &whole_ram());
    assert_eq!(r, Err(Errno::EIO));
    assert_eq!((back.done, back.error), (5, Status::BadMeasurement as u32));
    let after = dst.read(RAM, RAM_LEN as usize);
    assert_ne!(
        after[..5 * 4096],
        before[..5 * 4096],
        "pages before it written"
    );
    assert_eq!(
        after[5 * 4096..],
        before[5 * 4096..],
        "it and after untouched"
    );
    // The source sends it again; the rest of the run goes in.
    carry(&src, &dst);
    let rest = SevdPages {
        guest_uaddr: RAM + 5 * 4096,
        npages: PAGES - 5,
        hdr_uaddr: HDRS + 5 * 52,
        trans_uaddr: TRANS + 5 * 4096,
        ..Default::default()
    };
    dst.run(SEVD_VM_RECEIVE_PAGES, &rest).0.unwrap();
    dst.plain(KvmSevCmdId::ReceiveFinish).unwrap();
    let img = image();
    assert_eq!(dst.guest_view(0x1000, img.len()), img);
}

#[test]
fn bad_runs_get_the_nodes_errno() {
    let (src, dst) = started();
    let cases = [
        (
            SevdPages {
                npages: 0,
                ..whole_ram()
            },
            Errno::EINVAL,
        ),
        (
            SevdPages {
                npages: SEVD_PAGES_MAX + 1,
                ..whole_ram()
            },
            Errno::EINVAL,
        ),
        (
            SevdPages {
                guest_uaddr: RAM + 16,
                npages: 1,
                ..whole_ram()
            },
            Errno::EINVAL,
        ),
        (
            SevdPages {
                hdr_uaddr: 0,
                ..whole_ram()
            },
            Errno::EINVAL,
        ),
        (
            SevdPages {
                trans_uaddr: 0,
                ..whole_ram()
            },
            Errno::EINVAL,
        ),
        // One page past the slot.
        (
            SevdPages {
                npages: PAGES + 1,
                ..whole_ram()
            },
            Errno::EFAULT,
        ),
        (
            SevdPages {
                guest_uaddr: 0x7000_0000,
                ..whole_ram()
            },
            Errno::EFAULT,
        ),
    ];
    for (arg, errno) in cases {
        assert_eq!(
            src.run(SEVD_VM_SEND_PAGES, &arg).0,
            Err(errno),
            "send {arg:?}"
        );
        assert_eq!(
            dst.run(SEVD_VM_RECEIVE_PAGES, &arg).0,
            Err(errno),
            "receive {arg:?}"
        );
    }
    // Buffers the caller does not have.
    let unmapped = SevdPages {
        trans_uaddr: 0x7000_0000,
        ..whole_ram()
    };
    assert_eq!(
        dst.run(SEVD_VM_RECEIVE_PAGES, &unmapped).0,
        Err(Errno::EFAULT)
    );
    assert_eq!(src.run(SEVD_VM_SEND_PAGES, &unmapped).0, Err(Errno::EFAULT));
    // A struct too short.
    let (r, _) = src.ioctl(SEVD_VM_SEND_PAGES, &[0u8; 8]);
    assert_eq!(r, -(Errno::EINVAL as i32));
    // Each side only in its own state: receiving on the source, sending on the target.
    src.run(SEVD_VM_SEND_PAGES, &whole_ram()).0.unwrap();
    let (r, back) = src.run(SEVD_VM_RECEIVE_PAGES, &whole_ram());
    assert_eq!(
        (r, back.error),
        (Err(Errno::EIO), Status::InvalidGuestState as u32)
    );
    let (r, back) = dst.run(SEVD_VM_SEND_PAGES, &whole_ram());
    assert_eq!(
        (r, back.error),
        (Err(Errno::EIO), Status::InvalidGuestState as u32)
    );
}

#[test]
fn runs_need_an_sev_guest() {
    let host = Host::new();
    host.kvm.create_vm(FH, 1, 0).unwrap();
    assert_eq!(
        host.run(SEVD_VM_SEND_PAGES, &whole_ram()).0,
        Err(Errno::ENOTTY)
    );
    assert_eq!(
        host.run(SEVD_VM_RECEIVE_PAGES, &whole_ram()).0,
        Err(Errno::EINVAL)
    );
}
