//! `sevctl launch MANIFEST`: both roles of a launch, in order, saying what each step does.
//! The owner verifies the platform and makes the session; the host starts the guest and
//! loads and measures it; the owner checks the measurement and only then releases the
//! secrets; the host injects them and finishes; the guest's and the hypervisor's views of
//! the secret are shown side by side.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use serde_json::json;
use uapi::cert::{decode_chain, Certificate};

use sevd::certs::{CaChain, FullChain, PlatformChain};
use sevd::crypto::Digest;
use sevd::owner::measurement::{measure, MeasuredPlatform};
use sevd::platform::{Platform, Vm};
use uapi::kvm::{KVM_X86_SEV_ES_VM, KVM_X86_SEV_VM};

use crate::error::{input, CliError, Result};
use crate::manifest::{Manifest, Mode, Placement};
use crate::ovmf::Ovmf;
use crate::owner_cmds::{new_session, secret_packet, OwnerSession};
use crate::select::Target;
use crate::tables;
use crate::util;
use crate::vmsa::{Init, Vmsa};

const FOUR_GIB: u64 = 1 << 32;
/// LAUNCH_UPDATE_DATA is issued in pieces of this size, so progress can be shown.
const PIECE: usize = 8 << 20;

/// Prints steps; silent with `--json`, which prints one report at the end.
struct Log {
    json: bool,
    steps: Vec<serde_json::Value>,
    start: Instant,
}

impl Log {
    fn step(&mut self, role: &str, what: &str, detail: String) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        if !self.json {
            println!("[{role:>5}] {what:<20} {detail}");
        }
        self.steps
            .push(json!({ "role": role, "step": what, "detail": detail, "ms": ms }));
    }
}

/// A progress bar on a terminal, nothing when stderr is piped.
fn progress(label: &str, done: usize, total: usize) {
    let mut err = std::io::stderr();
    if !err.is_terminal() || total < 2 * PIECE {
        return;
    }
    let width = 30;
    let filled = width * done / total.max(1);
    let _ = write!(
        err,
        "\r        {label:<20} [{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        100 * done / total.max(1)
    );
    if done == total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// Copies `data` to guest address `gpa` and measures and encrypts it.
fn load_and_update(vm: &mut Vm, label: &str, gpa: u64, data: &[u8]) -> Result<()> {
    let len = data.len().div_ceil(16) * 16;
    let mem = vm.memory_mut(gpa, len).ok_or_else(|| {
        input(format!(
            "{label}: {len:#x} bytes at {gpa:#x} are outside guest memory"
        ))
    })?;
    mem[..data.len()].copy_from_slice(data);
    mem[data.len()..].fill(0);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(PIECE);
        vm.launch_update_data(gpa + done as u64, n as u32)?;
        done += n;
        progress(label, done, len);
    }
    Ok(())
}

/// Reads a region file straight into guest memory (no copy of it is held), measuring and
/// encrypting it as it goes. The owner hashes each piece as it is read, on the loading
/// thread, while the firmware measures and encrypts the pieces before it. Returns its size.
fn stream_region(
    vm: &mut Vm,
    file: &std::path::Path,
    gpa: u64,
    measured: &mut sevd::crypto::Sha256,
) -> Result<usize> {
    use std::io::Read;
    let what = |e: std::io::Error| input(format!("{}: {e}", file.display()));
    let mut f = std::fs::File::open(file).map_err(what)?;
    let size = f.metadata().map_err(what)?.len() as usize;
    let len = size.div_ceil(16) * 16;
    if vm.memory(gpa, len).is_none() {
        return Err(input(format!(
            "{}: {len:#x} bytes at {gpa:#x} are outside guest memory",
            file.display()
        )));
    }
    let mut loaded = 0;
    vm.load_and_update(
        gpa,
        len,
        |piece: &mut [u8]| -> Result<()> {
            let from_file = piece.len().min(size - loaded);
            f.read_exact(&mut piece[..from_file]).map_err(what)?;
            piece[from_file..].fill(0);
            loaded += from_file;
            measured.update(&*piece);
            Ok(())
        },
        |done| progress("LAUNCH_UPDATE_DATA", done, len),
    )?;
    Ok(size)
}

