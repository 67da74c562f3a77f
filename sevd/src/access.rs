//! Who may issue which `/dev/sev` command (`--policy FILE`), and the record of every command
//! (`--audit-log FILE`). Neither exists in the kernel's driver, whose only check is the
//! file's open mode; without a policy file sevd behaves as the kernel does.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use serde::Deserialize;
use uapi::ioctl::{
    KVM_SET_USER_MEMORY_REGION, SEVD_VM_ENCRYPT_OP, SEVD_VM_GUEST_ACCESS, SEVD_VM_RECEIVE_PAGES,
    SEVD_VM_RECEIVE_VMSA, SEVD_VM_SEND_PAGES, SEVD_VM_SEND_VMSA, SEVD_VM_SET_VMSA,
    SEVD_VM_SNP_GUEST_REQUEST,
};
use uapi::kvm::{KvmSevCmd, KvmSevCmdId};
use uapi::psp_sev::SevCmd;
use uapi::psp_sev_cmds::Effect;
use uapi::ByteValued;

/// Command classes a policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// PLATFORM_STATUS, PDH_CERT_EXPORT, GET_ID, GET_ID2, SNP_PLATFORM_STATUS.
    Read,
    /// PEK_GEN, PDH_GEN, PEK_CSR, PEK_CERT_IMPORT, SNP_COMMIT, SNP_SET_CONFIG, SNP_VLEK_LOAD.
    Manage,
    /// FACTORY_RESET.
    Reset,
    /// The `sev-vm` node's life cycle: memory slots, save areas, INIT, ES_INIT, INIT2, the
    /// launch commands, GUEST_STATUS, and later migration and attestation.
    Launch,
    /// Reading or writing a guest's plaintext: DBG_DECRYPT, DBG_ENCRYPT,
    /// SEVD_VM_GUEST_ACCESS.
    Debug,
}

impl Class {
    const NAMES: [(&'static str, Class); 5] = [
        ("read", Class::Read),
        ("manage", Class::Manage),
        ("reset", Class::Reset),
        ("launch", Class::Launch),
        ("debug", Class::Debug),
    ];

    /// Classes that reach the `sev` node's commands.
    pub const SEV_NODE: [Class; 3] = [Class::Read, Class::Manage, Class::Reset];
    /// Classes that reach the `sev-vm` node's commands.
    pub const VM_NODE: [Class; 2] = [Class::Launch, Class::Debug];
}

/// The class a command belongs to, from the command table's effect column.
pub fn class_of(cmd: SevCmd) -> Class {
    match cmd.info().effect {
        Effect::Query => Class::Read,
        Effect::Manage => Class::Manage,
        Effect::Reset => Class::Reset,
    }
}

/// A `sev-vm` request's name (KVM's, or this node's) and class; `None` for requests the
/// node does not know (they fail on their own, unlogged, as unknown ids on `sev` do).
pub fn vm_command(cmd: u32, in_data: &[u8]) -> Option<(&'static str, Class)> {
    match cmd {
        KVM_SET_USER_MEMORY_REGION => Some(("KVM_SET_USER_MEMORY_REGION", Class::Launch)),
        SEVD_VM_SET_VMSA => Some(("SEVD_VM_SET_VMSA", Class::Launch)),
        SEVD_VM_GUEST_ACCESS => Some(("SEVD_VM_GUEST_ACCESS", Class::Debug)),
        SEVD_VM_SNP_GUEST_REQUEST => Some(("SEVD_VM_SNP_GUEST_REQUEST", Class::Launch)),
        SEVD_VM_SEND_VMSA => Some(("SEVD_VM_SEND_VMSA", Class::Launch)),
        SEVD_VM_RECEIVE_VMSA => Some(("SEVD_VM_RECEIVE_VMSA", Class::Launch)),
        SEVD_VM_SEND_PAGES => Some(("SEVD_VM_SEND_PAGES", Class::Launch)),
        SEVD_VM_RECEIVE_PAGES => Some(("SEVD_VM_RECEIVE_PAGES", Class::Launch)),
        SEVD_VM_ENCRYPT_OP => {
            let id = KvmSevCmdId::from_id(KvmSevCmd::from_slice(in_data)?.id)?;
            let class = match id {
                KvmSevCmdId::DbgDecrypt | KvmSevCmdId::DbgEncrypt => Class::Debug,
                _ => Class::Launch,
            };
            Some((id.name(), class))
        }
        _ => None,
    }
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a policy document, or a wrong value.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    classes: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    classes: Vec<Class>,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

/// A loaded policy: a command is allowed when a rule grants its class to the caller's
/// user or to one of its groups.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// A caller's credentials: effective uid, effective gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid and supplementary groups.
    pub gids: Vec<u32>,
}

impl Creds {
    /// The credentials of thread `tid`, from `/proc/<tid>/status`.
    pub fn of(tid: u32) -> Option<Creds> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let field = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let uid = *field("Uid:").get(1)?;
        let mut gids = vec![*field("Gid:").get(1)?];
        gids.extend(field("Groups:"));
        Some(Creds { uid, gids })
    }
}

