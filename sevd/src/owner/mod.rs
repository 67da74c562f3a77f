//! Guest-owner cryptography, shared by the firmware (which checks it) and the CLI (which
//! makes it): the launch session (firmware-semantics.md §5), the launch measurement (§7),
//! SNP's launch digest (snp.md §5), and the inputs owners measure: OVMF's footer table and
//! SEV metadata, the kernel hashes and secret tables, and the vCPUs' reset save areas.

pub mod guid;
pub mod id_block;
pub mod measurement;
pub mod ovmf;
pub mod release;
pub mod secret;
pub mod session;
pub mod snp_measurement;
pub mod snp_report;
pub mod tables;
pub mod vmsa;