/// What the secrets look like to the guest and to the hypervisor. Each entry's GUID, length
/// and whether the guest reads what was sent are shown; its plaintext only with
/// `show_secrets` (`--show-secrets`), so a launch log never holds a secret by default.
fn show_secret_views(
    log: &mut Log,
    vm: &Vm,
    gpa: u64,
    table: &[u8],
    secrets: &[crate::manifest::Secret],
    show_secrets: bool,
) -> Result<serde_json::Value> {
    let guest = match vm.guest_read(gpa, table.len()) {
        Ok(g) => g,
        Err(sevd::platform::PlatformError::Kvm { why, .. }) => {
            log.step("guest", "reads secret", format!("not shown: {why}"));
            return Ok(json!({ "gpa": gpa, "guest_view": null }));
        }
        Err(e) => return Err(e.into()),
    };
    let host = vm
        .memory(gpa, table.len())
        .map(|m| m.to_vec())
        .unwrap_or_default();
    let mut entries = vec![];
    let mut at = 20usize;
    for s in secrets {
        let len = u32::from_le_bytes(
            guest
                .get(at + 16..at + 20)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        ) as usize;
        let data = guest.get(at + 20..at + len.max(20)).unwrap_or_default();
        let matches = data == s.data.as_slice();
        let mut entry = json!({ "guid": s.guid, "length": data.len(), "matches": matches });
        let said = if show_secrets {
            let shown = match std::str::from_utf8(data) {
                Ok(t) if t.chars().all(|c| !c.is_control()) => format!("{t:?}"),
                _ => hex::encode(data),
            };
            entry["data"] = json!(hex::encode(data));
            format!("{} = {shown}", s.guid)
        } else {
            format!(
                "{}: {} bytes, {}",
                s.guid,
                data.len(),
                if matches { "as sent" } else { "NOT as sent" }
            )
        };
        entries.push(entry);
        log.step("guest", "secret entry", said);
        at += len.max(20);
    }
    let show = |b: &[u8]| hex::encode(&b[..b.len().min(32)]);
    let what = if guest == table {
        "plaintext table"
    } else {
        "unexpected bytes"
    };
    let detail = if show_secrets {
        format!(", first 32 bytes {}", show(&guest))
    } else {
        String::new()
    };
    log.step(
        "guest",
        "reads secret",
        format!("{what} ({} entries{detail})", secrets.len()),
    );
    log.step("host", "sees", format!("ciphertext {}", show(&host)));
    if guest != table {
        return Err(CliError::Other(
            "the guest does not read the secret table that was sent".into(),
        ));
    }
    let guest_view = show_secrets.then(|| hex::encode(&guest));
    Ok(
        json!({ "gpa": gpa, "guest_view": guest_view, "hypervisor_view": hex::encode(&host), "entries": entries }),
    )
}

/// A session made beforehand by `sevctl session` (ours or virtee's).
fn session_from_files(f: &crate::manifest::SessionFiles) -> Result<OwnerSession> {
    let text = |p: &std::path::Path| -> Result<Vec<u8>> {
        let t = std::fs::read_to_string(p).map_err(|e| input(format!("{}: {e}", p.display())))?;
        util::unb64(&p.display().to_string(), &t)
    };
    let key = |p: &std::path::Path| -> Result<zeroize::Zeroizing<[u8; 16]>> {
        let b = util::read_secret("session key", p)?;
        let k: [u8; 16] = b
            .as_slice()
            .try_into()
            .map_err(|_| input(format!("{}: not 16 bytes", p.display())))?;
        Ok(zeroize::Zeroizing::new(k))
    };
    Ok(OwnerSession {
        godh: text(&f.godh)?,
        session: text(&f.session)?,
        keys: sevd::owner::session::TransportKeys {
            tek: key(&f.tek)?,
            tik: key(&f.tik)?,
        },
    })
}

/// INIT2 on an SEV VM type, as QEMU 9.1+ on Linux 6.10+, unless the manifest asks for the
/// legacy init or the platform has no VM types (KVM before 6.10), which is said on stderr.
/// On KVM the choice is always said.
fn choose_init(m: &Manifest, p: &Platform) -> Init {
    let offered = p.offers_vm_types();
    let init = if m.legacy_vm_type || !offered {
        Init::Legacy
    } else {
        Init::Init2
    };
    if !offered && !m.legacy_vm_type {
        eprintln!("sevctl: {} has no VM types (KVM before Linux 6.10): using the legacy KVM_SEV_INIT, whose SEV-ES save areas carry no FPU state", p.describe());
    } else if m.kvm {
        eprintln!(
            "sevctl: KVM: {}",
            match init {
                Init::Legacy => "the legacy KVM_SEV_INIT on the default VM type (legacyVmType)",
                Init::Init2 => "KVM_SEV_INIT2 on an SEV VM type",
            }
        );
    }
    init
}