fn resolve(path: &Path, kind: &str, name: &str) -> Result<u32, PolicyError> {
    let invalid = |why: String| PolicyError::Invalid {
        path: path.into(),
        why,
    };
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let found = match kind {
        "user" => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
        _ => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    };
    found.ok_or_else(|| invalid(format!("unknown {kind} {name:?}")))
}

impl Policy {
    /// Reads and checks a policy file: every class known, every user and group existing.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses policy text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let invalid = |why: String| PolicyError::Invalid {
            path: path.into(),
            why,
        };
        let file: PolicyFile = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut rules = vec![];
        for (i, r) in file.rules.iter().enumerate() {
            let classes = r
                .classes
                .iter()
                .map(|c| {
                    Class::NAMES
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|&(_, class)| class)
                        .ok_or_else(|| {
                            invalid(format!(
                                "rule {}: unknown class {c:?} (read, manage, reset, launch, debug)",
                                i + 1
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if r.users.is_empty() && r.groups.is_empty() {
                return Err(invalid(format!(
                    "rule {}: names no user and no group",
                    i + 1
                )));
            }
            let uids = r
                .users
                .iter()
                .map(|u| resolve(path, "user", u))
                .collect::<Result<_, _>>()?;
            let gids = r
                .groups
                .iter()
                .map(|g| resolve(path, "group", g))
                .collect::<Result<_, _>>()?;
            rules.push(Rule {
                classes,
                uids,
                gids,
            });
        }
        Ok(Policy { rules })
    }

    /// Whether `creds` may issue commands of `class`.
    pub fn allows(&self, class: Class, creds: &Creds) -> bool {
        self.rules.iter().any(|r| {
            r.classes.contains(&class)
                && (r.uids.contains(&creds.uid) || creds.gids.iter().any(|g| r.gids.contains(g)))
        })
    }
}

/// One audit line: who issued what, and how it ended. Never key material or buffers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    /// Seconds since the epoch.
    pub time: f64,
    /// Process id of the caller.
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its executable.
    pub exe: String,
    /// The command's name (psp-sev.h's, KVM's, or the node's own request).
    pub command: &'static str,
    /// The firmware's status, `null` when the command never reached the firmware.
    pub status: Option<u32>,
    /// The errno returned (0 for success).
    pub errno: i32,
    /// How long the command took, in microseconds.
    pub duration_us: u64,
}

/// An append-only JSON-lines log written by its own thread. A command's line is written
/// (to the kernel: a daemon killed afterwards does not lose it) before the command is
/// answered; a disk that stalls longer than [`AUDIT_WAIT`] delays no command, whose line then
/// follows. A failed write is a warning in the daemon's log, not a failed command.
pub struct AuditLog {
    tx: Mutex<Option<mpsc::SyncSender<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Lines dropped because the queue was full, not yet reported in the log.
    dropped: AtomicU64,
    /// Lines queued so far (the sequence number of the last).
    queued: AtomicU64,
    /// Lines the writer has handed to the kernel (or failed to), and its signal.
    written: Arc<(Mutex<u64>, Condvar)>,
    /// A wait timed out and the writer has not caught up since: commands do not wait.
    stalled: AtomicBool,
}

/// How long a command waits for its audit line to be written before it is answered anyway.
pub const AUDIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Lines the audit queue holds before it drops (a stuck disk must not grow the daemon).
pub const AUDIT_QUEUE: usize = 4096;

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Opens `path` for appending (creating it with mode 0640).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        let (tx, rx) = mpsc::sync_channel::<String>(AUDIT_QUEUE);
        let shown = path.display().to_string();
        let written = Arc::new((Mutex::new(0u64), Condvar::new()));
        let progress = written.clone();
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                let mut failing = false;
                for line in rx {
                    match file.write_all(line.as_bytes()) {
                        Ok(()) if failing => {
                            log::warn!("audit log {shown}: writing again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            log::warn!(
                                "audit log {shown}: {e}; lines are lost until writes succeed again"
                            );
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    let (count, signal) = &*progress;
                    *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    signal.notify_all();
                }
                let _ = file.sync_all();
            })?;
        Ok(AuditLog {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            written,
            stalled: AtomicBool::new(false),
        })
    }

    /// Queues a record; when the queue is full the line is dropped and counted, and the count
    /// goes into the log as `{"time": .., "dropped": N}` once there is room again.
    pub fn record(&self, rec: &AuditRecord) {
        let Ok(mut line) = serde_json::to_string(rec) else {
            return;
        };
        line.push('\n');
        let seq = {
            // Under the lock, so that sequence numbers follow the queue's order.
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = tx.as_ref() else { return };
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > 0 {
                let notice = format!("{{\"time\":{},\"dropped\":{dropped}}}\n", now());
                if tx.try_send(notice).is_ok() {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_sub(dropped, Ordering::Relaxed);
                    log::warn!("audit log: {dropped} lines were dropped while its queue was full");
                }
            }
            match tx.try_send(line) {
                Ok(()) => self.queued.fetch_add(1, Ordering::Relaxed) + 1,
                Err(mpsc::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
        };
        let (count, signal) = &*self.written;
        let count = count.lock().unwrap_or_else(|e| e.into_inner());
        if self.stalled.load(Ordering::Relaxed) {
            if *count + 1 < seq {
                return; // still behind: only lines after it has caught up wait again
            }
            self.stalled.store(false, Ordering::Relaxed);
        }
        let (count, wait) = signal
            .wait_timeout_while(count, AUDIT_WAIT, |n| *n < seq)
            .unwrap_or_else(|e| e.into_inner());
        drop(count);
        if wait.timed_out() && !self.stalled.swap(true, Ordering::Relaxed) {
            log::warn!("audit log: a write took over {AUDIT_WAIT:?}; commands go on without waiting for it");
        }
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and closes the log.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// The checks around every command of a `sev` node: the policy (reloadable) and the audit log.
#[derive(Debug, Default)]
pub struct Gate {
    policy: RwLock<Option<Policy>>,
    /// The policy file, for reloads.
    pub policy_path: Option<PathBuf>,
    audit: Option<AuditLog>,
    /// Closed (shutting down), and the commands inside; see [`Gate::enter`].
    inside: Mutex<(bool, u32)>,
    left: Condvar,
}

/// A command being served; the gate closes only once every one has left.
#[derive(Debug)]
pub struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut inside = self.0.inside.lock().unwrap_or_else(|e| e.into_inner());
        inside.1 -= 1;
        // Only a closing gate waits for the last to leave; a wake is a syscall per command.
        if inside.0 && inside.1 == 0 {
            self.0.left.notify_all();
        }
    }
}

/// How long shutting down waits for the commands being served. They take milliseconds; one
/// still inside after this waits on its caller (memory that never arrives), and the daemon
/// exits without answering it.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Gate {
    /// A gate with an optional policy and audit log.
    pub fn new(policy: Option<(Policy, PathBuf)>, audit: Option<AuditLog>) -> Gate {
        let (policy, policy_path) = match policy {
            Some((p, path)) => (Some(p), Some(path)),
            None => (None, None),
        };
        Gate {
            policy: RwLock::new(policy),
            policy_path,
            audit,
            inside: Mutex::new((false, 0)),
            left: Condvar::new(),
        }
    }

    /// Lets a command in, or `None` once the daemon is shutting down: a command answered
    /// after the audit log closed would go unrecorded, so it is refused (ENODEV, as from a
    /// device being removed) instead.
    pub fn enter(&self) -> Option<Inside<'_>> {
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        if inside.0 {
            return None;
        }
        inside.1 += 1;
        Some(Inside(self))
    }

    /// Whether the caller (thread `tid`) holds one of `classes`; with no policy, anyone
    /// does.
    pub fn allows(&self, classes: &[Class], tid: u32) -> bool {
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        match policy.as_ref() {
            None => true,
            Some(p) => Creds::of(tid).is_some_and(|c| classes.iter().any(|&k| p.allows(k, &c))),
        }
    }

    /// Reloads the policy file (SIGHUP); a bad file keeps the old policy.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.policy_path else {
            return Ok(());
        };
        let p = Policy::load(path)?;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
        Ok(())
    }

    /// Records a finished command, if there is an audit log.
    pub fn audit(
        &self,
        tid: u32,
        command: &'static str,
        status: Option<u32>,
        errno: i32,
        started: std::time::Instant,
    ) {
        let Some(log) = &self.audit else { return };
        let pid = vfs::tgid(tid);
        let uid = Creds::of(tid).map(|c| c.uid).unwrap_or(u32::MAX);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        log.record(&AuditRecord {
            time: now(),
            pid,
            uid,
            exe,
            command,
            status,
            errno,
            duration_us: started.elapsed().as_micros() as u64,
        });
    }

    /// Lets no further command in, waits for those inside, and closes the audit log (at
    /// shutdown).
    pub fn close(&self) {
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        inside.0 = true;
        let (inside, wait) = self
            .left
            .wait_timeout_while(inside, CLOSE_WAIT, |i| i.1 > 0)
            .unwrap_or_else(|e| e.into_inner());
        if wait.timed_out() {
            log::warn!(
                "{} commands still wait on their callers at shutdown; they go unanswered",
                inside.1
            );
        }
        drop(inside);
        if let Some(log) = &self.audit {
            log.close();
        }
    }
}

