//! The guest's `/dev/sev-guest`, as Linux's sev-guest driver (drivers/virt/coco/sev-guest,
//! snp.md §7.1) gives it to programs in an SNP guest: SNP_GET_REPORT, SNP_GET_DERIVED_KEY
//! and SNP_GET_EXT_REPORT over `struct snp_guest_request_ioctl`. Requests are sealed under
//! VMPCK0 from the guest's secrets page and handed to the VMM's half of the guest request;
//! the host's certificates come with extended reports.

use std::sync::Mutex;

use uapi::sev_guest::*;
use uapi::snp::guest_msg::{key_rsp, report_rsp};
use uapi::ByteValued;
use vfs::{Caller, CallerMemory, CharDevice, Errno, IoctlReply, IoctlRequest, OpenFile, UserAddr};

use crate::guest::{GuestChannel, GuestRequestError, KeyRequest};

/// The VMM's half of a guest request: the sealed request page in, the sealed answer out, or
/// the `exitinfo2` of a refusal.
pub type Transport = dyn Fn(&[u8]) -> Result<Vec<u8>, GuestRequestError> + Send + Sync;

/// `SEV_FW_BLOB_MAX_SIZE`: the largest certificate buffer the driver takes.
const CERTS_MAX: u32 = uapi::snp::cert_table::MAX_LEN as u32;
const PAGE: u32 = 4096;

/// One guest's `/dev/sev-guest`.
pub struct SevGuestDevice {
    /// VMPCK0's channel; `None` once a failed request wiped the key, as Linux does.
    channel: Mutex<Option<GuestChannel>>,
    transport: Box<Transport>,
    /// The certificate blob the host gives extended reports (table and certificates).
    certs: Vec<u8>,
}

impl std::fmt::Debug for SevGuestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuestDevice").finish_non_exhaustive()
    }
}

/// The extended report's certificate blob: a table of `{GUID, offset, length}` entries
/// ended by a zero entry, then the certificates (snp.md §8.3), GUIDs in RFC byte order.
pub fn cert_table(certs: &[(&str, &[u8])]) -> Vec<u8> {
    let table_len = (certs.len() + 1) * 24;
    let mut out = vec![0u8; table_len];
    let mut at = table_len;
    for (i, (guid, der)) in certs.iter().enumerate() {
        let guid = uuid::Uuid::parse_str(guid)
            .map(|u| *u.as_bytes())
            .unwrap_or([0; 16]);
        let entry = &mut out[i * 24..(i + 1) * 24];
        entry[..16].copy_from_slice(&guid);
        entry[16..20].copy_from_slice(&(at as u32).to_le_bytes());
        entry[20..24].copy_from_slice(&(der.len() as u32).to_le_bytes());
        at += der.len();
    }
    for (_, der) in certs {
        out.extend_from_slice(der);
    }
    out
}

impl SevGuestDevice {
    /// The device of a guest whose secrets page is `secrets` (its VMPCK0), its requests going
    /// through `transport`, with `certs` for extended reports (empty for none).
    pub fn new(secrets: &[u8], transport: Box<Transport>, certs: Vec<u8>) -> Option<Self> {
        Some(SevGuestDevice {
            channel: Mutex::new(Some(GuestChannel::from_secrets_page(secrets, 0)?)),
            transport,
            certs,
        })
    }

    /// One exchange on the channel: the opened answer. A refusal wipes the key.
    fn exchange(
        &self,
        io: &mut SnpGuestRequestIoctl,
        run: impl FnOnce(&mut GuestChannel, &Transport) -> Result<Vec<u8>, GuestRequestError>,
    ) -> Result<Vec<u8>, Errno> {
        let mut guard = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let Some(channel) = guard.as_mut() else {
            log::error!("sev-guest: VMPCK is disabled");
            return Err(Errno::ENOTTY);
        };
        match run(channel, &*self.transport) {
            Ok(answer) => {
                io.exitinfo2 = 0;
                Ok(answer)
            }
            Err(GuestRequestError::Refused(exitinfo2)) => {
                io.exitinfo2 = exitinfo2;
                log::error!(
                    "sev-guest: the request failed (exitinfo2 {exitinfo2:#x}); VMPCK0 disabled"
                );
                *guard = None;
                Err(Errno::EIO)
            }
            Err(e) => {
                log::error!("sev-guest: {e}; VMPCK0 disabled");
                *guard = None;
                Err(Errno::EIO)
            }
        }
    }

    fn get_report(
        &self,
        mem: &dyn CallerMemory,
        io: &mut SnpGuestRequestIoctl,
    ) -> Result<(), Errno> {
        let req: SnpReportReq = read(mem, io.req_data)?;
        self.get_report_for(mem, io, &req)
    }

