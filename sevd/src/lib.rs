//! sevd: a user-space AMD SEV driver stack.
//!
//! - [`firmware`]: the software PSP, a pure state machine.
//! - [`crypto`] and [`certs`]: the primitives and chain checks the firmware and guest owners share.
//! - [`guest`]: what runs inside an SNP guest (its half of the guest request).
#![deny(missing_docs)]

pub mod access;
pub mod boot;
pub mod certs;
pub mod crypto;
pub mod daemon;
pub mod driver;
pub mod dropin;
pub mod files;
pub mod firmware;
pub mod guest;
pub mod kds;
pub mod memctl;
pub mod node;
pub mod owner;
pub mod part;
pub mod paths;
pub mod platform;
pub mod state;
pub mod vcek_publisher;
