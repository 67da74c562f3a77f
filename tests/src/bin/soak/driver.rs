//! The soak's driver: the daemon, the clients, the faults, the checks and the table.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use sevd::certs::PlatformChain;
use sevd::firmware::chip::Chip;
use sevd::firmware::nv::PlatformKeys;
use tests::{pdh_export, platform_status, vm_encrypt_op, Rng};
use uapi::cert::Certificate;
use uapi::kvm::{KvmSevCmdId, KvmSevLaunchStart};

use super::{audit_counts, percentile, spawn_client, Client, Report};

/// The mix: three platform clients, two VMs under debug reads, two `sevctl launch` loops and
/// the platform owner.
const KINDS: [&str; 8] = [
    "platform", "platform", "platform", "debug", "debug", "launch", "launch", "admin",
];
/// The daemon is SIGKILLed (every third time: SIGTERM) this often, under load.
const RESTART_EVERY: Duration = Duration::from_secs(10);
/// SEV ASIDs (16..=31) and SEV-ES ASIDs (1..=15) of sevd's default part.
const SEV_ASIDS: u32 = 16;
const ES_ASIDS: u32 = 15;

const POLICY: &str =
    "rules:\n  - classes: [read, manage, reset, launch, debug]\n    users: [root]\n";

struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("sevd.log")
    }

    fn start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| e.to_string())?;
        let child = Command::new(super::sibling("sevd"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--mountpoint")
            .arg(self.mnt())
            .arg("--audit-log")
            .arg(self.dir.join("audit.log"))
            .arg("--policy")
            .arg(self.dir.join("policy.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("sevd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let up = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.mnt().join("sev"))
                .map(|f| platform_status(&f).is_ok())
                .unwrap_or(false);
            if up {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("sevd exited at start: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("sevd not ready after 120 s".into())
    }

    fn signal(&mut self, sig: Signal) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), sig);
            let _ = child.wait();
        }
    }

    /// Whether it died without being asked to.
    fn died(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }
}

#[derive(Default)]
struct Tally {
    answered: u64,
    latencies: Vec<Duration>,
    per_command: HashMap<(u32, String), u64>,
    launches_ok: u64,
    launches_failed: u64,
    launch_times: Vec<Duration>,
    clients_killed: u64,
    unplanned_deaths: u64,
    restarts_kill: u64,
    restarts_term: u64,
    state_checks: u64,
    state_valid: u64,
    checkpoints: u64,
    leaks: u64,
    deaths_covered: u64,
    deaths_since_checkpoint: u64,
    key_checks: u64,
    key_differences: u64,
    sighups: u64,
    failures: Vec<String>,
}

/// The keys the owner last saw, and whether a change was under way since.
#[derive(Default)]
struct Keys {
    confirmed: Option<String>,
    changing: bool,
}

