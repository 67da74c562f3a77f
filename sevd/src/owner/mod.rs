//! Guest-owner cryptography, shared by the firmware (which checks it) and the CLI (which
//! makes it): the launch session (firmware-semantics.md §5), the launch measurement (§7),
//! and SNP's launch digest (snp.md §5).

pub mod measurement;
pub mod secret;
pub mod session;
pub mod snp_measurement;