/// Runs the launch described by `m` on `p`. Returns the running VM (for `--keep`).
pub fn launch(
    m: &Manifest,
    target: &Target,
    p: &Platform,
    ca: Option<&std::path::Path>,
    json_out: bool,
    show_secrets: bool,
) -> Result<Vm> {
    let mut log = Log {
        json: json_out,
        steps: vec![],
        start: Instant::now(),
    };
    let status = p.status()?;
    log.step(
        "host",
        "platform",
        format!(
            "{} (API {}.{} build {})",
            p.describe(),
            status.api_major,
            status.api_minor,
            status.build
        ),
    );

    // Owner: the platform's chain, up to AMD's part, must verify.
    let (pdh_bytes, chain) = p.pdh_cert_export()?;
    let certs = decode_chain(&chain, 3).map_err(|e| CliError::Attestation(e.to_string()))?;
    let pdh = Certificate::decode(&pdh_bytes).map_err(|e| CliError::Attestation(e.to_string()))?;
    let ca_file = target.ca_file(ca.or(m.ca.as_deref())).ok_or_else(|| {
        CliError::Attestation(
            "no ASK ‖ ARK to verify the platform with (sevd publishes <state-dir>/ask_ark.cert)"
                .into(),
        )
    })?;
    let (ask, ark) = crate::platform_cmds::read_ca(&ca_file)?;
    let full = FullChain {
        ca: CaChain { ask, ark },
        platform: PlatformChain {
            pdh: pdh.clone(),
            pek: certs[0].clone(),
            oca: certs[1].clone(),
            cek: certs[2].clone(),
        },
    };
    full.verify().map_err(|e| {
        CliError::Attestation(format!(
            "the platform's certificate chain does not verify: {e}"
        ))
    })?;
    log.step(
        "owner",
        "verify chain",
        format!(
            "ARK → ASK → CEK → PEK ← OCA, PEK → PDH: valid ({})",
            ca_file.display()
        ),
    );

    let owner = match &m.session {
        Some(files) => {
            let s = session_from_files(files)?;
            let from = files.session.display().to_string();
            log.step(
                "owner",
                "session",
                format!("policy {:#x}, from {from}", m.policy),
            );
            s
        }
        None => {
            let s = new_session(&pdh, m.policy)?;
            let what = format!("policy {:#x}, fresh TEK/TIK wrapped for the PDH", m.policy);
            log.step("owner", "session", what);
            s
        }
    };

    // Host: the VM, its memory, LAUNCH_START.
    let es = m.mode == Mode::SevEs;
    let init = choose_init(m, p);
    let mut vm = match init {
        Init::Legacy => p.create_vm(m.memory as usize)?,
        Init::Init2 if es => p.create_vm_of(KVM_X86_SEV_ES_VM, m.memory as usize)?,
        Init::Init2 => p.create_vm_of(KVM_X86_SEV_VM, m.memory as usize)?,
    };
    let ovmf = match &m.ovmf {
        Some(path) => {
            let image = util::read("ovmf", path)?;
            let table = Ovmf::parse(&image)?;
            Some((image, table))
        }
        None => None,
    };
    if let Some((image, _)) = &ovmf {
        vm.map(
            FOUR_GIB - image.len().div_ceil(4096) as u64 * 4096,
            image.len(),
        )?;
    }
    let init_name = match init {
        Init::Legacy if es => "KVM_SEV_ES_INIT",
        Init::Legacy => "KVM_SEV_INIT",
        Init::Init2 => "KVM_SEV_INIT2",
    };
    match init {
        Init::Legacy => vm.sev_init(es)?,
        Init::Init2 => vm.sev_init2(0, 0)?,
    }
    let handle = vm.launch_start(m.policy, Some((&owner.godh, &owner.session)))?;
    log.step(
        "host",
        "LAUNCH_START",
        format!(
            "handle {handle}, {} guest, after {init_name}",
            if es { "SEV-ES" } else { "SEV" }
        ),
    );

    // Host: images, in the order the owner measures them.
    let mut measured = sevd::crypto::Sha256::new();
    if let Some((image, table)) = &ovmf {
        let gpa = FOUR_GIB - image.len().div_ceil(4096) as u64 * 4096;
        load_and_update(&mut vm, "LAUNCH_UPDATE_DATA", gpa, image)?;
        measured.update(image);
        log.step(
            "host",
            "LAUNCH_UPDATE_DATA",
            format!("OVMF, {} KiB at {gpa:#x}", image.len() / 1024),
        );
        if let Some((kernel, initrd, cmdline)) = &m.kernel {
            let hashes = tables::kernel_hashes(
                &util::read("kernel", kernel)?,
                &util::read("initrd", initrd)?,
                cmdline,
            )?;
            let (area, size) = table.hashes_table_area().ok_or_else(|| {
                input("the OVMF image has no hashes table area; it cannot measure a kernel")
            })?;
            if hashes.len() > size as usize {
                return Err(input("the kernel hashes table does not fit OVMF's area"));
            }
            load_and_update(&mut vm, "hashes table", area as u64, &hashes)?;
            measured.update(&hashes);
            log.step(
                "host",
                "LAUNCH_UPDATE_DATA",
                format!("kernel hashes table, {} bytes at {area:#x}", hashes.len()),
            );
        }
    }
    for r in &m.regions {
        let size = stream_region(&mut vm, &r.file, r.address, &mut measured)?;
        log.step(
            "host",
            "LAUNCH_UPDATE_DATA",
            format!("{}, {} bytes at {:#x}", r.file.display(), size, r.address),
        );
    }
    if es {
        let reset = ovmf.as_ref().and_then(|(_, t)| t.sev_es_reset_eip());
        if m.vcpus > 1 && reset.is_none() {
            return Err(input(
                "the OVMF image has no SEV-ES reset block for the APs",
            ));
        }
        for cpu in 0..m.vcpus {
            let page = Vmsa::reset(m.vmm, init, cpu as u64, reset, m.cpu_signature).encode();
            vm.set_vmsa(cpu, &page)?;
            measured.update(page);
        }
        vm.launch_update_vmsa()?;
        log.step(
            "host",
            "LAUNCH_UPDATE_VMSA",
            format!("{} vCPU save areas", m.vcpus),
        );
    }
    let blob = vm.launch_measure()?;
    log.step(
        "host",
        "LAUNCH_MEASURE",
        format!(
            "measure {}, mnonce {}",
            hex::encode(&blob[..32]),
            hex::encode(&blob[32..])
        ),
    );

    // Owner: the measurement must be the expected one before any secret leaves.
    let auto: [u8; 32] = measured.finalize().into();
    let digest = m.expected_digest.unwrap_or(auto);
    let platform = MeasuredPlatform {
        api_major: status.api_major,
        api_minor: status.api_minor,
        build: status.build,
    };
    let mnonce: [u8; 16] = blob[32..]
        .try_into()
        .map_err(|_| CliError::Other("short measurement".into()))?;
    let expected = measure(&owner.keys.tik, platform, m.policy, &digest, &mnonce)?;
    if !sevd::crypto::mac_eq(&expected, &blob[..32]) {
        return Err(CliError::Attestation(format!(
            "the launch measurement does not match: expected launch digest {} gives measure {}, the platform reported {}; no secret was released",
            hex::encode(digest),
            hex::encode(expected),
            hex::encode(&blob[..32])
        )));
    }
    log.step(
        "owner",
        "verify measurement",
        format!(
            "launch digest {} ({}) matches",
            hex::encode(digest),
            if m.expected_digest.is_some() {
                "given"
            } else {
                "auto"
            }
        ),
    );

    let mut secret_report = serde_json::Value::Null;
    if !m.secrets.is_empty() {
        let entries: Vec<(String, &[u8])> = m
            .secrets
            .iter()
            .map(|s| (s.guid.clone(), s.data.as_slice()))
            .collect();
        let table = tables::secret_table(&entries)?;
        let gpa = match m.placement {
            Placement::Address(a) => a,
            Placement::Ovmf => {
                let (base, size) = ovmf
                    .as_ref()
                    .and_then(|(_, t)| t.secret_area())
                    .ok_or_else(|| {
                        input("the OVMF image has no secret area; set secrets.placement")
                    })?;
                if table.len() > size as usize {
                    return Err(input(format!("the secret table ({} bytes) does not fit OVMF's secret area ({size} bytes)", table.len())));
                }
                base as u64
            }
        };
        let measure_out: [u8; 32] = blob[..32]
            .try_into()
            .map_err(|_| CliError::Other("short measurement".into()))?;
        let (header, payload) = secret_packet(
            &owner.keys.tek,
            &owner.keys.tik,
            &measure_out,
            sevd::crypto::random_bytes()?,
            &table,
        )?;
        log.step(
            "owner",
            "secret",
            format!(
                "{} entries, {} bytes, packet MAC bound to the measurement",
                m.secrets.len(),
                table.len()
            ),
        );
        vm.launch_secret(&header, gpa, &payload)?;
        log.step(
            "host",
            "LAUNCH_SECRET",
            format!("into guest memory at {gpa:#x}"),
        );
        vm.launch_finish()?;
        log.step("host", "LAUNCH_FINISH", "guest RUNNING".into());
        secret_report = show_secret_views(&mut log, &vm, gpa, &table, &m.secrets, show_secrets)?;
    } else {
        vm.launch_finish()?;
        log.step("host", "LAUNCH_FINISH", "guest RUNNING (no secrets)".into());
    }
    let st = vm.guest_status()?;
    if json_out {
        let report = json!({
            "guest": m.name,
            "platform": p.describe(),
            "handle": st.handle,
            "policy": st.policy,
            "state": st.state,
            "launch_digest": hex::encode(digest),
            "measurement": hex::encode(blob),
            "secret": secret_report,
            "steps": log.steps,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Other(e.to_string()))?
        );
    } else {
        println!(
            "guest {:?} launched: handle {}, state RUNNING, {} ms",
            m.name,
            st.handle,
            log.start.elapsed().as_millis()
        );
    }
    Ok(vm)
}
