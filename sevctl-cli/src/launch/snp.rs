//! `sevctl launch` of an SNP guest (`mode: snp`): the owner computes the launch digest from
//! OVMF and its SEV metadata (and signs an ID block over it, if asked); the host starts a
//! KVM_X86_SNP_VM and issues the same page sequence, the save areas and LAUNCH_FINISH; then
//! the guest asks the firmware for an attestation report binding a key of its own, which the
//! owner verifies; SNP has no LAUNCH_SECRET, so the owner's secrets follow, wrapped for that
//! key ([`sevd::owner::release`]).

use serde_json::json;

use sevd::crypto::ecc::EcKeyPair;
use sevd::guest::{GuestChannel, GuestRequestError};
use sevd::owner::id_block::IdBlock;
use sevd::owner::ovmf::{Ovmf, SectionKind};
use sevd::owner::release;
use sevd::owner::snp_measurement::{LaunchStep, OvmfLaunch, StepData};
use sevd::owner::snp_report::{self, Expected};
use sevd::owner::tables;
use sevd::platform::layout::ram_slots;
use sevd::platform::{Platform, SnpFinish, Vm};
use uapi::kvm::KVM_X86_SNP_VM;
use uapi::snp::{report, PageType};

use super::{progress, Log};
use crate::error::{input, CliError, Result};
use crate::manifest::{Manifest, SnpSpec};
use crate::util;

/// The CPUID table the VMM hands the firmware: the one leaf the firmware checks here,
/// 0x8000001F (SME, SEV, SEV-ES and SNP; C-bit 51, one bit of physical address lost).
fn cpuid_page() -> [u8; 4096] {
    let mut page = [0u8; 4096];
    page[0..4].copy_from_slice(&1u32.to_le_bytes());
    let entry = &mut page[0x10..0x10 + 48];
    entry[0..4].copy_from_slice(&0x8000_001fu32.to_le_bytes());
    entry[24..28].copy_from_slice(&0x1bu32.to_le_bytes());
    entry[28..32].copy_from_slice(&(51u32 | 1 << 6).to_le_bytes());
    page
}

fn page_type_name(ty: PageType) -> &'static str {
    match ty {
        PageType::Normal => "NORMAL",
        PageType::Vmsa => "VMSA",
        PageType::Zero => "ZERO",
        PageType::Unmeasured => "UNMEASURED",
        PageType::Secrets => "SECRETS",
        PageType::Cpuid => "CPUID",
    }
}

fn load_key(what: &str, path: &std::path::Path) -> Result<EcKeyPair> {
    let pem = util::read_secret(what, path)?;
    let text = std::str::from_utf8(&pem)
        .map_err(|_| input(format!("{what}: {}: not a PEM file", path.display())))?;
    EcKeyPair::from_pem(text).map_err(|e| input(format!("{what}: {}: {e}", path.display())))
}

