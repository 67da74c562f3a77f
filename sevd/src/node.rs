//! The device nodes the daemon serves.

use std::sync::{Arc, Mutex};

use vfs::{Caller, CharDevice, Errno, IoctlReply, IoctlRequest, OpenFile};

use crate::driver::sev_dev::{sev_ioctl, SevDev};

/// `<mountpoint>/sev`: byte-for-byte `/dev/sev`. No per-file state (sev_fops has no open or
/// release); the open mode decides what a file may do.
pub struct SevNode {
    dev: Arc<Mutex<SevDev>>,
}

impl SevNode {
    /// A node over the shared driver.
    pub fn new(dev: Arc<Mutex<SevDev>>) -> Self {
        SevNode { dev }
    }
}

impl CharDevice for SevNode {
    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        sev_ioctl(&self.dev, file.flags.writable(), &caller.memory(), request)
    }
}
