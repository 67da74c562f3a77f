//! The `/dev/sev` ioctl, as `drivers/crypto/ccp/sev-dev.c` implements it
//! (reference/linux-abi.md §2): one `do_<cmd>` per command in the kernel's own order of checks.

use std::sync::Mutex;

use uapi::ioctl::SEV_ISSUE_CMD;
use uapi::psp_sev::*;
use uapi::psp_sev_cmds::{Writable, KMALLOC_MAX_SIZE};
use uapi::{ByteValued, Status};
use vfs::{CallerMemory, Errno, IoctlReply, IoctlRequest, UserAddr};

use super::staged::Staged;
use super::{read_obj, write_bytes, write_obj};
use crate::firmware::snp::SnpState;
use crate::firmware::{Firmware, FwResult, PlatformState, INIT_FLAGS_ES};

/// `-ENOTSUPP` (kernel-internal errno 524), what GET_ID returns below API 0.16.
const ENOTSUPP: i32 = 524;

/// When the platform is initialised, by kernel generation (reference/linux-abi.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitMode {
    /// Kernels up to 6.15: INIT (with SEV-ES) at probe; implicit INITs leave it INIT.
    #[default]
    AtProbe,
    /// Kernels from 6.16: UNINIT until needed; state-changing commands INIT, run, SHUT DOWN.
    PerCommand,
}

/// The kernel's own view of the platform (`sev->state`): it only tracks UNINIT and INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KState {
    Uninit,
    Init,
}

/// The sev-dev driver over the software firmware.
#[derive(Debug)]
pub struct SevDev {
    fw: Firmware,
    mode: InitMode,
    state: KState,
    /// `sev->snp_initialized`.
    snp: KState,
    api: (u8, u8),
}

/// One command's context: the caller's memory, the file's mode, and `error`.
struct Ctx<'a> {
    mem: &'a dyn CallerMemory,
    writable: bool,
    data: u64,
    error: &'a mut u32,
}

impl Ctx<'_> {
    /// `__sev_do_cmd_locked`'s result: `error` gets the status, a failure is EIO.
    fn fw<T>(&mut self, r: FwResult<T>) -> Result<T, Errno> {
        super::fw_result(self.error, r)
    }
}

impl SevDev {
    /// `sev_pci_init`: reads the firmware's version and, in [`InitMode::AtProbe`], initialises
    /// the platform with SEV-ES. A failed INIT is logged and leaves it UNINIT, as the kernel
    /// does.
    pub fn probe(fw: Firmware, mode: InitMode) -> Self {
        let v = fw.version();
        let mut dev = SevDev {
            fw,
            mode,
            state: KState::Uninit,
            snp: KState::Uninit,
            api: (v.api_major, v.api_minor),
        };
        if dev.fw.state() != PlatformState::Uninit {
            dev.state = KState::Init;
        }
        if dev.fw.snp_state() == SnpState::Init {
            dev.snp = KState::Init;
        }
        if mode == InitMode::AtProbe {
            let mut error = 0;
            if let Err(e) = dev.platform_init(&mut error) {
                log::error!(
                    "SEV: failed to INIT the platform: {e} ({})",
                    uapi::status::describe(error)
                );
            }
        }
        log::info!("SEV API:{}.{} build:{}", v.api_major, v.api_minor, v.build);
        dev
    }

    /// The firmware behind the driver.
    pub fn firmware(&self) -> &Firmware {
        &self.fw
    }

    /// Whether KVM would offer SNP guests: the host enabled SNP and SNP is up (kernels up to
    /// 6.15), or comes up with the first guest (from 6.16).
    pub fn snp_usable(&self) -> bool {
        self.fw.snp_enabled() && (self.snp == KState::Init || self.mode == InitMode::PerCommand)
    }

    /// The firmware behind the driver, mutably (the VM node shares it).
    pub fn firmware_mut(&mut self) -> &mut Firmware {
        &mut self.fw
    }

    /// `_sev_platform_init_locked`: SNP first when the host enabled it (a failure there is
    /// logged and SEV goes on without SNP, as the kernel does), then SEV.
    pub(crate) fn platform_init(&mut self, error: &mut u32) -> Result<(), Errno> {
        if self.fw.snp_enabled() && self.snp == KState::Uninit && self.state == KState::Uninit {
            let mut snp_error = 0;
            if let Err(e) = self.snp_init(&mut snp_error) {
                log::error!(
                    "SEV-SNP: failed to INIT rc {e}, error {}",
                    uapi::status::describe(snp_error)
                );
            }
        }
        self.sev_init(error)
    }