/// Runs an SNP launch. Returns the running VM (for `--keep`).
pub fn launch(
    m: &Manifest,
    target: &crate::select::Target,
    p: &Platform,
    json_out: bool,
    show_secrets: bool,
) -> Result<Vm> {
    let spec = m
        .snp
        .as_ref()
        .ok_or_else(|| CliError::Other("not an SNP manifest".into()))?;
    if m.kvm {
        return Err(input(
            "SNP launches through /dev/kvm need guest_memfd and private memory attributes, which sevctl does not drive; launch on sevd (--device or --emulated)",
        ));
    }
    let mut log = Log::new(json_out);
    let snp = p.snp_status()?.filter(|s| s.state == 1).ok_or_else(|| {
        CliError::Other(format!(
            "{} does not offer SEV-SNP (start sevd with --snp)",
            p.describe()
        ))
    })?;
    let tcb = |v: u64| {
        p.tcb(v)
            .map_or_else(|| format!("{v:#x}"), |t| t.to_string())
    };
    log.step(
        "host",
        "platform",
        format!(
            "{} (SNP API {}.{} build {}, TCB {}, reports {})",
            p.describe(),
            snp.api_major,
            snp.api_minor,
            { snp.build_id },
            tcb(snp.current_tcb_version),
            tcb(snp.reported_tcb_version)
        ),
    );

    // The owner's digest, from the same inputs the host loads.
    let path = m
        .ovmf
        .as_ref()
        .ok_or_else(|| input("images.ovmf is needed"))?;
    let image = util::read("ovmf", path)?;
    let ovmf = Ovmf::parse(&image)?;
    let hashes = match &m.kernel {
        Some((kernel, initrd, cmdline)) => Some(tables::kernel_hashes(
            &util::read("kernel", kernel)?,
            &util::read("initrd", initrd)?,
            cmdline,
        )?),
        None => None,
    };
    let plan = OvmfLaunch {
        image: &image,
        ovmf: &ovmf,
        kernel_hashes: hashes.as_deref(),
        vmm: m.vmm,
        vcpus: m.vcpus,
        signature: m.cpu_signature,
        guest_features: spec.guest_features,
    };
    let steps = plan.steps().map_err(|e| input(e.to_string()))?;
    let auto = plan.digest().map_err(|e| input(e.to_string()))?.bytes();
    let expected = spec.expected_digest.unwrap_or(auto);
    log.step(
        "owner",
        "expected digest",
        format!(
            "{} ({})",
            hex::encode(expected),
            if spec.expected_digest.is_some() {
                "given"
            } else {
                "auto, from the images"
            }
        ),
    );
    let id = id_block(&mut log, spec, expected)?;

    let mut vm = start(&mut log, m, p, spec, &plan)?;
    run_steps(&mut log, &mut vm, &image, &steps)?;
    let finish = SnpFinish {
        id_block: id.as_ref().map(|(b, a, _)| (&b[..], &a[..])),
        author_key: id.as_ref().is_some_and(|(_, _, author)| *author),
        host_data: spec.host_data,
    };
    vm.snp_launch_finish(&finish)?;
    log.step(
        "host",
        "SNP_LAUNCH_FINISH",
        format!(
            "{} save areas measured at the VMSA GPA; guest RUNNING{}",
            m.vcpus,
            if id.is_some() {
                ", ID block accepted"
            } else {
                ""
            }
        ),
    );

    // The guest's key, bound to the owner's fresh nonce through REPORT_DATA.
    let nonce: [u8; release::NONCE_LEN] = sevd::crypto::random_bytes()?;
    let guest_key = EcKeyPair::generate()?;
    let report_data = release::binding(&nonce, &guest_key.public()?);
    let report = guest_report(&mut log, &ovmf, &vm, &report_data)?;
    let measured: [u8; 48] = report[report::MEASUREMENT]
        .try_into()
        .map_err(|_| CliError::Other("short report".into()))?;
    if measured != expected {
        return Err(CliError::Attestation(format!(
            "the SNP launch digest {} is not the expected {}{}",
            hex::encode(measured),
            hex::encode(expected),
            if m.secrets.is_empty() {
                ""
            } else {
                "; no secret was released"
            }
        )));
    }
    log.step(
        "owner",
        "verify measurement",
        format!("SNP launch digest {} matches", hex::encode(measured)),
    );
    verify_report(&mut log, m, spec, target, p, &report, report_data)?;
    let secret = if m.secrets.is_empty() {
        serde_json::Value::Null
    } else {
        let (gpa, table) = super::owner::secret_table(m, Some(&ovmf))?;
        let packet = release::wrap(&guest_key.public()?, &report_data, &table)?;
        log.step(
            "owner",
            "release secrets",
            format!(
                "{} entries, {} bytes, wrapped for the key the guest bound in REPORT_DATA ({} byte packet)",
                m.secrets.len(),
                table.len(),
                packet.len()
            ),
        );
        let opened = release::unwrap(&guest_key, &report_data, &packet)
            .map_err(|e| CliError::Other(e.to_string()))?;
        vm.guest_write(gpa, &opened)?;
        log.step(
            "guest",
            "unwrap secrets",
            format!("opened with its own key, written to its private memory at {gpa:#x}"),
        );
        super::report::secret_views(&mut log, &vm, (gpa, &table), &m.secrets, show_secrets)?
    };
    if json_out {
        let out = json!({
            "guest": m.name,
            "platform": p.describe(),
            "mode": "SEV-SNP",
            "policy": format!("{:#x}", spec.policy),
            "state": "RUNNING",
            "launch_digest": hex::encode(expected),
            "measurement": hex::encode(measured),
            "host_data": hex::encode(spec.host_data),
            "nonce": hex::encode(nonce),
            "report_data": hex::encode(report_data),
            "report": hex::encode(&report),
            "secret": secret,
            "steps": log.steps,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| CliError::Other(e.to_string()))?
        );
    } else {
        crate::steps::say(format_args!(
            "guest {:?} launched: SEV-SNP, state RUNNING, launch digest {}, {} ms",
            m.name,
            hex::encode(measured),
            log.start.elapsed().as_millis()
        ));
    }
    Ok(vm)
}

