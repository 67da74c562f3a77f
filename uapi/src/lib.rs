//! The ABI of AMD SEV as Linux exposes it, and the SEV firmware's wire formats.
//!
//! Nothing here does I/O or crypto: these are plain `#[repr(C)]` types with their layout
//! checked at compile time, the request numbers, the command ids, the firmware status codes,
//! and byte-exact encoders and decoders for the formats the firmware speaks.
//!
//! | module | source |
//! |---|---|
//! | [`ioctl`] | request numbers (`_IOWR` and friends, `include/uapi/asm-generic/ioctl.h`) |
//! | [`psp_sev`] | `include/uapi/linux/psp-sev.h` |
//! | [`psp_sev_cmds`] | `sev-dev.c`'s per-command facts: writable, struct size, nested buffers and caps |
//! | [`status`] | `sev_ret_code`, AMD SEV API (pub. 55766) table of status codes |
//! | [`kvm`] | KVM's SEV ioctls (`linux/kvm.h`, `asm/kvm.h`) and this project's `sev-vm` node |
//! | [`cert`] | the 0x824-byte SEV certificate (SEV API §"Certificates") |
//! | [`ca`] | AMD's ARK/ASK certificate format |
//! | [`launch`] | session buffer, LAUNCH_SECRET header, LAUNCH_MEASURE blob |
//! | [`policy`] | the guest policy's named bits |
//! | [`sev_guest`] | `linux/sev-guest.h`: the guest's `/dev/sev-guest` |
//! | [`snp`] | SNP launch page types and PAGE_INFO |
#![deny(missing_docs)]

pub mod bytes;
pub mod ca;
pub mod cert;
pub mod ioctl;
pub mod kvm;
pub mod launch;
pub mod policy;
pub mod psp_sev;
pub mod psp_sev_cmds;
pub mod sev_guest;
pub mod snp;
pub mod status;

pub use bytes::ByteValued;
pub use status::Status;

/// A wire-format decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is not the size the format needs.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Length {
        /// The format being decoded.
        what: &'static str,
        /// The size it needs.
        expected: usize,
        /// The size it got.
        actual: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: {why}")]
    Field {
        /// The format being decoded.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
}
