//! Guest-owner cryptography, shared by the firmware (which checks it) and the CLI (which
//! makes it): the launch session (firmware-semantics.md §5), the launch measurement (§7).

pub mod measurement;
pub mod secret;
pub mod session;
