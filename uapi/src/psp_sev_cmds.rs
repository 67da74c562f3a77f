//! The per-command facts of `drivers/crypto/ccp/sev-dev.c` (reference/linux-abi.md §2), as
//! one table that every dispatcher reads: the software driver, the hardware pass-through and
//! the access policy. Offsets come from `offset_of!` on the header's structs, so the table
//! cannot drift from the layout.

use core::mem::{offset_of, size_of};

use crate::psp_sev::*;

/// Who may issue a command on a read-only file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Any open file.
    No,
    /// Only a file opened for writing (EPERM otherwise).
    Yes,
    /// Only a file opened for writing when the platform is not INIT (PDH_CERT_EXPORT).
    UnlessInit,
}

/// What a command does to the platform: the access policy's classes come from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads the platform's state or certificates and changes nothing.
    Query,
    /// Changes the platform's keys, certificates, ownership or configuration.
    Manage,
    /// Erases the platform's state (FACTORY_RESET).
    Reset,
}

/// Which way a nested buffer's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The driver reads it from the caller (`copy_from_user`).
    In,
    /// The driver writes it to the caller (`copy_to_user`).
    Out,
}

/// Where a nested buffer's length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufLen {
    /// A `__u32` at this offset of the command's struct.
    Field(usize),
    /// A length the command fixes (SNP_VLEK_LOAD's hashstick).
    Fixed(u32),
}

/// What the kernel answers for a nested length above its cap. The handlers disagree, and
/// callers see the difference, so it is part of the table (linux-abi.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// `sev_ioctl_do_pek_csr`, `sev_ioctl_do_pdh_export`: EFAULT.
    Efault,
    /// `psp_copy_user_blob`: EINVAL.
    Einval,
    /// `sev_ioctl_do_get_id2`: the failed `kzalloc`, ENOMEM.
    Enomem,
}

/// A buffer a command's struct points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedBuf {
    /// Offset of its `__u64` address in the struct.
    pub addr_at: usize,
    /// Its length.
    pub len: BufLen,
    /// Direction.
    pub dir: Dir,
    /// The largest length the kernel accepts.
    pub cap: u32,
    /// The errno above `cap`.
    pub over_cap: OverCap,
}