/// An ID block, its ID auth structure, and whether an author key signed the ID key.
type SignedIdBlock = ([u8; 96], Box<[u8; 4096]>, bool);

/// The owner's ID block over the expected digest, when the manifest asks for one.
fn id_block(log: &mut Log, spec: &SnpSpec, ld: [u8; 48]) -> Result<Option<SignedIdBlock>> {
    let Some(b) = &spec.id_block else {
        return Ok(None);
    };
    let id_key = load_key("owner.idBlock.idKey", &b.id_key)?;
    let author = b
        .author_key
        .as_ref()
        .map(|p| load_key("owner.idBlock.authorKey", p))
        .transpose()?;
    let block = IdBlock {
        ld,
        family_id: b.family_id,
        image_id: b.image_id,
        guest_svn: b.guest_svn,
        policy: spec.policy,
    };
    let (bytes, auth) = block
        .sign(&id_key, author.as_ref())
        .map_err(|e| CliError::Other(format!("signing the ID block: {e}")))?;
    log.step(
        "owner",
        "ID block",
        format!(
            "signed with the ID key{}",
            if author.is_some() {
                ", which the author key signed"
            } else {
                ""
            }
        ),
    );
    Ok(Some((bytes, auth, author.is_some())))
}

/// The SNP VM with its RAM and OVMF's slot, INIT2 and SNP_LAUNCH_START.
fn start(
    log: &mut Log,
    m: &Manifest,
    p: &Platform,
    spec: &SnpSpec,
    plan: &OvmfLaunch<'_>,
) -> Result<Vm> {
    let mut vm = p.create_vm_with(KVM_X86_SNP_VM, &ram_slots(m.memory))?;
    let gpa = plan.image_gpa().map_err(|e| input(e.to_string()))?;
    vm.map(gpa, plan.image.len())?;
    // KVM turns SNPActive on by itself; INIT2 asks for the rest.
    vm.sev_init2(spec.guest_features & !1, 0)?;
    vm.snp_launch_start(spec.policy)?;
    log.step(
        "host",
        "SNP_LAUNCH_START",
        format!(
            "policy {:#x}, after KVM_SEV_INIT2 on a KVM_X86_SNP_VM",
            spec.policy
        ),
    );
    Ok(vm)
}

/// Issues the launch's updates and save areas in order.
fn run_steps(log: &mut Log, vm: &mut Vm, image: &[u8], steps: &[LaunchStep]) -> Result<()> {
    let mut vcpus = 0;
    for step in steps {
        match step {
            LaunchStep::Update { ty, gpa, len, data } => {
                let (gpa, len) = (*gpa, *len);
                let mem = vm.memory_mut(gpa, len).ok_or_else(|| {
                    input(format!(
                        "OVMF's metadata puts {len:#x} bytes at {gpa:#x}, outside guest memory: raise guest.memory"
                    ))
                })?;
                match data {
                    StepData::Image => mem.copy_from_slice(image),
                    StepData::Page(page) => mem.copy_from_slice(&page[..]),
                    StepData::Unmeasured if *ty == PageType::Cpuid => {
                        mem.copy_from_slice(&cpuid_page())
                    }
                    StepData::Unmeasured => {}
                }
                vm.snp_launch_update(gpa, len as u64, *ty)?;
                progress("SNP_LAUNCH_UPDATE", len, len);
                let what = match data {
                    StepData::Image => "OVMF".to_string(),
                    StepData::Page(_) => "kernel hashes page".to_string(),
                    StepData::Unmeasured if len == 4096 => "1 page".to_string(),
                    StepData::Unmeasured => format!("{} pages", len / 4096),
                };
                log.step(
                    "host",
                    "SNP_LAUNCH_UPDATE",
                    format!("{what} at {gpa:#x} as {}", page_type_name(*ty)),
                );
            }
            LaunchStep::Vmsa { cpu, page } => {
                vm.set_vmsa(*cpu, page)?;
                vcpus += 1;
            }
        }
    }
    log.step(
        "host",
        "save areas",
        format!("{vcpus} vCPUs' reset state given"),
    );
    Ok(())
}