    /// `__sev_snp_init_locked`: SNP_INIT (the RMP), then SNP_DF_FLUSH.
    fn snp_init(&mut self, error: &mut u32) -> Result<(), Errno> {
        let mut r = self.fw.snp_init();
        if r.is_ok() {
            self.snp = KState::Init;
            r = self.fw.df_flush();
            let s = self.fw.snp_platform_status().ok();
            log::info!(
                "SEV-SNP API:{}.{} build:{}",
                self.api.0,
                self.api.1,
                s.map(|s| s.build_id).unwrap_or_default()
            );
        }
        super::fw_result(error, r)
    }

    /// `__sev_platform_init_locked`: INIT with the TMR, once more on SECURE_DATA_INVALID (the
    /// firmware has reset its store by then), then DF_FLUSH.
    fn sev_init(&mut self, error: &mut u32) -> Result<(), Errno> {
        if self.state == KState::Init {
            return Ok(());
        }
        let mut r = self.fw.init(INIT_FLAGS_ES);
        if r == Err(Status::SecureDataInvalid) {
            log::warn!("SEV: retrying INIT command because of SECURE_DATA_INVALID error. Retrying once to reset PSP SEV state.");
            r = self.fw.init(INIT_FLAGS_ES);
        }
        if r.is_ok() {
            self.state = KState::Init;
            r = self.fw.df_flush();
        }
        *error = match r {
            Ok(()) => Status::Success as u32,
            Err(s) => s as u32,
        };
        r.map_err(|_| Errno::EIO)
    }