pub fn run(duration: Duration, dir: &Path) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("soak: run as root (it mounts FUSE)");
        return ExitCode::from(2);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("state")).expect("work dir");
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy");
    // A chip made elsewhere (the suite's), or sevd makes one at its first start.
    if let Some(chip) = std::env::var_os("SOAK_CHIP") {
        std::fs::copy(chip, dir.join("state/chip.bin")).expect("chip");
    }
    let manifest = std::env::var_os("SOAK_MANIFEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sev.yaml"))
        });
    let mut daemon = Daemon {
        dir: dir.to_path_buf(),
        child: None,
    };
    if let Err(e) = daemon.start() {
        eprintln!("soak: {e}");
        return ExitCode::FAILURE;
    }
    let chip = match std::fs::read(daemon.state().join("chip.bin"))
        .map_err(|e| e.to_string())
        .and_then(|b| Chip::decode(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("soak: the chip: {e}");
            return ExitCode::FAILURE;
        }
    };

    let seed = tests::seed();
    let mut rng = Rng(seed);
    let (tx, rx) = mpsc::channel::<(u32, Report)>();
    let mut t = Tally::default();
    let mut keys = Keys::default();
    let mut clients: Vec<Client> = KINDS
        .iter()
        .map(|k| spawn_client(k, &daemon.mnt(), rng.next_u64(), &manifest, &tx))
        .collect();
    let started = Instant::now();
    let mut next_restart = started + RESTART_EVERY;
    let mut next_checkpoint = started + RESTART_EVERY / 2;
    let mut restarts = 0u64;

    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(10));
        drain(&rx, &mut t, &mut keys);
        reap(&mut clients, &mut t, &daemon, &mut rng, &manifest, &tx);
        if daemon.died() {
            t.unplanned_deaths += 1;
            t.failures
                .push(format!("sevd died unasked at {:?}", started.elapsed()));
            daemon.child = None;
            if let Err(e) = daemon.start() {
                t.failures.push(e);
                break;
            }
        }
        // About one client killed a second, one SIGHUP every three seconds.
        if rng.below(100) == 0 && !clients.is_empty() {
            let i = rng.below(clients.len() as u64) as usize;
            let _ = kill(Pid::from_raw(clients[i].child.id() as i32), Signal::SIGKILL);
            t.clients_killed += 1;
            t.deaths_since_checkpoint += 1;
        }
        if rng.below(300) == 0 {
            if let Some(c) = &daemon.child {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGHUP);
                t.sighups += 1;
            }
        }
        if Instant::now() >= next_checkpoint {
            next_checkpoint += RESTART_EVERY;
            checkpoint(&mut clients, &mut t, &daemon, &rx, &mut keys);
            clients = KINDS
                .iter()
                .map(|k| spawn_client(k, &daemon.mnt(), rng.next_u64(), &manifest, &tx))
                .collect();
        }
        if Instant::now() >= next_restart {
            next_restart += RESTART_EVERY;
            restarts += 1;
            if restarts % 3 == 0 {
                daemon.signal(Signal::SIGTERM);
                t.restarts_term += 1;
            } else {
                daemon.signal(Signal::SIGKILL);
                t.restarts_kill += 1;
            }
            // Clients mid-command when it died may finish reporting before the check.
            std::thread::sleep(Duration::from_millis(50));
            drain(&rx, &mut t, &mut keys);
            check_state(&daemon, &chip, &mut t);
            if let Err(e) = daemon.start() {
                t.failures.push(e);
                break;
            }
            check_keys(&daemon, &mut keys, &mut t);
        }
    }
    let elapsed = started.elapsed();
    for c in &mut clients {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    drain(&rx, &mut t, &mut keys);
    daemon.signal(Signal::SIGTERM);
    let missing = missing_audit(&dir.join("audit.log"), &mut t);
    table(&t, elapsed, restarts, missing, seed);
    if t.unplanned_deaths == 0
        && t.state_valid == t.state_checks
        && t.leaks == 0
        && missing == 0
        && t.key_differences == 0
        && t.failures.is_empty()
    {
        ExitCode::SUCCESS
    } else {
        for f in &t.failures {
            eprintln!("soak: {f}");
        }
        ExitCode::FAILURE
    }
}

fn drain(rx: &mpsc::Receiver<(u32, Report)>, t: &mut Tally, keys: &mut Keys) {
    while let Ok((pid, report)) = rx.try_recv() {
        match report {
            Report::Done(name, errno, took) => {
                t.answered += 1;
                t.latencies.push(took);
                *t.per_command
                    .entry((pid, format!("{name} {errno}")))
                    .or_insert(0) += 1;
            }
            Report::Changing => keys.changing = true,
            Report::Keys(k) => {
                keys.confirmed = Some(k);
                keys.changing = false;
            }
        }
    }
}

/// Clients that ended: launches are counted (a completed one must have its audit line),
/// and every client is started again.
fn reap(
    clients: &mut [Client],
    t: &mut Tally,
    daemon: &Daemon,
    rng: &mut Rng,
    manifest: &Path,
    tx: &mpsc::Sender<(u32, Report)>,
) {
    for c in clients.iter_mut() {
        let Ok(Some(status)) = c.child.try_wait() else {
            continue;
        };
        if c.kind == "launch" {
            if status.success() {
                t.launches_ok += 1;
                t.launch_times.push(c.started.elapsed());
                *t.per_command
                    .entry((c.child.id(), "KVM_SEV_LAUNCH_FINISH 0".into()))
                    .or_insert(0) += 1;
            } else {
                t.launches_failed += 1;
            }
        }
        *c = spawn_client(c.kind, &daemon.mnt(), rng.next_u64(), manifest, tx);
    }
}