/// The secrets page's guest address in OVMF's metadata.
fn secrets_gpa(ovmf: &Ovmf) -> Result<u64> {
    ovmf.sev_metadata()
        .iter()
        .find(|s| s.kind == SectionKind::Secrets)
        .map(|s| s.gpa as u64)
        .ok_or_else(|| input("the OVMF metadata has no secrets page"))
}

/// The platform's own ARK, ASK and VCEK as a certificate table (empty, with a note, when
/// it has none to give).
fn platform_cert_table(target: &crate::select::Target, p: &Platform) -> Result<Vec<u8>> {
    use sevd::driver::sev_guest::cert_table;
    use uapi::sev_guest::cert_guid;
    let chain = match p.vcek_chain() {
        Some(c) => c.map_err(CliError::from),
        None => crate::snp::published(target),
    };
    Ok(match chain {
        Ok(c) => {
            let der = |c: &sevd::certs::x509::Certificate| sevd::certs::x509::to_der(c);
            let fail = |e: sevd::certs::x509::X509Error| CliError::Other(e.to_string());
            let (ark, ask, vcek) = (
                der(&c.ark).map_err(fail)?,
                der(&c.ask).map_err(fail)?,
                der(&c.vcek).map_err(fail)?,
            );
            cert_table(&[
                (cert_guid::ARK, &ark),
                (cert_guid::ASK, &ask),
                (cert_guid::VCEK, &vcek),
            ])
        }
        Err(e) => {
            crate::steps::note(format_args!("extended reports carry no certificates: {e}"));
            vec![]
        }
    })
}

/// A certificate table in the kernel's format (what `snphost import` writes), checked as a
/// guest's tools will read it.
pub fn read_cert_table(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use uapi::snp::cert_table::MAX_LEN;
    // A byte past the most a guest takes is enough to refuse a larger file.
    let mut table = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_LEN as u64 + 1).read_to_end(&mut table))
        .map_err(|e| input(format!("certificate table: {}: {e}", path.display())))?;
    uapi::snp::cert_table::entries(&table)
        .map_err(|e| input(format!("{}: not a certificate table: {e}", path.display())))?;
    Ok(table)
}

/// Serves the kept guest's `/dev/sev-guest` at `path`: its VMPCK0 from the secrets page, its
/// requests through the VMM's half on `vm`, and for extended reports `certs` (a checked
/// table), else the platform's ARK, ASK and VCEK. Returns what must live as long as the
/// device is served.
pub fn serve_guest_device(
    m: &Manifest,
    target: &crate::select::Target,
    p: &Platform,
    vm: Vm,
    path: &std::path::Path,
    certs: Option<Vec<u8>>,
) -> Result<(sevd::dropin::DropIn, std::sync::Arc<std::sync::Mutex<Vm>>)> {
    use sevd::driver::sev_guest::{SevGuestDevice, Transport};
    let ovmf_path = m
        .ovmf
        .as_ref()
        .ok_or_else(|| input("images.ovmf is needed"))?;
    let ovmf = Ovmf::parse(&util::read("ovmf", ovmf_path)?)?;
    let secrets = vm.guest_read(secrets_gpa(&ovmf)?, 4096)?;
    let certs = match certs {
        Some(table) => table,
        None => platform_cert_table(target, p)?,
    };
    let vm = std::sync::Arc::new(std::sync::Mutex::new(vm));
    let for_device = vm.clone();
    let transport: Box<Transport> = Box::new(move |req: &[u8]| {
        for_device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snp_guest_request(req)
    });
    let device = SevGuestDevice::new(&secrets, transport, certs)
        .ok_or_else(|| CliError::Other("the guest's secrets page holds no VMPCK0".into()))?;
    let served = sevd::dropin::serve(std::sync::Arc::new(device), path, "sevctl")
        .map_err(|e| CliError::Other(e.to_string()))?;
    crate::steps::note(format_args!(
        "the guest's /dev/sev-guest is served at {}",
        path.display()
    ));
    Ok((served, vm))
}