    /// Brings the platform to INIT for a command; true when it must be shut down afterwards
    /// (kernels from 6.16).
    fn enter_init(&mut self, error: &mut u32) -> Result<bool, Errno> {
        if self.state == KState::Init {
            return Ok(false);
        }
        match self.mode {
            InitMode::AtProbe => self.platform_init(error).map(|()| false),
            InitMode::PerCommand => {
                let mut ignored = 0;
                // Since the 2026 fixes, /dev/sev's own commands initialise SEV only.
                match self.sev_init(&mut ignored) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        // ≥ 6.16 reports INVALID_PLATFORM_STATE whatever INIT said.
                        *error = Status::InvalidPlatformState as u32;
                        Err(e)
                    }
                }
            }
        }
    }

    fn leave_init(&mut self, shutdown: bool) {
        if shutdown {
            let _ = self.fw.shutdown();
            self.state = KState::Uninit;
        }
    }

    /// `sev_ioctl`'s switch: runs one known command. `arg.error` is updated as the kernel
    /// updates it; the caller copies `arg` back whatever this returns.
    pub fn issue(
        &mut self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let mut ctx = Ctx {
            mem,
            writable,
            data,
            error,
        };
        match cmd {
            SevCmd::FactoryReset => self.do_reset(&mut ctx),
            SevCmd::PlatformStatus => self.do_platform_status(&mut ctx),
            SevCmd::PekGen | SevCmd::PdhGen => self.do_pek_pdh_gen(cmd, &mut ctx),
            SevCmd::PekCsr => self.do_pek_csr(&mut ctx),
            SevCmd::PdhCertExport => self.do_pdh_export(&mut ctx),
            SevCmd::PekCertImport => self.do_pek_import(&mut ctx),
            SevCmd::GetId => self.do_get_id(&mut ctx),
            SevCmd::GetId2 => self.do_get_id2(&mut ctx),
            SevCmd::SnpPlatformStatus => self.do_snp_platform_status(&mut ctx),
            SevCmd::SnpCommit => self.do_snp_commit(&mut ctx),
            SevCmd::SnpSetConfig => self.do_snp_set_config(&mut ctx),
            SevCmd::SnpVlekLoad => self.do_snp_vlek_load(&mut ctx),
        }
    }

    fn require_writable(cmd: SevCmd, ctx: &Ctx<'_>) -> Result<(), Errno> {
        if cmd.info().writable == Writable::Yes && !ctx.writable {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// SEV_FACTORY_RESET: refused while guests run (EBUSY); an INIT platform is shut down
    /// first.
    fn do_reset(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        Self::require_writable(SevCmd::FactoryReset, ctx)?;
        let status = ctx.fw(self.fw.platform_status())?;
        if status.state == PlatformState::Working as u8 {
            return Err(Errno::EBUSY);
        }
        if status.state == PlatformState::Init as u8 {
            ctx.fw(self.fw.shutdown())?;
            self.state = KState::Uninit;
        }
        ctx.fw(self.fw.platform_reset())
    }

    /// SEV_PLATFORM_STATUS: never an implicit INIT.
    fn do_platform_status(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let status = ctx.fw(self.fw.platform_status())?;
        write_obj(ctx.mem, ctx.data, &status)
    }

    /// SEV_PEK_GEN and SEV_PDH_GEN: `data` is never touched.
    fn do_pek_pdh_gen(&mut self, cmd: SevCmd, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        Self::require_writable(cmd, ctx)?;
        let shutdown = self.enter_init(ctx.error)?;
        let r = if cmd == SevCmd::PekGen {
            self.fw.pek_gen()
        } else {
            self.fw.pdh_gen()
        };
        self.leave_init(shutdown);
        ctx.fw(r)
    }

    /// SEV_PEK_CSR: a null address or zero length asks for the length.
    fn do_pek_csr(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        Self::require_writable(SevCmd::PekCsr, ctx)?;
        let mut input: SevUserDataPekCsr = read_obj(ctx.mem, ctx.data)?;
        let query = input.address == 0 || input.length == 0;
        let mut len = 0;
        if !query {
            if input.length > SEV_FW_BLOB_MAX_SIZE {
                return Err(Errno::EFAULT);
            }
            len = input.length;
        }
        let shutdown = self.enter_init(ctx.error)?;
        let r = self.fw.pek_csr(&mut len);
        self.leave_init(shutdown);
        let result = ctx.fw(r);
        input.length = len;
        write_obj(ctx.mem, ctx.data, &input)?;
        let csr = result?;
        if !query {
            write_bytes(ctx.mem, input.address, &csr[..len as usize])?;
        }
        Ok(())
    }

    /// SEV_PDH_CERT_EXPORT: works on a read-only file once the platform is INIT.
    fn do_pdh_export(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let mut shutdown = false;
        if self.state != KState::Init {
            if !ctx.writable {
                return Err(Errno::EPERM);
            }
            shutdown = self.enter_init(ctx.error)?;
        }
        let r = self.pdh_export_locked(ctx);
        self.leave_init(shutdown);
        r
    }

    fn pdh_export_locked(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let mut input: SevUserDataPdhCertExport = read_obj(ctx.mem, ctx.data)?;
        let query =
            input.pdh_cert_address == 0 || input.pdh_cert_len == 0 || input.cert_chain_address == 0;
        let (mut pdh_len, mut chain_len) = (0, 0);
        if !query {
            if input.pdh_cert_len > SEV_FW_BLOB_MAX_SIZE
                || input.cert_chain_len > SEV_FW_BLOB_MAX_SIZE
            {
                return Err(Errno::EFAULT);
            }
            (pdh_len, chain_len) = (input.pdh_cert_len, input.cert_chain_len);
        }
        let r = self.fw.pdh_cert_export(&mut pdh_len, &mut chain_len);
        let result = ctx.fw(r);
        input.pdh_cert_len = pdh_len;
        input.cert_chain_len = chain_len;
        write_obj(ctx.mem, ctx.data, &input)?;
        let (pdh, chain) = result?;
        if !query {
            write_bytes(ctx.mem, input.pdh_cert_address, &pdh[..pdh_len as usize])?;
            write_bytes(
                ctx.mem,
                input.cert_chain_address,
                &chain[..chain_len as usize],
            )?;
        }
        Ok(())
    }

    /// `psp_copy_user_blob`: EINVAL for a null or empty blob and above 16 KiB.
    fn copy_user_blob(mem: &dyn CallerMemory, addr: u64, len: u32) -> Result<Vec<u8>, Errno> {
        if addr == 0 || len == 0 || len > SEV_FW_BLOB_MAX_SIZE {
            return Err(Errno::EINVAL);
        }
        mem.read_vec(UserAddr(addr), len as usize)
            .map_err(|_| Errno::EFAULT)
    }

    /// SEV_PEK_CERT_IMPORT.
    fn do_pek_import(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        Self::require_writable(SevCmd::PekCertImport, ctx)?;
        let input: SevUserDataPekCertImport = read_obj(ctx.mem, ctx.data)?;
        let pek = Self::copy_user_blob(ctx.mem, input.pek_cert_address, input.pek_cert_len)?;
        let oca = Self::copy_user_blob(ctx.mem, input.oca_cert_address, input.oca_cert_len)?;
        let shutdown = self.enter_init(ctx.error)?;
        let r = self.fw.pek_cert_import(&pek, &oca);
        self.leave_init(shutdown);
        ctx.fw(r)
    }

    fn check_api_for_get_id(&self) -> Result<(), Errno> {
        if self.api < (0, 16) {
            return Err(Errno::from_raw(ENOTSUPP));
        }
        Ok(())
    }

    /// SEV_GET_ID (deprecated): the firmware writes into a 128-byte buffer; the kernel copies
    /// what it wrote (one socket's 64 bytes) to `data`.
    fn do_get_id(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        self.check_api_for_get_id()?;
        let mut len = size_of::<SevUserDataGetId>() as u32;
        let id = ctx.fw(self.fw.get_id(&mut len))?;
        write_bytes(ctx.mem, ctx.data, &id[..len as usize])
    }

    /// SEV_GET_ID2: a null address or zero length asks for the length.
    fn do_get_id2(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        self.check_api_for_get_id()?;
        let mut input: SevUserDataGetId2 = read_obj(ctx.mem, ctx.data)?;
        let query = input.address == 0 || input.length == 0;
        let mut len = 0;
        if !query {
            if input.length > KMALLOC_MAX_SIZE {
                return Err(Errno::ENOMEM);
            }
            len = input.length;
        }
        let result = ctx.fw(self.fw.get_id(&mut len));
        input.length = len;
        write_obj(ctx.mem, ctx.data, &input)?;
        let id = result?;
        if !query {
            write_bytes(ctx.mem, input.address, &id[..len as usize])?;
        }
        Ok(())
    }

    /// SNP not initialised: what each kernel generation answers (linux-abi.md §2.4, §2.5).
    /// Up to 6.15 the command fails with EINVAL; from 6.16 (with the 2026 fixes) commands
    /// that need SNP fail with ENODEV, and SNP_PLATFORM_STATUS initialises SNP around itself.
    fn snp_missing(&self) -> Errno {
        if self.mode == InitMode::AtProbe || !self.fw.snp_enabled() {
            Errno::EINVAL
        } else {
            Errno::ENODEV
        }
    }

    /// SNP_PLATFORM_STATUS: the firmware's 32 bytes, into a page of the kernel's own.
    fn do_snp_platform_status(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        if ctx.data == 0 {
            return Err(Errno::EINVAL);
        }
        let mut shutdown = false;
        if self.snp != KState::Init {
            if self.mode == InitMode::AtProbe || !self.fw.snp_enabled() {
                return Err(Errno::EINVAL);
            }
            let mut ignored = 0;
            if let Err(e) = self.snp_init(&mut ignored) {
                *ctx.error = Status::InvalidPlatformState as u32;
                return Err(e);
            }
            shutdown = true;
        }
        let r = self.fw.snp_platform_status();
        if shutdown {
            let _ = self.fw.snp_shutdown();
            self.snp = KState::Uninit;
        }
        let status = ctx.fw(r)?;
        write_obj(ctx.mem, ctx.data, &status)
    }

    /// SNP_COMMIT: no writable check, `data` ignored (the kernel sends its own `{len = 4}`).
    /// Since the 2026 fix it runs in any SNP state; before, SNP had to be initialised.
    fn do_snp_commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        if !self.fw.snp_enabled() || (self.mode == InitMode::AtProbe && self.snp != KState::Init) {
            return Err(Errno::EINVAL);
        }
        let r = self.fw.snp_commit(crate::firmware::snp::COMMIT_LEN);
        ctx.fw(r)
    }

    /// SNP_SET_CONFIG: the caller's 64 bytes go to the firmware verbatim.
    fn do_snp_set_config(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        // Up to 6.15 "SNP initialised" is tested before anything else.
        if self.mode == InitMode::AtProbe && self.snp != KState::Init {
            return Err(Errno::EINVAL);
        }
        if ctx.data == 0 {
            return Err(Errno::EINVAL);
        }
        Self::require_writable(SevCmd::SnpSetConfig, ctx)?;
        let config: SevUserDataSnpConfig = read_obj(ctx.mem, ctx.data)?;
        if self.snp != KState::Init {
            return Err(self.snp_missing());
        }
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(config.as_bytes());
        let r = self.fw.snp_config(&bytes);
        ctx.fw(r)
    }

    /// SNP_VLEK_LOAD: the struct's `len` and version, then the 432-byte hashstick.
    fn do_snp_vlek_load(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        if ctx.data == 0 {
            return Err(Errno::EINVAL);
        }
        Self::require_writable(SevCmd::SnpVlekLoad, ctx)?;
        if self.snp != KState::Init {
            return Err(self.snp_missing());
        }
        let input: SevUserDataSnpVlekLoad = read_obj(ctx.mem, ctx.data)?;
        if input.len != size_of::<SevUserDataSnpVlekLoad>() as u32
            || input.vlek_wrapped_version != 0
        {
            return Err(Errno::EINVAL);
        }
        if input.vlek_wrapped_address == 0 {
            return Err(Errno::EINVAL);
        }
        let mut stick = [0u8; crate::firmware::snp::hashstick::LEN];
        ctx.mem
            .read(UserAddr(input.vlek_wrapped_address), &mut stick)
            .map_err(|_| Errno::EFAULT)?;
        let r = self
            .fw
            .snp_vlek_load(input.len, input.vlek_wrapped_version, input.rsvd, &stick);
        ctx.fw(r)
    }
}

