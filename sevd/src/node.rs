//! The device nodes the daemon serves.

use std::sync::{Arc, RwLock};

use uapi::psp_sev::SevCmd;
use vfs::{Caller, CallerMemory, CharDevice, Errno, IoctlReply, IoctlRequest, OpenFile};

use crate::access::{class_of, vm_command, Class, Gate};
use crate::driver::kvm_sev::{KvmSev, SevFdCheck};
use crate::driver::sev_dev::{sev_ioctl, SevBackend, NOT_REACHED};

/// A backend behind the gate: the policy decides before the backend sees the command, and
/// every command is audited, refused or not.
struct Gated<'a> {
    inner: &'a dyn SevBackend,
    gate: &'a Gate,
    tid: u32,
}

impl SevBackend for Gated<'_> {
    fn issue(
        &self,
        cmd: SevCmd,
        writable: bool,
        mem: &dyn CallerMemory,
        data: u64,
        error: &mut u32,
    ) -> Result<(), Errno> {
        let started = std::time::Instant::now();
        let result = if self.gate.allows(&[class_of(cmd)], self.tid) {
            self.inner.issue(cmd, writable, mem, data, error)
        } else {
            Err(Errno::EPERM)
        };
        let status = (*error != NOT_REACHED).then_some(*error);
        let errno = result.err().map_or(0, |e| e as i32);
        self.gate
            .audit(self.tid, cmd.name(), status, errno, started);
        result
    }

    fn barrier(&self) {
        self.inner.barrier();
    }
}

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
    /// A caller granted nothing at all cannot get a file. A VMM granted only `launch` may:
    /// it hands the file to the `sev-vm` node as `sev_fd`.
    fn open(&self, caller: &Caller, _file: &OpenFile) -> Result<(), Errno> {
        let any = [Class::SEV_NODE.as_slice(), Class::VM_NODE.as_slice()].concat();
        if self.gate.allows(&any, caller.pid.0) {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let Some(_inside) = self.gate.enter() else {
            return Err(Errno::ENODEV);
        };
        let gated = Gated {
            inner: &*self.backend,
            gate: &self.gate,
            tid: caller.pid.0,
        };
        sev_ioctl(&gated, file.flags.writable(), &caller.memory(), request)
    }
}

/// `<mountpoint>/sev-vm`: each open file is a VM (`KVM_CREATE_VM`), closed = destroyed.
pub struct VmNode {
    kvm: Arc<KvmSev>,
    gate: Arc<Gate>,
}

impl VmNode {
    /// A node over the VM side of the driver, behind a gate.
    pub fn new(kvm: Arc<KvmSev>, gate: Arc<Gate>) -> Self {
        VmNode { kvm, gate }
    }
}

impl CharDevice for VmNode {
    fn open(&self, caller: &Caller, file: &OpenFile) -> Result<(), Errno> {
        if !self.gate.allows(&Class::VM_NODE, caller.pid.0) {
            return Err(Errno::EPERM);
        }
        self.kvm.create_vm(file.fh, file.opener.0, caller.uid)
    }

    fn release(&self, file: &OpenFile) {
        self.kvm.destroy_vm(file.fh);
    }

    /// A closed VM gives back its guest and ASID, which the `sev` node reports.
    fn release_is_shared(&self) -> bool {
        true
    }

    fn ioctl(
        &self,
        caller: &Caller,
        file: &OpenFile,
        request: IoctlRequest<'_>,
    ) -> Result<IoctlReply, Errno> {
        let Some(_inside) = self.gate.enter() else {
            return Err(Errno::ENODEV);
        };
        let tid = caller.pid.0;
        let command = vm_command(request.cmd, request.in_data);
        if let Some((name, class)) = command {
            if !self.gate.allows(&[class], tid) {
                self.gate.audit(
                    tid,
                    name,
                    None,
                    Errno::EPERM as i32,
                    std::time::Instant::now(),
                );
                return Err(Errno::EPERM);
            }
        }
        let started = std::time::Instant::now();
        let mem = caller.memory();
        let outcome = self
            .kvm
            .ioctl_outcome(tid, vfs::tgid(tid), &mem, file.fh, request);
        if let Some((name, _)) = command {
            let errno = match &outcome.reply {
                Ok(r) => -r.result,
                Err(e) => *e as i32,
            };
            self.gate.audit(tid, name, outcome.status, errno, started);
        }
        outcome.reply
    }
}

/// Recognises our `sev` node among a process's open files, read from
/// `/proc/<pid>/fdinfo/<fd>` (procfs, so no request comes back to this daemon): by its mount
/// and inode, or, for a bind of the node made elsewhere (a mount namespace of `sevctl exec`),
/// by its FUSE connection's device as the caller's own mountinfo gives it.
#[derive(Debug, Default)]
pub struct ProcFdCheck {
    nodes: RwLock<Vec<SevMount>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SevMount {
    mount_id: u64,
    dev: String,
    ino: u64,
}

impl ProcFdCheck {
    /// Adds a mount of the `sev` node: its mount, its connection's device, the node's inode.
    pub fn add(&self, mount_id: u64, dev: String, ino: u64) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(SevMount { mount_id, dev, ino });
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
        let (Some(mnt), Some(ino)) = (field("mnt_id:"), field("ino:")) else {
            return false;
        };
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        if nodes.iter().any(|n| (n.mount_id, n.ino) == (mnt, ino)) {
            return true;
        }
        let candidates: Vec<&SevMount> = nodes.iter().filter(|n| n.ino == ino).collect();
        if candidates.is_empty() {
            return false;
        }
        match vfs::fuse_dev_of(pid, mnt) {
            Some(dev) => candidates.iter().any(|n| n.dev == dev),
            None => false,
        }
    }
}
