//! Migration between two embedded platforms in this process, through sevctl's own source
//! and destination, with a proxy between them playing the hostile network: flipped bits,
//! a cut connection, reordered, replayed and substituted packets, a listener that never
//! answers, and the policies that forbid the move. No root needed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sevctl_cli::migrate::receive::{receive, Options};
use sevctl_cli::migrate::send::{send, Source};
use sevctl_cli::migrate::stream::{self, PageRun, Record, Tally};
use sevctl_cli::migrate::Addr;
use sevctl_cli::select::Target;
use sevctl_cli::steps::Log;
use sevd::platform::{EmbeddedConfig, Platform, Vm};
use uapi::kvm::{KVM_X86_SEV_ES_VM, KVM_X86_SEV_VM};
use uapi::policy::{DOMAIN, ES, NOSEND, SEV};

/// Guest RAM: two runs of pages.
const RAM: usize = 2 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// An embedded platform in `dir`, on the suite's shared chip unless `own_chip`.
fn platform(dir: &Path, own_chip: bool) -> Platform {
    if !own_chip {
        std::fs::write(dir.join(sevd::paths::CHIP_FILE), tests::shared_chip()).unwrap();
        std::fs::write(dir.join(sevd::paths::KDS_FILE), tests::shared_kds()).unwrap();
    }
    Platform::embedded(&EmbeddedConfig::new(dir)).unwrap()
}

fn pattern() -> Vec<u8> {
    (0..RAM as u32)
        .map(|i| (i / 4096 * 13 + i * 7) as u8)
        .collect()
}

/// A RUNNING guest holding `pattern()` (SEV-ES: with one vCPU's save area).
fn launched(p: &Platform, policy: u32) -> Vm {
    let es = policy & ES != 0;
    let mut vm = p
        .create_vm_of(
            if es {
                KVM_X86_SEV_ES_VM
            } else {
                KVM_X86_SEV_VM
            },
            RAM,
        )
        .unwrap();
    vm.sev_init2(0, 0).unwrap();
    vm.launch_start(policy, None).unwrap();
    vm.ram_mut().copy_from_slice(&pattern());
    vm.launch_update_data(0, RAM as u32).unwrap();
    if es {
        let mut vmsa = [0u8; 4096];
        vmsa[0x160..0x168].copy_from_slice(&0x400u64.to_le_bytes());
        vm.set_vmsa(0, &vmsa).unwrap();
        vm.launch_update_vmsa().unwrap();
    }
    vm.launch_measure().unwrap();
    vm.launch_finish().unwrap();
    vm
}

fn state(vm: &Vm) -> u8 {
    vm.guest_status().unwrap().state as u8
}

fn guests(p: &Platform) -> u32 {
    p.status().unwrap().guest_count
}

/// What the proxy does to the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tamper {
    None,
    /// Flips one bit of the source's byte at this offset.
    Flip(usize),
    /// Flips one bit of the target's byte at this offset.
    FlipBack(usize),
    /// Ends the connection after this many of the source's bytes.
    Cut(usize),
    /// Sends the second PAGES record before the first.
    Reorder,
    /// Sends the first PAGES record twice.
    Replay,
    /// Replaces the second run's packets with the first's, and END with a tally that
    /// matches: what a host that rewrites the stream can do.
    Substitute,
}

/// Proxies one connection from `listen` to `to`; returns the source's bytes as received.
fn proxy(listen: UnixListener, to: PathBuf, tamper: Tamper) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (src, _) = listen.accept().unwrap();
        let dst = UnixStream::connect(&to).unwrap();
        let (mut src_r, mut dst_w) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let (mut dst_r, mut src_w) = (dst, src);
            let mut at = 0;
            let mut buf = [0u8; 4096];
            while let Ok(n) = dst_r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Tamper::FlipBack(o) = tamper {
                    if (at..at + n).contains(&o) {
                        buf[o - at] ^= 0x04;
                    }
                }
                at += n;
                if src_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = src_w.shutdown(std::net::Shutdown::Both);
        });
        let seen = match tamper {
            Tamper::Reorder | Tamper::Replay | Tamper::Substitute => {
                by_record(&mut src_r, &mut dst_w, tamper)
            }
            _ => by_byte(&mut src_r, &mut dst_w, tamper),
        };
        // The target hears the end, and what it still says reaches the source before the
        // source's side is ended.
        let _ = dst_w.shutdown(std::net::Shutdown::Write);
        let _ = back.join();
        let _ = src_r.shutdown(std::net::Shutdown::Both);
        seen
    })
}