/// `error` as it enters a backend: no firmware status yet. A backend that reaches the
/// firmware overwrites it; one that refuses first leaves it, and the caller gets its own
/// `error` back untouched, as from the kernel.
pub const NOT_REACHED: u32 = u32::MAX;

/// What answers a `/dev/sev` command once its header is read: the software driver here, or
/// a real device behind [`super::passthrough::Passthrough`]. Calls are serialised inside, as
/// the kernel's `sev_cmd_mutex` does; the caller's memory is read before and written after
/// that lock ([`Staged`]), never under it.
pub trait SevBackend: Send + Sync {
    /// Runs command `cmd` whose struct is at `data` in `mem`. `error` enters as
    /// [`NOT_REACHED`] and leaves with the firmware status if the firmware ran.
    fn issue(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno>;

    /// Waits for the command in flight, if any (shutdown).
    fn barrier(&self);
}

impl SevBackend for Mutex<SevDev> {
    fn issue(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        Staged::run(mem, cmd, data, |staged| {
            let mut dev = self.lock().unwrap_or_else(|e| e.into_inner());
            dev.issue(cmd, writable, staged, data, error)
        })
    }

    fn barrier(&self) {
        drop(self.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// `sev_ioctl`'s first steps: the request number, the 16-byte header, the command id.
/// Errors here are returned without copying the header back.
fn parse_issue(request: &IoctlRequest<'_>) -> Result<(SevIssueCmd, SevCmd), Errno> {
    // sev_fops has no compat_ioctl: 32-bit callers get ENOTTY from the VFS.
    if request.compat {
        return Err(Errno::ENOTTY);
    }
    if request.cmd != SEV_ISSUE_CMD {
        return Err(Errno::EINVAL);
    }
    let arg = SevIssueCmd::from_slice(request.in_data).ok_or(Errno::EFAULT)?;
    let cmd = SevCmd::from_id(arg.cmd).ok_or(Errno::EINVAL)?;
    Ok((arg, cmd))
}

/// The reply for a handled command: the header always goes back, with the firmware's
/// status in `error` if the firmware ran, else the caller's own value.
fn issue_reply(mut arg: SevIssueCmd, error: u32, result: Result<(), Errno>) -> IoctlReply {
    if error != NOT_REACHED {
        arg.error = error;
    }
    match result {
        Ok(()) => IoctlReply::ok(arg.as_bytes().to_vec()),
        Err(e) => IoctlReply::failed(e, arg.as_bytes().to_vec()),
    }
}

/// `sev_ioctl`: the header in, the command on `backend`, the header back out.
pub fn sev_ioctl(
    backend: &dyn SevBackend,
    writable: bool,
    mem: &dyn CallerMemory,
    request: IoctlRequest<'_>,
) -> Result<IoctlReply, Errno> {
    let (arg, cmd) = parse_issue(&request)?;
    let mut error = NOT_REACHED;
    let result = backend.issue(cmd, writable, mem, arg.data, &mut error);
    Ok(issue_reply(arg, error, result))
}

#[cfg(test)]
mod tests;