/// Seconds since the epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_users_and_groups() {
        let p = Policy::parse("rules:\n  - classes: [read]\n    groups: ['100']\n  - classes: [manage, reset]\n    users: [root]\n", Path::new("p")).unwrap();
        let reader = Creds {
            uid: 1000,
            gids: vec![1000, 100],
        };
        let root = Creds {
            uid: 0,
            gids: vec![0],
        };
        let other = Creds {
            uid: 1001,
            gids: vec![1001],
        };
        let allows = |cmd: SevCmd, c: &Creds| p.allows(class_of(cmd), c);
        assert!(allows(SevCmd::PlatformStatus, &reader));
        assert!(!allows(SevCmd::PekGen, &reader));
        assert!(allows(SevCmd::FactoryReset, &root));
        assert!(
            !allows(SevCmd::PlatformStatus, &root),
            "root gets only what a rule grants"
        );
        assert!(!allows(SevCmd::GetId2, &other));
        assert!(!p.allows(Class::Launch, &root));
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        let bad = |t: &str| Policy::parse(t, Path::new("p")).unwrap_err().to_string();
        assert!(bad("rules:\n  - classes: [write]\n    users: [root]\n")
            .contains("unknown class \"write\""));
        assert!(
            bad("rules:\n  - classes: [read]\n    users: [no-such-user-xyz]\n")
                .contains("unknown user")
        );
        assert!(
            bad("rules:\n  - classes: [read]\n    groups: [no-such-group-xyz]\n")
                .contains("unknown group")
        );
        assert!(bad("rules:\n  - classes: [read]\n").contains("names no user"));
        assert!(bad("rulez: []\n").contains("unknown field"));
    }

    /// A PLATFORM_STATUS by process `pid`.
    fn status_record(pid: u32) -> AuditRecord {
        AuditRecord {
            time: 0.0,
            pid,
            uid: 0,
            exe: "/x".into(),
            command: "SEV_PLATFORM_STATUS",
            status: Some(0),
            errno: 0,
            duration_us: 1,
        }
    }

    #[test]
    fn a_commands_line_is_written_before_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..50u32 {
            log.record(&status_record(i));
            // What a daemon killed now would leave: the line is already in the file.
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), i as usize + 1);
            assert!(text.contains(&format!("\"pid\":{i},")));
        }
    }

    #[test]
    fn a_closed_gate_lets_nothing_in_and_waits_for_what_is_inside() {
        let gate = Arc::new(Gate::new(None, None));
        let inside = gate.enter().expect("open gate");
        let closer = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.close())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!closer.is_finished(), "close waits for the command inside");
        assert!(gate.enter().is_none(), "nothing new once closing");
        drop(inside);
        closer.join().unwrap();
        assert!(gate.enter().is_none());
    }

    #[test]
    fn a_stuck_audit_log_drops_and_counts_instead_of_growing() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Hold the FIFO open without reading: the writer thread blocks once the pipe is full.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let log = AuditLog::open(&fifo).unwrap();
        let rec = status_record(1);
        let n = 3 * AUDIT_QUEUE;
        for _ in 0..n {
            log.record(&rec);
        }
        let dropped = log.dropped();
        assert!(
            dropped > 0 && dropped < n as u64,
            "{dropped} of {n} dropped"
        );
        // Drain; the next record brings the count into the log.
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 65536];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                match reader.read(&mut buf) {
                    Ok(k) => all.extend_from_slice(&buf[..k]),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
                if String::from_utf8_lossy(&all).contains("\"dropped\"") {
                    break;
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while log.dropped() > 0 && std::time::Instant::now() < deadline {
            log.record(&rec);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let text = drain.join().unwrap();
        let counted: u64 = text
            .split("\"dropped\":")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .and_then(|n| n.parse().ok())
            .expect("the count is in the log");
        assert!(counted >= dropped, "{counted} >= {dropped}");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn credentials_of_this_thread() {
        let c = Creds::of(std::process::id()).unwrap();
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert!(c.gids.contains(&nix::unistd::getegid().as_raw()));
    }
}
