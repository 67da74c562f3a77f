//! A guest's migration through the VM node (or KVM): SEND_* on the source VM, RECEIVE_* on
//! the target's, with KVM's structs and the session-length query QEMU's series makes. Runs
//! of pages go through the node's `SEVD_VM_SEND_PAGES` / `SEVD_VM_RECEIVE_PAGES`, and a page
//! at a time through KVM's ids 9 and 13 where the transport has no runs (KVM itself).

use uapi::ioctl::{
    SEVD_VM_RECEIVE_PAGES, SEVD_VM_RECEIVE_VMSA, SEVD_VM_SEND_PAGES, SEVD_VM_SEND_VMSA,
};
use uapi::kvm::*;
use uapi::{ByteValued, Status};
use vfs::Errno;

use super::{addr, check, explained, PlatformError, Vm};

pub use crate::firmware::migration::PACKET_HEADER_LEN;
/// A page.
const PAGE: usize = 4096;

/// The target platform's certificates, as SEND_START takes them.
#[derive(Debug, Clone, Copy)]
pub struct TargetCerts<'a> {
    /// Its PDH.
    pub pdh: &'a [u8],
    /// Its PEK ‖ OCA ‖ CEK.
    pub plat_certs: &'a [u8],
    /// AMD's ASK ‖ ARK for its chip (may be empty when the policy checks no chain).
    pub amd_certs: &'a [u8],
}

/// A run of pages that stopped: how many pages were done before the one that failed.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {done} pages of the run)")]
pub struct RunError {
    /// Pages done, in order.
    pub done: u32,
    /// Why the next one failed.
    pub error: PlatformError,
}

fn ptr_len(b: &[u8]) -> (u64, u32) {
    if b.is_empty() {
        (0, 0)
    } else {
        (b.as_ptr() as u64, b.len() as u32)
    }
}

impl Vm {
    /// Guest memory's slots: (guest address, size) in slot order.
    pub fn slots(&self) -> Vec<(u64, usize)> {
        self.regions.iter().map(|r| (r.gpa, r.buf.len())).collect()
    }

    /// The runs of guest pages this process has ever touched, as (guest address, bytes),
    /// in slot order: what a migration sends. A page never touched is zero here and, never
    /// sent, stays zero at the target, as QEMU sends such pages as zero pages.
    pub fn touched(&self) -> std::io::Result<Vec<(u64, usize)>> {
        let mut runs = vec![];
        for r in &self.regions {
            for (off, len) in super::pagemap::touched(r.buf.as_ptr() as usize, r.buf.len())? {
                runs.push((r.gpa + off as u64, len));
            }
        }
        Ok(runs)
    }

    /// KVM_SEV_SEND_START to the platform `target` describes, after the session-length
    /// query: the guest's policy and the session for the target's RECEIVE_START. The guest
    /// goes to SUPDATE; a policy that forbids the move fails here with the firmware's reason.
    pub fn send_start(&self, target: &TargetCerts<'_>) -> Result<(u32, Vec<u8>), PlatformError> {
        let (pdh, pdh_len) = ptr_len(target.pdh);
        let (plat, plat_len) = ptr_len(target.plat_certs);
        let (amd, amd_len) = ptr_len(target.amd_certs);
        let mut arg = KvmSevSendStart {
            pdh_cert_uaddr: pdh,
            pdh_cert_len: pdh_len,
            plat_certs_uaddr: plat,
            plat_certs_len: plat_len,
            amd_certs_uaddr: amd,
            amd_certs_len: amd_len,
            ..Default::default()
        };
        let name = "SEND_START";
        match self.op(KvmSevCmdId::SendStart, name, addr(&mut arg)) {
            Err(PlatformError::Firmware { status, .. })
                if status == Status::InvalidLength as u32 => {}
            Err(e) => return Err(e),
            Ok(()) => {
                return Err(PlatformError::Os {
                    cmd: name,
                    errno: Errno::EPROTO,
                })
            }
        }
        let mut session = vec![0u8; arg.session_len as usize];
        arg.session_uaddr = session.as_mut_ptr() as u64;
        self.op(KvmSevCmdId::SendStart, name, addr(&mut arg))?;
        Ok((arg.policy, session))
    }