/// The guest's first act: a report through its VMPCK0, with `report_data` as REPORT_DATA.
fn guest_report(log: &mut Log, ovmf: &Ovmf, vm: &Vm, report_data: &[u8; 64]) -> Result<Vec<u8>> {
    let secrets_gpa = secrets_gpa(ovmf)?;
    let secrets = vm.guest_read(secrets_gpa, 4096)?;
    let mut channel = GuestChannel::from_secrets_page(&secrets, 0)
        .ok_or_else(|| CliError::Other("the secrets page holds no VMPCK0".into()))?;
    let rsp = channel
        .report(report_data, 0, |req| vm.snp_guest_request(req))
        .map_err(|e: GuestRequestError| CliError::Other(format!("attestation report: {e}")))?;
    // As Linux does, the guest keeps the sequence number in its secrets page.
    let (at, seqno) = channel.seqno_field();
    vm.guest_write(secrets_gpa + at, &seqno)?;
    if rsp.status != 0 {
        return Err(CliError::Other(format!(
            "the firmware refused the report: {}",
            uapi::status::describe(rsp.status)
        )));
    }
    let r = &rsp.report;
    log.step(
        "guest",
        "attestation report",
        format!(
            "version {}, VMPL {}, policy {:#x}, reported TCB {}, REPORT_DATA binding its own key to the owner's nonce, from VMPCK0 in the secrets page at {secrets_gpa:#x}",
            report::u32_at(r, report::VERSION_AT),
            report::u32_at(r, report::VMPL_AT),
            report::u64_at(r, report::POLICY_AT),
            sevd::part::Product::report_tcb(r, report::REPORTED_TCB_AT)
                .map_or_else(String::new, |t| t.to_string()),
        ),
    );
    Ok(rsp.report)
}

/// The owner's check of the report: the VCEK chain (to `owner.ark` when given), the
/// signature, the TCB, the policy, HOST_DATA and REPORT_DATA. Without a chain to check (a
/// device that publishes none) only the measurement was checked, and no secret may follow.
fn verify_report(
    log: &mut Log,
    m: &Manifest,
    spec: &SnpSpec,
    target: &crate::select::Target,
    p: &Platform,
    report: &[u8],
    report_data: [u8; 64],
) -> Result<()> {
    let chain = match p.vcek_chain() {
        Some(c) => c.map_err(CliError::from),
        None => crate::snp::published(target),
    };
    let chain = match chain {
        Ok(c) => c,
        Err(e) if m.secrets.is_empty() => {
            log.step(
                "owner",
                "verify report",
                format!("signature not checked: {e}"),
            );
            return Ok(());
        }
        Err(e) => {
            return Err(CliError::Attestation(format!(
                "no VCEK chain to verify the report with, so no secret was released: {e}"
            )))
        }
    };
    let trusted = match &spec.ark {
        Some(path) => {
            let ark = crate::snp::read_cert("owner.ark", path)?;
            if ark != chain.ark {
                return Err(CliError::Attestation(format!(
                    "the platform's ARK is not the owner's ({}){}",
                    path.display(),
                    if m.secrets.is_empty() {
                        ""
                    } else {
                        "; no secret was released"
                    }
                )));
            }
            format!("owner.ark {}", path.display())
        }
        None => "the platform's own ARK, as owner.ark does not pin one".into(),
    };
    let expected = Expected {
        measurement: None,
        policy: Some(spec.policy),
        host_data: Some(spec.host_data),
        report_data: Some(report_data),
    };
    let checks = snp_report::verify(report, &chain, &expected).map_err(|e| {
        CliError::Attestation(format!(
            "the report does not verify: {e}{}",
            if m.secrets.is_empty() {
                ""
            } else {
                "; no secret was released"
            }
        ))
    })?;
    log.step(
        "owner",
        "verify report",
        format!("{}; trusting {trusted}", checks.join(", ")),
    );
    Ok(())
}
