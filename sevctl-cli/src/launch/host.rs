//! The host's steps: the VM of the chosen type with its memory and LAUNCH_START, the images
//! loaded and measured in the order the owner measures them, the vCPUs' save areas, and
//! LAUNCH_SECRET and LAUNCH_FINISH.

use sevd::crypto::Digest;
use sevd::platform::layout::ram_slots;
use sevd::platform::{Platform, Vm};
use uapi::kvm::{KVM_X86_DEFAULT_VM, KVM_X86_SEV_ES_VM, KVM_X86_SEV_VM};

use super::owner::SecretPacket;
use super::{progress, Log, PIECE};
use crate::error::{input, Result};
use crate::manifest::{Manifest, Mode};
use crate::owner_cmds::OwnerSession;
use crate::util;
use crate::vmsa::{Init, Vmsa};
use sevd::owner::ovmf::Ovmf;
use sevd::owner::tables;

/// OVMF is mapped to end at 4 GiB, where the reset vector is.
const FOUR_GIB: u64 = 1 << 32;

/// Where OVMF goes: its pages end at 4 GiB.
fn ovmf_gpa(image: &[u8]) -> u64 {
    FOUR_GIB - image.len().div_ceil(4096) as u64 * 4096
}

/// The manifest's OVMF image and its footer table.
pub(super) fn read_ovmf(m: &Manifest) -> Result<Option<(Vec<u8>, Ovmf)>> {
    m.ovmf
        .as_ref()
        .map(|path| {
            let image = util::read("ovmf", path)?;
            let table = Ovmf::parse(&image)?;
            Ok((image, table))
        })
        .transpose()
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
        crate::steps::note(format_args!("{} has no VM types (KVM before Linux 6.10): using the legacy KVM_SEV_INIT, whose SEV-ES save areas carry no FPU state", p.describe()));
    } else if m.kvm {
        crate::steps::note(format_args!(
            "KVM: {}",
            match init {
                Init::Legacy => "the legacy KVM_SEV_INIT on the default VM type (legacyVmType)",
                Init::Init2 => "KVM_SEV_INIT2 on an SEV VM type",
            }
        ));
    }
    init
}

/// The VM of the chosen type with its RAM and OVMF's slot, the init, and LAUNCH_START with
/// the owner's session.
pub(super) fn start(
    log: &mut Log,
    m: &Manifest,
    p: &Platform,
    ovmf: Option<&(Vec<u8>, Ovmf)>,
    session: &OwnerSession,
) -> Result<(Vm, Init)> {
    let es = m.mode == Mode::SevEs;
    let init = choose_init(m, p);
    let vm_type = match init {
        Init::Legacy => KVM_X86_DEFAULT_VM,
        Init::Init2 if es => KVM_X86_SEV_ES_VM,
        Init::Init2 => KVM_X86_SEV_VM,
    };
    let mut vm = p.create_vm_with(vm_type, &ram_slots(m.memory))?;
    if let Some((image, _)) = ovmf {
        vm.map(ovmf_gpa(image), image.len())?;
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
    let handle = vm.launch_start(m.policy, Some((&session.godh, &session.session)))?;
    log.step(
        "host",
        "LAUNCH_START",
        format!(
            "handle {handle}, {} guest, after {init_name}",
            if es { "SEV-ES" } else { "SEV" }
        ),
    );
    Ok((vm, init))
}

/// OVMF, the kernel hashes table and the regions, in the order the owner measures them.
pub(super) fn load_images(
    log: &mut Log,
    m: &Manifest,
    vm: &mut Vm,
    ovmf: Option<&(Vec<u8>, Ovmf)>,
    measured: &mut sevd::crypto::Sha256,
) -> Result<()> {
    if let Some((image, table)) = ovmf {
        let gpa = ovmf_gpa(image);
        load_and_update(vm, "LAUNCH_UPDATE_DATA", gpa, image)?;
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
            load_and_update(vm, "hashes table", area as u64, &hashes)?;
            measured.update(&hashes);
            log.step(
                "host",
                "LAUNCH_UPDATE_DATA",
                format!("kernel hashes table, {} bytes at {area:#x}", hashes.len()),
            );
        }
    }
    for r in &m.regions {
        let size = stream_region(vm, &r.file, r.address, measured)?;
        log.step(
            "host",
            "LAUNCH_UPDATE_DATA",
            format!("{}, {} bytes at {:#x}", r.file.display(), size, r.address),
        );
    }
    Ok(())
}

/// SEV-ES: every vCPU's save area as the VMM and the init make it, then LAUNCH_UPDATE_VMSA.
pub(super) fn load_vmsas(
    log: &mut Log,
    m: &Manifest,
    vm: &Vm,
    init: Init,
    ovmf: Option<&(Vec<u8>, Ovmf)>,
    measured: &mut sevd::crypto::Sha256,
) -> Result<()> {
    if m.mode != Mode::SevEs {
        return Ok(());
    }
    let reset = ovmf.and_then(|(_, t)| t.sev_es_reset_eip());
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
    Ok(())
}

/// LAUNCH_SECRET with the owner's packet, then LAUNCH_FINISH.
pub(super) fn inject(log: &mut Log, vm: &Vm, s: &SecretPacket) -> Result<()> {
    vm.launch_secret(&s.header, s.gpa, &s.payload)?;
    log.step(
        "host",
        "LAUNCH_SECRET",
        format!("into guest memory at {:#x}", s.gpa),
    );
    vm.launch_finish()?;
    log.step("host", "LAUNCH_FINISH", "guest RUNNING".into());
    Ok(())
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