/// Every client killed at once, mid-command; once all are gone (their files closed), the
/// platform must hold no guest, and every ASID must be free for a new launch.
fn checkpoint(
    clients: &mut Vec<Client>,
    t: &mut Tally,
    daemon: &Daemon,
    rx: &mpsc::Receiver<(u32, Report)>,
    keys: &mut Keys,
) {
    for c in clients.iter() {
        let _ = kill(Pid::from_raw(c.child.id() as i32), Signal::SIGKILL);
    }
    for c in clients.iter_mut() {
        let _ = c.child.wait();
    }
    t.clients_killed += clients.len() as u64;
    t.deaths_since_checkpoint += clients.len() as u64;
    clients.clear();
    drain(rx, t, keys);
    t.checkpoints += 1;
    let sev_path = daemon.mnt().join("sev");
    let Ok(sev) = OpenOptions::new().read(true).write(true).open(&sev_path) else {
        t.failures
            .push("checkpoint: cannot open the sev node".into());
        return;
    };
    let guests = platform_status(&sev)
        .map(|s| s.guest_count)
        .unwrap_or(u32::MAX);
    if guests != 0 {
        t.leaks += 1;
        t.failures.push(format!(
            "checkpoint {}: {guests} guests left",
            t.checkpoints
        ));
    }
    // Every ASID of both pools taken by a new guest, then all given back.
    let mut vms = vec![];
    let mut refused = 0;
    for i in 0..SEV_ASIDS + ES_ASIDS {
        let es = i >= SEV_ASIDS;
        let Ok(vm) = OpenOptions::new()
            .read(true)
            .write(true)
            .open(daemon.mnt().join("sev-vm"))
        else {
            refused += 1;
            continue;
        };
        let init = if es {
            KvmSevCmdId::EsInit
        } else {
            KvmSevCmdId::Init
        };
        let mut start = KvmSevLaunchStart {
            policy: if es { 0x4 } else { 0 },
            ..Default::default()
        };
        let ok = vm_encrypt_op(&vm, &sev, init, &mut 0u64).is_ok()
            && vm_encrypt_op(&vm, &sev, KvmSevCmdId::LaunchStart, &mut start).is_ok();
        if !ok {
            refused += 1;
        }
        vms.push(vm);
    }
    drop(vms);
    let after = platform_status(&sev)
        .map(|s| s.guest_count)
        .unwrap_or(u32::MAX);
    if refused > 0 || after != 0 {
        t.leaks += 1;
        t.failures.push(format!(
            "checkpoint {}: {refused} ASIDs not free, {after} guests after closing",
            t.checkpoints
        ));
    }
    t.deaths_covered += std::mem::take(&mut t.deaths_since_checkpoint);
}

/// The state directory as the killed daemon left it: the store opens under the chip's seal
/// and its chain verifies; nothing quarantined.
fn check_state(daemon: &Daemon, chip: &Chip, t: &mut Tally) {
    t.state_checks += 1;
    let verdict = (|| -> Result<(), String> {
        let bytes = std::fs::read(daemon.state().join("nv.bin")).map_err(|e| e.to_string())?;
        let seal = chip.nv_seal_key().map_err(|e| e.to_string())?;
        let v1 = chip.nv_v1_mac_key().map_err(|e| e.to_string())?;
        let keys = PlatformKeys::decode(&bytes, &seal, &v1).map_err(|e| e.to_string())?;
        PlatformChain {
            pdh: keys.pdh,
            pek: keys.pek,
            oca: keys.oca,
            cek: chip.cek.clone(),
        }
        .verify()
        .map_err(|e| e.to_string())?;
        let entries = std::fs::read_dir(daemon.state()).map_err(|e| e.to_string())?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".corrupt-") {
                return Err(format!("{name} quarantined"));
            }
        }
        Ok(())
    })();
    match verdict {
        Ok(()) => t.state_valid += 1,
        Err(e) => t
            .failures
            .push(format!("state after restart {}: {e}", t.state_checks)),
    }
}