    /// The run of `headers.len() / 52` pages from guest address `gpa`, sealed for the
    /// target: each page's header and transport bytes written to `headers` and `trans`.
    pub fn send_pages(
        &self,
        gpa: u64,
        headers: &mut [u8],
        trans: &mut [u8],
    ) -> Result<(), RunError> {
        let n = headers.len() / PACKET_HEADER_LEN;
        if !self.t.offers_page_runs() {
            return self.each_page(gpa, n, |i, at| {
                let h = &mut headers[i * PACKET_HEADER_LEN..][..PACKET_HEADER_LEN];
                let t = &mut trans[i * PAGE..][..PAGE];
                self.send_update_data(at, h, t)
            });
        }
        let buffers = (headers.as_mut_ptr(), trans.as_mut_ptr());
        self.run(SEVD_VM_SEND_PAGES, "SEND_UPDATE_DATA", gpa, n, buffers)
    }

    /// The packets of a run into the pages from guest address `gpa`, one 52-byte header and
    /// 4096 transport bytes each.
    pub fn receive_pages(&self, gpa: u64, headers: &[u8], trans: &[u8]) -> Result<(), RunError> {
        let n = headers.len() / PACKET_HEADER_LEN;
        if !self.t.offers_page_runs() {
            return self.each_page(gpa, n, |i, at| {
                let h = &headers[i * PACKET_HEADER_LEN..][..PACKET_HEADER_LEN];
                self.receive_update_data(at, h, &trans[i * PAGE..][..PAGE])
            });
        }
        // The node only reads the buffers of a receive.
        let buffers = (headers.as_ptr() as *mut u8, trans.as_ptr() as *mut u8);
        self.run(
            SEVD_VM_RECEIVE_PAGES,
            "RECEIVE_UPDATE_DATA",
            gpa,
            n,
            buffers,
        )
    }

    /// One `SEVD_VM_*_PAGES` of `n` pages from `gpa` with the (headers, transport) buffers.
    fn run(
        &self,
        request: u32,
        name: &'static str,
        gpa: u64,
        n: usize,
        (hdr, trans): (*mut u8, *mut u8),
    ) -> Result<(), RunError> {
        let mut arg = SevdPages {
            guest_uaddr: self.uaddr(gpa),
            npages: n as u32,
            hdr_uaddr: hdr as u64,
            trans_uaddr: trans as u64,
            ..Default::default()
        };
        let r = self.t.ioctl(request, arg.as_bytes_mut());
        let error = arg.error;
        explained(&*self.t, name, check(name, r, error)).map_err(|error| RunError {
            done: arg.done,
            error,
        })
    }

    fn each_page(
        &self,
        gpa: u64,
        n: usize,
        mut page: impl FnMut(usize, u64) -> Result<(), PlatformError>,
    ) -> Result<(), RunError> {
        for i in 0..n {
            page(i, gpa + (i * PAGE) as u64).map_err(|error| RunError {
                done: i as u32,
                error,
            })?;
        }
        Ok(())
    }

    /// KVM_SEV_SEND_UPDATE_DATA of the page at `gpa` (`trans` as long as the page).
    pub fn send_update_data(
        &self,
        gpa: u64,
        header: &mut [u8],
        trans: &mut [u8],
    ) -> Result<(), PlatformError> {
        let (h, t) = (
            (header.as_mut_ptr(), header.len()),
            (trans.as_mut_ptr(), trans.len()),
        );
        self.packet_op(KvmSevCmdId::SendUpdateData, "SEND_UPDATE_DATA", gpa, h, t)
    }

    /// KVM_SEV_RECEIVE_UPDATE_DATA of one packet into the page at `gpa`.
    pub fn receive_update_data(
        &self,
        gpa: u64,
        header: &[u8],
        trans: &[u8],
    ) -> Result<(), PlatformError> {
        // KVM only reads the buffers of a receive.
        let (h, t) = (
            (header.as_ptr() as *mut u8, header.len()),
            (trans.as_ptr() as *mut u8, trans.len()),
        );
        self.packet_op(
            KvmSevCmdId::ReceiveUpdateData,
            "RECEIVE_UPDATE_DATA",
            gpa,
            h,
            t,
        )
    }

