//! The commands behind the `sevctl` binary. A library so that the fuzz targets (`fuzz/`) reach
//! the manifest parser; it is not a stable API.

pub mod error;
pub mod exec;
pub mod launch;
pub mod manifest;
pub mod migrate;
pub mod ok;
pub mod owner_cmds;
pub mod platform_cmds;
pub mod select;
pub mod snp;
pub mod steps;
pub mod util;
pub mod validate;
pub mod vmsa;