    fn get_derived_key(
        &self,
        mem: &dyn CallerMemory,
        io: &mut SnpGuestRequestIoctl,
    ) -> Result<(), Errno> {
        let req: SnpDerivedKeyReq = read(mem, io.req_data)?;
        let r = KeyRequest {
            root_key_select: req.root_key_select,
            guest_field_select: req.guest_field_select,
            vmpl: req.vmpl,
            guest_svn: req.guest_svn,
            tcb_version: req.tcb_version,
            // Linux sends its 32-byte struct at whatever version it is asked for.
            launch_mit_vector: (io.msg_version >= 2).then_some(0),
        };
        let rsp = self.exchange(io, |c, t| {
            c.derived_key(&r, t).map(|(status, key)| {
                let mut out = vec![0u8; key_rsp::LEN];
                out[..4].copy_from_slice(&status.to_le_bytes());
                out[key_rsp::KEY].copy_from_slice(&*key);
                out
            })
        })?;
        write(mem, io.resp_data, &rsp, SNP_DERIVED_KEY_RESP_LEN)
    }

    fn get_ext_report(
        &self,
        mem: &dyn CallerMemory,
        io: &mut SnpGuestRequestIoctl,
    ) -> Result<(), Errno> {
        let mut req: SnpExtReportReq = read(mem, io.req_data)?;
        let wants = req.certs_len != 0 && req.certs_address != 0;
        if wants && (req.certs_len > CERTS_MAX || req.certs_len % PAGE != 0) {
            return Err(Errno::EINVAL);
        }
        let needed = (self.certs.len() as u32).div_ceil(PAGE) * PAGE;
        if !self.certs.is_empty() && (!wants || req.certs_len < needed) {
            // The host has certificates and the buffer cannot hold them: the length it
            // needs goes back, with the VMM's INVALID_LEN.
            req.certs_len = needed;
            io.exitinfo2 = SNP_GUEST_VMM_ERR_INVALID_LEN << SNP_GUEST_VMM_ERR_SHIFT;
            mem.write(UserAddr(io.req_data), req.as_bytes())
                .map_err(|_| Errno::EFAULT)?;
            return Err(Errno::EIO);
        }
        self.get_report_for(mem, io, &req.data)?;
        if wants {
            let mut blob = vec![0u8; req.certs_len as usize];
            blob[..self.certs.len()].copy_from_slice(&self.certs);
            mem.write(UserAddr(req.certs_address), &blob)
                .map_err(|_| Errno::EFAULT)?;
        }
        Ok(())
    }

    fn get_report_for(
        &self,
        mem: &dyn CallerMemory,
        io: &mut SnpGuestRequestIoctl,
        req: &SnpReportReq,
    ) -> Result<(), Errno> {
        let version = io.msg_version;
        let rsp = self.exchange(io, |c, t| {
            c.report_at(version, &req.user_data, req.vmpl, t)
                .map(|r| payload_of_report(&r))
        })?;
        write(mem, io.resp_data, &rsp, SNP_REPORT_RESP_LEN)
    }

    /// `snp_guest_ioctl` with the caller's memory `mem`.
    pub fn guest_ioctl(
        &self,
        mem: &dyn CallerMemory,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let mut io = SnpGuestRequestIoctl::from_slice(request.in_data).ok_or(Errno::EFAULT)?;
        let original = io;
        io.exitinfo2 = 0xff;
        if io.msg_version == 0 {
            return Err(Errno::EINVAL);
        }
        if io.req_data == 0 || io.resp_data == 0 {
            return Err(Errno::EINVAL);
        }
        let r = match request.cmd {
            SNP_GET_REPORT => self.get_report(mem, &mut io),
            SNP_GET_DERIVED_KEY => self.get_derived_key(mem, &mut io),
            SNP_GET_EXT_REPORT => self.get_ext_report(mem, &mut io),
            _ => return Err(Errno::ENOTTY),
        };
        // The struct goes back only when exitinfo2 says something.
        let data = if io.exitinfo2 != 0 {
            io.as_bytes().to_vec()
        } else {
            original.as_bytes().to_vec()
        };
        Ok(match r {
            Ok(()) => IoctlReply::ok(data),
            Err(e) => IoctlReply::failed(e, data),
        })
    }
}

/// MSG_REPORT_RSP's payload as Linux hands it on: STATUS, REPORT_SIZE, reserved, report.
fn payload_of_report(r: &crate::guest::ReportResponse) -> Vec<u8> {
    let mut out = vec![0u8; report_rsp::LEN];
    out[..4].copy_from_slice(&r.status.to_le_bytes());
    if r.status == 0 {
        out[4..8].copy_from_slice(&(r.report.len() as u32).to_le_bytes());
        out[report_rsp::REPORT_AT..report_rsp::REPORT_AT + r.report.len()]
            .copy_from_slice(&r.report);
    }
    out
}

fn read<T: ByteValued>(mem: &dyn CallerMemory, addr: u64) -> Result<T, Errno> {
    crate::driver::read_obj(mem, addr)
}

/// Writes `data` padded with zeros to `len` bytes (the user struct's size).
fn write(mem: &dyn CallerMemory, addr: u64, data: &[u8], len: usize) -> Result<(), Errno> {
    let mut out = vec![0u8; len];
    let n = data.len().min(len);
    out[..n].copy_from_slice(&data[..n]);
    mem.write(UserAddr(addr), &out).map_err(|_| Errno::EFAULT)
}

impl CharDevice for SevGuestDevice {
    fn ioctl(
        &self,
        caller: &Caller,
        _file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        self.guest_ioctl(&caller.memory(), request)
    }
}

#[cfg(test)]
mod tests;