fn by_byte(src: &mut UnixStream, dst: &mut UnixStream, tamper: Tamper) -> Vec<u8> {
    let mut seen = vec![];
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = src.read(&mut buf) {
        if n == 0 {
            break;
        }
        let at = seen.len();
        seen.extend_from_slice(&buf[..n]);
        let mut n = n;
        match tamper {
            Tamper::Flip(o) if (at..at + n).contains(&o) => buf[o - at] ^= 0x10,
            Tamper::Cut(o) if at + n >= o => {
                n = o - at;
                let _ = dst.write_all(&buf[..n]);
                return seen;
            }
            _ => {}
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    seen
}

fn by_record(src: &mut UnixStream, dst: &mut UnixStream, tamper: Tamper) -> Vec<u8> {
    let mut hello = [0u8; 12];
    if src.read_exact(&mut hello).is_err() || dst.write_all(&hello).is_err() {
        return vec![];
    }
    let mut runs = 0;
    let mut held: Option<Record> = None;
    let mut first: Option<PageRun> = None;
    let mut tally = Tally::default();
    let forward = |r: &Record, dst: &mut UnixStream, tally: &mut Tally| {
        let d = r.write_to(dst).is_ok();
        let digest = r.write_to(&mut std::io::sink()).unwrap();
        if !matches!(r, Record::End { .. } | Record::Commit) {
            tally.add(r, &digest);
        }
        d
    };
    while let Ok((r, _)) = Record::read_from(src) {
        let out: Vec<Record> = match (&r, tamper) {
            (Record::Pages(run), _) => {
                runs += 1;
                match (runs, tamper) {
                    (1, Tamper::Reorder) => {
                        held = Some(r.clone());
                        vec![]
                    }
                    (2, Tamper::Reorder) => vec![r.clone(), held.take().unwrap()],
                    (1, Tamper::Replay) => vec![r.clone(), r.clone()],
                    (1, Tamper::Substitute) => {
                        first = Some(run.clone());
                        vec![r.clone()]
                    }
                    (2, Tamper::Substitute) => {
                        let mut forged = first.clone().unwrap();
                        forged.gpa = run.gpa;
                        vec![Record::Pages(forged)]
                    }
                    _ => vec![r.clone()],
                }
            }
            (Record::End { .. }, Tamper::Substitute) => vec![tally.end()],
            _ => vec![r.clone()],
        };
        for o in &out {
            if !forward(o, dst, &mut tally) {
                return vec![];
            }
        }
    }
    vec![]
}

/// One migration of `vm` from `src` to `dst`'s platform through a proxy doing `tamper`.
/// Returns the source's result, the target's (with the received VM), and the source's bytes.
fn migrate(
    dir: &Path,
    src: (&Platform, &Vm),
    dst: (&Platform, &Path),
    tamper: Tamper,
) -> (
    sevctl_cli::error::Result<serde_json::Value>,
    sevctl_cli::error::Result<Vm>,
    Vec<u8>,
) {
    let target_sock = dir.join(format!("t{}.sock", rand_tag()));
    let proxy_sock = dir.join(format!("p{}.sock", rand_tag()));
    let listener = UnixListener::bind(&proxy_sock).unwrap();
    std::thread::scope(|s| {
        let target = Target {
            device: "/nonexistent".into(),
            emulated: true,
            state_dir: Some(dst.1.to_path_buf()),
            product: None,
        };
        let opts = Options {
            listen: Addr::Unix(target_sock.clone()),
            timeout: TIMEOUT,
            show_secrets: false,
            ca: None,
        };
        let platform = dst.0;
        let received = s.spawn(move || receive(&mut Log::new(true), &target, platform, &opts));
        while !target_sock.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let forwarded = proxy(listener, target_sock.clone(), tamper);
        let source = Source {
            platform: src.0,
            vm: src.1,
            vcpus: u32::from(src.1.guest_status().unwrap().policy & ES != 0),
            secret: None,
        };
        let sent = send(
            &mut Log::new(true),
            &source,
            &Addr::Unix(proxy_sock.clone()),
            TIMEOUT,
        );
        let received = received.join().unwrap().map(|g| g.vm);
        (sent, received, forwarded.join().unwrap())
    })
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Two platforms on the shared chip, and a RUNNING guest on the first.
struct Pair {
    dir: tempfile::TempDir,
    src: Platform,
    dst: Platform,
    dst_dir: PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    Pair {
        src: platform(&a, false),
        dst: platform(&b, false),
        dst_dir: b,
        dir,
    }
}

impl Pair {
    fn migrate(
        &self,
        vm: &Vm,
        tamper: Tamper,
    ) -> (
        sevctl_cli::error::Result<serde_json::Value>,
        sevctl_cli::error::Result<Vm>,
        Vec<u8>,
    ) {
        migrate(
            self.dir.path(),
            (&self.src, vm),
            (&self.dst, &self.dst_dir),
            tamper,
        )
    }
}

/// Where each record of a clean stream begins: (kind, offset, length).
fn records(stream_bytes: &[u8]) -> Vec<(u32, usize, usize)> {
    let mut out = vec![];
    let mut at = 12;
    while at + 8 <= stream_bytes.len() {
        let kind = u32::from_le_bytes(stream_bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(stream_bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((kind, at, len));
        at += 8 + len;
    }
    out
}

#[test]
fn a_guest_moves_whole_and_its_pages_differ_on_the_wire() {
    let pair = pair();
    for policy in [0, ES] {
        let vm = launched(&pair.src, policy);
        let (sent, received, bytes) = pair.migrate(&vm, Tamper::None);
        let report = sent.unwrap();
        let moved = received.unwrap();
        assert_eq!(report["pages"], (RAM / 4096) as u64);
        assert_eq!(report["vmsas"], u64::from(policy == ES));
        assert_eq!(state(&vm), 6, "SENT on the source");
        assert_eq!(state(&moved), 3, "RUNNING on the target");
        assert_eq!(
            moved.guest_read(0, RAM).unwrap(),
            pattern(),
            "the guest's view"
        );
        assert_ne!(moved.ram(), vm.ram(), "each platform's own memory key");
        let needle = &pattern()[4096..4096 + 64];
        assert!(
            !bytes.windows(64).any(|w| w == needle),
            "no plaintext on the wire"
        );
        drop(moved);
        drop(vm);
        assert_eq!((guests(&pair.src), guests(&pair.dst)), (0, 0));
    }
}

#[test]
fn a_flipped_bit_anywhere_fails_clearly_and_the_guest_can_be_sent_again() {
    let pair = pair();
    let vm = launched(&pair.src, ES);
    // A clean stream's shape, from another guest's move.
    let probe = launched(&pair.src, ES);
    let (sent, received, clean) = pair.migrate(&probe, Tamper::None);
    sent.unwrap();
    drop(received.unwrap());
    drop(probe);
    let recs = records(&clean);
    let find = |kind: u32| recs.iter().find(|r| r.0 == kind).copied().unwrap();
    let (start, layout, pages, vmsa, end) = (find(2), find(3), find(4), find(5), find(6));
    let flips = [
        ("the hello", 3),
        ("START's policy", start.1 + 8),
        ("the source PDH", start.1 + 8 + 8 + 200),
        ("the session", start.1 + 8 + start.2 - 10),
        ("a record's length", layout.1 + 5),
        ("LAYOUT's first slot", layout.1 + 8 + 8 + 8 + 2),
        ("a run's address", pages.1 + 8 + 1),
        ("a run's address within the guest", pages.1 + 8 + 2),
        ("a packet header's IV", pages.1 + 8 + 12 + 52 * 7 + 6),
        ("a packet's ciphertext", pages.1 + 8 + 12 + 256 * 52 + 5000),
        ("a save area's packet", vmsa.1 + 8 + 4 + 52 + 100),
        ("END's tally", end.1 + 8 + 12 + 5),
    ];
    for (what, offset) in flips {
        let (sent, received, _) = pair.migrate(&vm, Tamper::Flip(offset));
        let sent = sent.expect_err(what).to_string();
        let received = received.expect_err(what).to_string();
        eprintln!("{what}: target: {received}\n{what}: source: {sent}");
        assert!(!received.is_empty() && !sent.is_empty());
        assert_eq!(
            state(&vm),
            3,
            "{what}: RUNNING again on the source after SEND_CANCEL"
        );
        assert_eq!(guests(&pair.dst), 0, "{what}: nothing left on the target");
    }
    // A flipped bit in the target's PDH key: SEND_START refuses it; nothing to cancel.
    let (sent, received, _) = pair.migrate(&vm, Tamper::FlipBack(12 + 8 + 4 + 30));
    let sent = sent.unwrap_err().to_string();
    assert!(sent.contains("SEND_START"), "{sent}");
    assert!(received.is_err());
    assert_eq!(state(&vm), 3);
    // And the guest still moves, whole.
    let (sent, received, _) = pair.migrate(&vm, Tamper::None);
    sent.unwrap();
    assert_eq!(received.unwrap().guest_read(0, RAM).unwrap(), pattern());
}

#[test]
fn a_bad_packet_is_named_by_the_firmware() {
    let pair = pair();
    let vm = launched(&pair.src, 0);
    let (sent, received, clean) = pair.migrate(&launched(&pair.src, 0), Tamper::None);
    sent.unwrap();
    drop(received.unwrap());
    let pages = records(&clean).into_iter().find(|r| r.0 == 4).unwrap();
    let (sent, received, _) =
        pair.migrate(&vm, Tamper::Flip(pages.1 + 8 + 12 + 256 * 52 + 9 * 4096));
    let received = received.unwrap_err().to_string();
    assert!(
        received.contains("the page at 0x9000") && received.contains("BAD_MEASUREMENT"),
        "{received}"
    );
    let sent = sent.unwrap_err().to_string();
    assert!(
        sent.contains("the target refused") && sent.contains("BAD_MEASUREMENT"),
        "{sent}"
    );
}

#[test]
fn reordered_and_replayed_packets_behave_as_on_real_firmware() {
    let pair = pair();
    // Order does not matter: each packet lands where its record says.
    let vm = launched(&pair.src, 0);
    let (sent, received, _) = pair.migrate(&vm, Tamper::Reorder);
    sent.unwrap();
    assert_eq!(received.unwrap().guest_read(0, RAM).unwrap(), pattern());

    // A replayed run: the firmware takes it again (no replay protection within a session),
    // but END's count shows it, and the move is refused and cancelled.
    let vm = launched(&pair.src, 0);
    let (sent, received, _) = pair.migrate(&vm, Tamper::Replay);
    let received = received.unwrap_err().to_string();
    assert!(
        received.contains("does not add up") && received.contains("768 pages"),
        "{received}"
    );
    assert!(sent.is_err());
    assert_eq!(state(&vm), 3);

    // A host that rewrites the stream, END included, can put one page's packet at another
    // page: every MAC holds, and the firmware accepts it, as real firmware does.
    let (sent, received, _) = pair.migrate(&vm, Tamper::Substitute);
    sent.unwrap();
    let moved = received.unwrap();
    let seen = moved.guest_read(0, RAM).unwrap();
    let half = RAM / 2;
    assert_eq!(seen[..half], pattern()[..half]);
    assert_eq!(
        seen[half..],
        pattern()[..half],
        "the first run's pages, replayed at the second's"
    );
}

#[test]
fn a_cut_connection_leaves_no_guest_behind() {
    let pair = pair();
    let vm = launched(&pair.src, 0);
    for cut in [12 + 100, 12 + 3000, 300_000, 1_200_000] {
        let (sent, received, _) = pair.migrate(&vm, Tamper::Cut(cut));
        let sent = sent.unwrap_err().to_string();
        let received = received.unwrap_err().to_string();
        eprintln!("cut at {cut}: source: {sent}; target: {received}");
        assert_eq!(state(&vm), 3, "RUNNING on the source after SEND_CANCEL");
        assert_eq!(guests(&pair.src), 1);
        assert_eq!(guests(&pair.dst), 0, "no handle or ASID left on the target");
    }
    drop(vm);
    assert_eq!(guests(&pair.src), 0);
}

#[test]
fn a_listener_that_never_answers_times_the_sender_out() {
    let pair = pair();
    let vm = launched(&pair.src, 0);
    let sock = pair.dir.path().join("silent.sock");
    // Never accepted: the kernel completes the connection, nobody speaks.
    let _silent = UnixListener::bind(&sock).unwrap();
    let timeout = Duration::from_secs(1);
    let source = Source {
        platform: &pair.src,
        vm: &vm,
        vcpus: 0,
        secret: None,
    };
    let t = std::time::Instant::now();
    let e = send(
        &mut Log::new(true),
        &source,
        &Addr::Unix(sock.clone()),
        timeout,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no answer from the peer within 1 s"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(e.exit_code(), 5);
    assert_eq!(state(&vm), 3);

    // One that says hello and its certificates, then falls silent while pages are due.
    let sock = pair.dir.path().join("stalls.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (pdh, chain) = pair.dst.pdh_cert_export().unwrap();
    let amd = std::fs::read(pair.dst_dir.join(sevd::paths::CA_FILE)).unwrap();
    let staller = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        stream::write_hello(&mut c).unwrap();
        Record::Platform {
            pdh,
            plat_certs: chain,
            amd_certs: amd,
        }
        .write_to(&mut c)
        .unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    let e = send(&mut Log::new(true), &source, &Addr::Unix(sock), timeout).unwrap_err();
    assert!(e.to_string().contains("within 1 s"), "{e}");
    assert_eq!(state(&vm), 3, "SEND_CANCELed");
    staller.join().unwrap();
}

#[test]
fn a_policy_that_forbids_the_move_fails_at_send_start_and_the_guest_runs_on() {
    let pair = pair();
    let refused = |vm: &Vm, dst: (&Platform, &Path), says: &str| {
        let (sent, received, _) = migrate(pair.dir.path(), (&pair.src, vm), dst, Tamper::None);
        let e = sent.unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(e.exit_code(), 4, "the firmware's refusal");
        let r = received.unwrap_err().to_string();
        assert!(r.contains("the source aborted") && r.contains(says), "{r}");
        assert_eq!(state(vm), 3, "still RUNNING");
    };
    let dst = (&pair.dst, pair.dst_dir.as_path());
    refused(&launched(&pair.src, NOSEND), dst, "POLICY_FAILURE");
    // Each platform owns itself: their OCAs differ.
    refused(&launched(&pair.src, DOMAIN), dst, "POLICY_FAILURE");
    // The same ARK (the shared chip) passes the SEV check.
    let (sent, _, _) = pair.migrate(&launched(&pair.src, SEV), Tamper::None);
    sent.unwrap();
    // Another chip's ARK does not.
    let other = pair.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let foreign = platform(&other, true);
    refused(
        &launched(&pair.src, SEV),
        (&foreign, &other),
        "INVALID_CERTIFICATE",
    );
}
