//! The device nodes the daemon serves.

use std::sync::{Arc, RwLock};

use vfs::{Caller, CharDevice, Errno, IoctlReply, IoctlRequest, OpenFile};

use crate::access::Gate;
use crate::driver::kvm_sev::{KvmSev, SevFdCheck};
use crate::driver::sev_dev::{issue_reply, parse_issue, SevBackend};

/// `<mountpoint>/sev`: byte-for-byte `/dev/sev`. No per-file state (sev_fops has no open or
/// release); the open mode decides what a file may do, and the gate (policy, audit) what a
/// caller may.
pub struct SevNode {
    backend: Arc<dyn SevBackend>,
    gate: Arc<Gate>,
}

impl SevNode {
    /// A node over a backend, behind a gate.
    pub fn new(backend: Arc<dyn SevBackend>, gate: Arc<Gate>) -> Self {
        SevNode { backend, gate }
    }
}

impl CharDevice for SevNode {
    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let (arg, cmd) = parse_issue(&request)?;
        let started = std::time::Instant::now();
        let mut error = arg.error;
        let result = if self.gate.allows(cmd, caller.pid.0) {
            let mem = caller.memory();
            self.backend
                .issue(cmd, file.flags.writable(), &mem, arg.data, &mut error)
        } else {
            // Denied by policy: the backend never sees it.
            Err(Errno::EPERM)
        };
        let errno = result.err().map(|e| e as i32).unwrap_or(0);
        self.gate.audit(caller.pid.0, cmd, error, errno, started);
        Ok(issue_reply(arg, error, result))
    }
}

/// `<mountpoint>/sev-vm`: each open file is a VM (`KVM_CREATE_VM`), closed = destroyed.
pub struct VmNode {
    kvm: Arc<KvmSev>,
}

impl VmNode {
    /// A node over the VM side of the driver.
    pub fn new(kvm: Arc<KvmSev>) -> Self {
        VmNode { kvm }
    }
}

impl CharDevice for VmNode {
    fn open(&self, _caller: &Caller, file: &OpenFile) -> Result<(), Errno> {
        self.kvm.create_vm(file.fh, file.opener.0);
        Ok(())
    }

    fn release(&self, file: &OpenFile) {
        self.kvm.destroy_vm(file.fh);
    }

    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let mem = caller.memory();
        self.kvm.ioctl(
            caller.pid.0,
            vfs::tgid(caller.pid.0),
            &mem,
            file.fh,
            request,
        )
    }
}

/// Recognises our `sev` node among a process's open files by mount id and inode, read from
/// `/proc/<pid>/fdinfo/<fd>` (procfs, so no request comes back to this daemon).
#[derive(Debug, Default)]
pub struct ProcFdCheck {
    nodes: RwLock<Vec<(u64, u64)>>,
}

impl ProcFdCheck {
    /// Adds a mount of the `sev` node: its mount id and the node's inode number.
    pub fn add(&self, mount_id: u64, ino: u64) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((mount_id, ino));
    }
}

impl SevFdCheck for ProcFdCheck {
    fn is_sev_node(&self, pid: u32, fd: u32) -> bool {
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            return false;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match (field("mnt_id:"), field("ino:")) {
            (Some(mnt), Some(ino)) => self
                .nodes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(mnt, ino)),
            _ => false,
        }
    }
}