    /// One page's packet op (`struct kvm_sev_send_update_data`, which the receive shares).
    fn packet_op(
        &self,
        id: KvmSevCmdId,
        name: &'static str,
        gpa: u64,
        (hdr, hdr_len): (*mut u8, usize),
        (trans, trans_len): (*mut u8, usize),
    ) -> Result<(), PlatformError> {
        let mut arg = KvmSevSendUpdateData {
            hdr_uaddr: hdr as u64,
            hdr_len: hdr_len as u32,
            guest_uaddr: self.uaddr(gpa),
            guest_len: trans_len as u32,
            trans_uaddr: trans as u64,
            trans_len: trans_len as u32,
            ..Default::default()
        };
        self.op(id, name, addr(&mut arg))
    }

    /// `SEVD_VM_SEND_VMSA`: vCPU `vcpu`'s save area as a packet (header, transport bytes).
    pub fn send_vmsa(&self, vcpu: u32) -> Result<(Vec<u8>, Vec<u8>), PlatformError> {
        let mut header = vec![0u8; PACKET_HEADER_LEN];
        let mut trans = vec![0u8; PAGE];
        let mut arg = SevdVmsaPacket {
            vcpu,
            hdr_uaddr: header.as_mut_ptr() as u64,
            hdr_len: header.len() as u32,
            trans_uaddr: trans.as_mut_ptr() as u64,
            trans_len: trans.len() as u32,
            ..Default::default()
        };
        self.vmsa_op(SEVD_VM_SEND_VMSA, "SEND_UPDATE_VMSA", &mut arg)?;
        Ok((header, trans))
    }

    /// `SEVD_VM_RECEIVE_VMSA`: a packet from SEND_UPDATE_VMSA as vCPU `vcpu`'s save area.
    pub fn receive_vmsa(
        &self,
        vcpu: u32,
        header: &[u8],
        trans: &[u8],
    ) -> Result<(), PlatformError> {
        let mut arg = SevdVmsaPacket {
            vcpu,
            hdr_uaddr: header.as_ptr() as u64,
            hdr_len: header.len() as u32,
            trans_uaddr: trans.as_ptr() as u64,
            trans_len: trans.len() as u32,
            ..Default::default()
        };
        self.vmsa_op(SEVD_VM_RECEIVE_VMSA, "RECEIVE_UPDATE_VMSA", &mut arg)
    }

    fn vmsa_op(
        &self,
        request: u32,
        name: &'static str,
        arg: &mut SevdVmsaPacket,
    ) -> Result<(), PlatformError> {
        let r = self.t.ioctl(request, arg.as_bytes_mut());
        let error = arg.error;
        explained(&*self.t, name, check(name, r, error))
    }

    /// KVM_SEV_SEND_FINISH: SUPDATE → SENT.
    pub fn send_finish(&self) -> Result<(), PlatformError> {
        self.op(KvmSevCmdId::SendFinish, "SEND_FINISH", 0)
    }

    /// KVM_SEV_SEND_CANCEL: SUPDATE → RUNNING, so the guest may be sent again.
    pub fn send_cancel(&self) -> Result<(), PlatformError> {
        self.op(KvmSevCmdId::SendCancel, "SEND_CANCEL", 0)
    }

    /// KVM_SEV_RECEIVE_START with the source's PDH and session, on a VM after its init: a
    /// new guest in RUPDATE, activated on the VM's ASID. Returns its handle.
    pub fn receive_start(
        &self,
        policy: u32,
        pdh: &[u8],
        session: &[u8],
    ) -> Result<u32, PlatformError> {
        let mut arg = KvmSevReceiveStart {
            policy,
            pdh_uaddr: pdh.as_ptr() as u64,
            pdh_len: pdh.len() as u32,
            session_uaddr: session.as_ptr() as u64,
            session_len: session.len() as u32,
            ..Default::default()
        };
        self.op(KvmSevCmdId::ReceiveStart, "RECEIVE_START", addr(&mut arg))?;
        Ok(arg.handle)
    }

    /// KVM_SEV_RECEIVE_FINISH: RUPDATE → RUNNING.
    pub fn receive_finish(&self) -> Result<(), PlatformError> {
        self.op(KvmSevCmdId::ReceiveFinish, "RECEIVE_FINISH", 0)
    }
}