/// The keys after a restart: those the owner last saw, unless a change was under way (then
/// whatever it left becomes what was last seen).
fn check_keys(daemon: &Daemon, keys: &mut Keys, t: &mut Tally) {
    let Ok(sev) = OpenOptions::new()
        .read(true)
        .write(true)
        .open(daemon.mnt().join("sev"))
    else {
        return;
    };
    let Ok((pdh, chain)) = pdh_export(&sev) else {
        t.failures
            .push("PDH_CERT_EXPORT after a restart failed".into());
        return;
    };
    let now = super::key_digest(&pdh, &chain);
    t.key_checks += 1;
    match &keys.confirmed {
        Some(k) if *k != now && !keys.changing => {
            t.key_differences += 1;
            t.failures
                .push(format!("restart {}: the keys changed", t.key_checks));
        }
        _ => {}
    }
    // Certificates the clients never saw can't be compared, only checked whole.
    if Certificate::decode(&pdh).is_err() {
        t.failures.push("a PDH that does not decode".into());
    }
    keys.confirmed = Some(now);
    keys.changing = false;
}

fn missing_audit(path: &Path, t: &mut Tally) -> u64 {
    let audit = audit_counts(path);
    let mut by_command: HashMap<&str, u64> = HashMap::new();
    for (key, n) in &t.per_command {
        let lost = n.saturating_sub(audit.get(key).copied().unwrap_or(0));
        if lost > 0 {
            *by_command.entry(key.1.as_str()).or_insert(0) += lost;
        }
    }
    let total = by_command.values().sum();
    if total > 0 {
        let mut list: Vec<_> = by_command.into_iter().collect();
        list.sort();
        t.failures
            .push(format!("audit lines missing, by command: {list:?}"));
    }
    total
}

fn table(t: &Tally, elapsed: Duration, restarts: u64, missing: u64, seed: u64) {
    let mut lat = t.latencies.clone();
    lat.sort();
    let mut launches = t.launch_times.clone();
    launches.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let secs = elapsed.as_secs_f64();
    println!("soak: {:.0} s, {} clients, seed {seed}", secs, KINDS.len());
    println!(
        "  commands answered              {:>9}  ({:.1}/s)",
        t.answered,
        t.answered as f64 / secs
    );
    println!(
        "  latency p50 / p99              {:>9.2} / {:.2} ms",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "  sevctl launches completed      {:>9}  (median {:.0} ms; {} cut short)",
        t.launches_ok,
        ms(percentile(&launches, 0.5)),
        t.launches_failed
    );
    println!("  clients killed (SIGKILL)       {:>9}", t.clients_killed);
    println!("  policy reloads (SIGHUP)        {:>9}", t.sighups);
    println!(
        "  daemon restarts                {:>9}  ({} SIGKILL, {} SIGTERM)",
        restarts, t.restarts_kill, t.restarts_term
    );
    println!("  daemon deaths, unplanned       {:>9}", t.unplanned_deaths);
    let pct = if t.state_checks == 0 {
        100.0
    } else {
        100.0 * t.state_valid as f64 / t.state_checks as f64
    };
    println!(
        "  state dir valid after restart  {:>9}  ({}/{})",
        format!("{pct:.0}%"),
        t.state_valid,
        t.state_checks
    );
    println!(
        "  leaks after client deaths      {:>9}  ({} checkpoints, {} deaths covered)",
        t.leaks, t.checkpoints, t.deaths_covered
    );
    println!(
        "  audit lines missing            {:>9}  (of {} answers)",
        missing,
        t.answered + t.launches_ok
    );
    println!(
        "  key differences after restart  {:>9}  ({} compared)",
        t.key_differences, t.key_checks
    );
}