impl NestedBuf {
    /// The buffer's (address, length) as the struct `bytes` gives them.
    pub fn locate(&self, bytes: &[u8]) -> Option<(u64, u32)> {
        let addr = u64::from_le_bytes(bytes.get(self.addr_at..self.addr_at + 8)?.try_into().ok()?);
        let len = match self.len {
            BufLen::Fixed(n) => n,
            BufLen::Field(at) => u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?),
        };
        Some((addr, len))
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevCmdInfo {
    /// The command.
    pub cmd: SevCmd,
    /// `sev_cmd_buf_writable` and the handlers' own checks.
    pub writable: Writable,
    /// What it does to the platform.
    pub effect: Effect,
    /// Size of the struct at `data` (0 when `data` is ignored).
    pub size: usize,
    /// The buffers the struct points at, in the order the handler copies them.
    pub bufs: &'static [NestedBuf],
}

/// The largest `kmalloc` (GET_ID2's buffer fails with ENOMEM above it).
pub const KMALLOC_MAX_SIZE: u32 = 4 << 20;
/// The wrapped VLEK hashstick SNP_VLEK_LOAD points at (SEV-SNP ABI, Table 70).
pub const VLEK_HASHSTICK_LEN: u32 = 432;

const fn out(addr_at: usize, len_at: usize, cap: u32, over_cap: OverCap) -> NestedBuf {
    NestedBuf {
        addr_at,
        len: BufLen::Field(len_at),
        dir: Dir::Out,
        cap,
        over_cap,
    }
}

const fn blob_in(addr_at: usize, len: BufLen, cap: u32) -> NestedBuf {
    NestedBuf {
        addr_at,
        len,
        dir: Dir::In,
        cap,
        over_cap: OverCap::Einval,
    }
}

const fn row(
    cmd: SevCmd,
    writable: Writable,
    effect: Effect,
    size: usize,
    bufs: &'static [NestedBuf],
) -> SevCmdInfo {
    SevCmdInfo {
        cmd,
        writable,
        effect,
        size,
        bufs,
    }
}

type PekCsr = SevUserDataPekCsr;
type PdhExport = SevUserDataPdhCertExport;
type PekImport = SevUserDataPekCertImport;
type GetId2 = SevUserDataGetId2;
type Vlek = SevUserDataSnpVlekLoad;
const BLOB: u32 = SEV_FW_BLOB_MAX_SIZE;

/// The table, indexed by command id.
pub const SEV_CMDS: [SevCmdInfo; SEV_MAX as usize] = [
    row(SevCmd::FactoryReset, Writable::Yes, Effect::Reset, 0, &[]),
    row(
        SevCmd::PlatformStatus,
        Writable::No,
        Effect::Query,
        size_of::<SevUserDataStatus>(),
        &[],
    ),
    row(SevCmd::PekGen, Writable::Yes, Effect::Manage, 0, &[]),
    row(
        SevCmd::PekCsr,
        Writable::Yes,
        Effect::Manage,
        size_of::<PekCsr>(),
        &[out(
            offset_of!(PekCsr, address),
            offset_of!(PekCsr, length),
            BLOB,
            OverCap::Efault,
        )],
    ),
    row(SevCmd::PdhGen, Writable::Yes, Effect::Manage, 0, &[]),
    row(
        SevCmd::PdhCertExport,
        Writable::UnlessInit,
        Effect::Query,
        size_of::<PdhExport>(),
        &[
            out(
                offset_of!(PdhExport, pdh_cert_address),
                offset_of!(PdhExport, pdh_cert_len),
                BLOB,
                OverCap::Efault,
            ),
            out(
                offset_of!(PdhExport, cert_chain_address),
                offset_of!(PdhExport, cert_chain_len),
                BLOB,
                OverCap::Efault,
            ),
        ],
    ),
    row(
        SevCmd::PekCertImport,
        Writable::Yes,
        Effect::Manage,
        size_of::<PekImport>(),
        &[
            blob_in(
                offset_of!(PekImport, pek_cert_address),
                BufLen::Field(offset_of!(PekImport, pek_cert_len)),
                BLOB,
            ),
            blob_in(
                offset_of!(PekImport, oca_cert_address),
                BufLen::Field(offset_of!(PekImport, oca_cert_len)),
                BLOB,
            ),
        ],
    ),
    // GET_ID writes one socket's 64 bytes at `data`, not the whole struct.
    row(
        SevCmd::GetId,
        Writable::No,
        Effect::Query,
        size_of::<SevUserDataGetId>(),
        &[],
    ),
    row(
        SevCmd::GetId2,
        Writable::No,
        Effect::Query,
        size_of::<GetId2>(),
        &[out(
            offset_of!(GetId2, address),
            offset_of!(GetId2, length),
            KMALLOC_MAX_SIZE,
            OverCap::Enomem,
        )],
    ),
    row(
        SevCmd::SnpPlatformStatus,
        Writable::No,
        Effect::Query,
        size_of::<SevUserDataSnpStatus>(),
        &[],
    ),
    row(SevCmd::SnpCommit, Writable::No, Effect::Manage, 0, &[]),
    row(
        SevCmd::SnpSetConfig,
        Writable::Yes,
        Effect::Manage,
        size_of::<SevUserDataSnpConfig>(),
        &[],
    ),
    row(
        SevCmd::SnpVlekLoad,
        Writable::Yes,
        Effect::Manage,
        size_of::<Vlek>(),
        &[blob_in(
            offset_of!(Vlek, vlek_wrapped_address),
            BufLen::Fixed(VLEK_HASHSTICK_LEN),
            VLEK_HASHSTICK_LEN,
        )],
    ),
];

impl SevCmdInfo {
    /// Whether the driver reads the struct at `data`. A query that points at no buffer only
    /// writes its struct (PLATFORM_STATUS, GET_ID, SNP_PLATFORM_STATUS): the kernel never
    /// reads it, so neither does a driver that mirrors it.
    pub fn reads_struct(&self) -> bool {
        self.size != 0 && !(self.effect == Effect::Query && self.bufs.is_empty())
    }
}

impl SevCmd {
    /// The command's row of [`SEV_CMDS`].
    pub fn info(self) -> &'static SevCmdInfo {
        &SEV_CMDS[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_id_order() {
        for (id, row) in SEV_CMDS.iter().enumerate() {
            assert_eq!(row.cmd as usize, id, "{}", row.cmd.name());
        }
    }

    #[test]
    fn nested_buffers_lie_inside_their_struct() {
        for row in &SEV_CMDS {
            for b in row.bufs {
                assert!(b.addr_at + 8 <= row.size, "{}", row.cmd.name());
                if let BufLen::Field(at) = b.len {
                    assert!(at + 4 <= row.size, "{}", row.cmd.name());
                }
            }
        }
    }

    #[test]
    fn only_the_status_queries_leave_their_struct_unread() {
        let unread: Vec<SevCmd> = SEV_CMDS
            .iter()
            .filter(|r| r.size != 0 && !r.reads_struct())
            .map(|r| r.cmd)
            .collect();
        assert_eq!(
            unread,
            [
                SevCmd::PlatformStatus,
                SevCmd::GetId,
                SevCmd::SnpPlatformStatus
            ]
        );
    }

    #[test]
    fn locate_reads_address_and_length() {
        let s = SevUserDataPdhCertExport {
            pdh_cert_address: 0x1000,
            pdh_cert_len: 0x824,
            cert_chain_address: 0x2000,
            cert_chain_len: 0x186c,
        };
        let bufs = SevCmd::PdhCertExport.info().bufs;
        assert_eq!(
            bufs[0].locate(crate::ByteValued::as_bytes(&s)),
            Some((0x1000, 0x824))
        );
        assert_eq!(
            bufs[1].locate(crate::ByteValued::as_bytes(&s)),
            Some((0x2000, 0x186c))
        );
    }
}
