//! Compares every size, offset and constant of `uapi` with the system's kernel headers,
//! compiled by the C compiler. Items the installed headers do not have yet (SNP structs on
//! older `linux-libc-dev`) are skipped and listed.

use std::collections::BTreeMap;
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::process::Command;

use uapi::ioctl;
use uapi::kvm::*;
use uapi::psp_sev::*;
use uapi::sev_guest::*;
use uapi::status::Status;

/// (C struct name, header, Rust size, [(C field, Rust offset)]).
type Layout = (
    &'static str,
    &'static str,
    usize,
    Vec<(&'static str, usize)>,
);

macro_rules! layout {
    ($header:literal, $c:literal, $ty:ty { $($cf:literal => $rf:ident),* $(,)? }) => {
        ($c, $header, size_of::<$ty>(), vec![$(($cf, offset_of!($ty, $rf))),*])
    };
}

fn layouts() -> Vec<Layout> {
    const PSP: &str = "linux/psp-sev.h";
    const KVM: &str = "linux/kvm.h";
    const GUEST: &str = "linux/sev-guest.h";
    vec![
        layout!("linux/psp-sev.h", "sev_issue_cmd", SevIssueCmd { "cmd" => cmd, "data" => data, "error" => error }),
        layout!("linux/psp-sev.h", "sev_user_data_status", SevUserDataStatus {
            "api_major" => api_major, "api_minor" => api_minor, "state" => state,
            "flags" => flags, "build" => build, "guest_count" => guest_count }),
        layout!("linux/psp-sev.h", "sev_user_data_pek_csr", SevUserDataPekCsr { "address" => address, "length" => length }),
        layout!("linux/psp-sev.h", "sev_user_data_pek_cert_import", SevUserDataPekCertImport {
            "pek_cert_address" => pek_cert_address, "pek_cert_len" => pek_cert_len,
            "oca_cert_address" => oca_cert_address, "oca_cert_len" => oca_cert_len }),
        layout!("linux/psp-sev.h", "sev_user_data_pdh_cert_export", SevUserDataPdhCertExport {
            "pdh_cert_address" => pdh_cert_address, "pdh_cert_len" => pdh_cert_len,
            "cert_chain_address" => cert_chain_address, "cert_chain_len" => cert_chain_len }),
        layout!("linux/psp-sev.h", "sev_user_data_get_id", SevUserDataGetId { "socket1" => socket1, "socket2" => socket2 }),
        layout!("linux/psp-sev.h", "sev_user_data_get_id2", SevUserDataGetId2 { "address" => address, "length" => length }),
        layout!("linux/psp-sev.h", "sev_user_data_snp_status", SevUserDataSnpStatus {
            "api_major" => api_major, "build_id" => build_id, "guest_count" => guest_count,
            "current_tcb_version" => current_tcb_version, "reported_tcb_version" => reported_tcb_version }),
        layout!("linux/psp-sev.h", "sev_user_data_snp_config", SevUserDataSnpConfig { "reported_tcb" => reported_tcb, "rsvd1" => rsvd1 }),
        layout!("linux/psp-sev.h", "sev_user_data_snp_vlek_load", SevUserDataSnpVlekLoad {
            "len" => len, "vlek_wrapped_version" => vlek_wrapped_version,
            "vlek_wrapped_address" => vlek_wrapped_address }),
        layout!("linux/sev-guest.h", "snp_guest_request_ioctl", SnpGuestRequestIoctl {
            "msg_version" => msg_version, "req_data" => req_data, "resp_data" => resp_data,
            "exitinfo2" => exitinfo2 }),
        layout!("linux/sev-guest.h", "snp_report_req", SnpReportReq { "user_data" => user_data, "vmpl" => vmpl, "rsvd" => rsvd }),
        layout!("linux/sev-guest.h", "snp_derived_key_req", SnpDerivedKeyReq {
            "root_key_select" => root_key_select, "guest_field_select" => guest_field_select,
            "vmpl" => vmpl, "guest_svn" => guest_svn, "tcb_version" => tcb_version }),
        layout!("linux/sev-guest.h", "snp_ext_report_req", SnpExtReportReq {
            "data" => data, "certs_address" => certs_address, "certs_len" => certs_len }),
        layout!("linux/kvm.h", "kvm_sev_cmd", KvmSevCmd { "id" => id, "data" => data, "error" => error, "sev_fd" => sev_fd }),
        layout!("linux/kvm.h", "kvm_sev_init", KvmSevInit {
            "vmsa_features" => vmsa_features, "flags" => flags, "ghcb_version" => ghcb_version }),
        layout!("linux/kvm.h", "kvm_sev_snp_launch_start", KvmSevSnpLaunchStart {
            "policy" => policy, "gosvw" => gosvw, "flags" => flags, "pad0" => pad0, "pad1" => pad1 }),
        layout!("linux/kvm.h", "kvm_sev_snp_launch_update", KvmSevSnpLaunchUpdate {
            "gfn_start" => gfn_start, "uaddr" => uaddr, "len" => len, "type" => type_,
            "pad0" => pad0, "flags" => flags, "pad1" => pad1, "pad2" => pad2 }),
        layout!("linux/kvm.h", "kvm_sev_snp_launch_finish", KvmSevSnpLaunchFinish {
            "id_block_uaddr" => id_block_uaddr, "id_auth_uaddr" => id_auth_uaddr,
            "id_block_en" => id_block_en, "auth_key_en" => auth_key_en,
            "vcek_disabled" => vcek_disabled, "host_data" => host_data, "pad0" => pad0,
            "flags" => flags, "pad1" => pad1 }),
        layout!("linux/kvm.h", "kvm_sev_launch_start", KvmSevLaunchStart {
            "handle" => handle, "policy" => policy, "dh_uaddr" => dh_uaddr, "dh_len" => dh_len,
            "session_uaddr" => session_uaddr, "session_len" => session_len }),
        layout!("linux/kvm.h", "kvm_sev_launch_update_data", KvmSevLaunchUpdateData { "uaddr" => uaddr, "len" => len }),
        layout!("linux/kvm.h", "kvm_sev_launch_secret", KvmSevLaunchSecret {
            "hdr_uaddr" => hdr_uaddr, "hdr_len" => hdr_len, "guest_uaddr" => guest_uaddr,
            "guest_len" => guest_len, "trans_uaddr" => trans_uaddr, "trans_len" => trans_len }),
        layout!("linux/kvm.h", "kvm_sev_launch_measure", KvmSevLaunchMeasure { "uaddr" => uaddr, "len" => len }),
        layout!("linux/kvm.h", "kvm_sev_guest_status", KvmSevGuestStatus { "handle" => handle, "policy" => policy, "state" => state }),
        layout!("linux/kvm.h", "kvm_sev_dbg", KvmSevDbg { "src_uaddr" => src_uaddr, "dst_uaddr" => dst_uaddr, "len" => len }),
        layout!("linux/kvm.h", "kvm_sev_attestation_report", KvmSevAttestationReport { "mnonce" => mnonce, "uaddr" => uaddr, "len" => len }),
        layout!("linux/kvm.h", "kvm_sev_send_start", KvmSevSendStart {
            "policy" => policy, "pdh_cert_uaddr" => pdh_cert_uaddr, "pdh_cert_len" => pdh_cert_len,
            "plat_certs_uaddr" => plat_certs_uaddr, "plat_certs_len" => plat_certs_len,
            "amd_certs_uaddr" => amd_certs_uaddr, "amd_certs_len" => amd_certs_len,
            "session_uaddr" => session_uaddr, "session_len" => session_len }),
        layout!("linux/kvm.h", "kvm_sev_send_update_data", KvmSevSendUpdateData {
            "hdr_uaddr" => hdr_uaddr, "hdr_len" => hdr_len, "guest_uaddr" => guest_uaddr,
            "guest_len" => guest_len, "trans_uaddr" => trans_uaddr, "trans_len" => trans_len }),
        layout!("linux/kvm.h", "kvm_sev_receive_update_data", KvmSevReceiveUpdateData {
            "hdr_uaddr" => hdr_uaddr, "hdr_len" => hdr_len, "guest_uaddr" => guest_uaddr,
            "guest_len" => guest_len, "trans_uaddr" => trans_uaddr, "trans_len" => trans_len }),
        layout!("linux/kvm.h", "kvm_sev_receive_start", KvmSevReceiveStart {
            "handle" => handle, "policy" => policy, "pdh_uaddr" => pdh_uaddr, "pdh_len" => pdh_len,
            "session_uaddr" => session_uaddr, "session_len" => session_len }),
        layout!("linux/kvm.h", "kvm_userspace_memory_region", KvmUserspaceMemoryRegion {
            "slot" => slot, "flags" => flags, "guest_phys_addr" => guest_phys_addr,
            "memory_size" => memory_size, "userspace_addr" => userspace_addr }),
        layout!("linux/kvm.h", "kvm_enc_region", KvmEncRegion { "addr" => addr, "size" => size }),
        layout!("linux/kvm.h", "kvm_regs", KvmRegs { "rax" => rax, "rdx" => rdx, "rip" => rip, "rflags" => rflags }),
        layout!("linux/kvm.h", "kvm_segment", KvmSegment {
            "base" => base, "limit" => limit, "selector" => selector, "type" => type_, "present" => present,
            "unusable" => unusable, "padding" => padding }),
        layout!("linux/kvm.h", "kvm_dtable", KvmDtable { "base" => base, "limit" => limit, "padding" => padding }),
        layout!("linux/kvm.h", "kvm_sregs", KvmSregs {
            "cs" => cs, "ldt" => ldt, "gdt" => gdt, "idt" => idt, "cr0" => cr0, "efer" => efer,
            "apic_base" => apic_base, "interrupt_bitmap" => interrupt_bitmap }),
    ]
    .into_iter()
    .map(|(c, h, s, f)| {
        let h = match h {
            PSP => PSP,
            GUEST => GUEST,
            _ => KVM,
        };
        (c, h, s, f)
    })
    .collect()
}

/// Constants: (C expression, Rust value).
fn constants() -> Vec<(String, u64)> {
    let mut out = vec![
        ("SEV_ISSUE_CMD".to_string(), ioctl::SEV_ISSUE_CMD as u64),
        (
            "SEV_STATUS_FLAGS_CONFIG_ES".to_string(),
            SEV_STATUS_FLAGS_CONFIG_ES as u64,
        ),
        (
            "KVM_MEMORY_ENCRYPT_OP".to_string(),
            ioctl::KVM_MEMORY_ENCRYPT_OP as u64,
        ),
        (
            "KVM_MEMORY_ENCRYPT_REG_REGION".to_string(),
            ioctl::KVM_MEMORY_ENCRYPT_REG_REGION as u64,
        ),
        (
            "KVM_MEMORY_ENCRYPT_UNREG_REGION".to_string(),
            ioctl::KVM_MEMORY_ENCRYPT_UNREG_REGION as u64,
        ),
        (
            "KVM_SET_USER_MEMORY_REGION".to_string(),
            ioctl::KVM_SET_USER_MEMORY_REGION as u64,
        ),
        ("KVM_CREATE_VM".to_string(), ioctl::KVM_CREATE_VM as u64),
        ("KVM_CREATE_VCPU".to_string(), ioctl::KVM_CREATE_VCPU as u64),
        (
            "KVM_CHECK_EXTENSION".to_string(),
            ioctl::KVM_CHECK_EXTENSION as u64,
        ),
        ("KVM_X86_SEV_VM".to_string(), KVM_X86_SEV_VM as u64),
        ("KVM_X86_SEV_ES_VM".to_string(), KVM_X86_SEV_ES_VM as u64),
        ("KVM_X86_SNP_VM".to_string(), KVM_X86_SNP_VM as u64),
        ("SNP_GET_REPORT".to_string(), SNP_GET_REPORT as u64),
        (
            "SNP_GET_DERIVED_KEY".to_string(),
            SNP_GET_DERIVED_KEY as u64,
        ),
        ("SNP_GET_EXT_REPORT".to_string(), SNP_GET_EXT_REPORT as u64),
        (
            "KVM_SEV_SNP_ID_BLOCK_SIZE".to_string(),
            KVM_SEV_SNP_ID_BLOCK_SIZE as u64,
        ),
        (
            "KVM_SEV_SNP_ID_AUTH_SIZE".to_string(),
            KVM_SEV_SNP_ID_AUTH_SIZE as u64,
        ),
        (
            "KVM_SEV_SNP_PAGE_TYPE_CPUID".to_string(),
            uapi::snp::PageType::Cpuid as u64,
        ),
        (
            "KVM_SEV_SNP_PAGE_TYPE_ZERO".to_string(),
            uapi::snp::PageType::Zero as u64,
        ),
        ("KVM_CAP_VM_TYPES".to_string(), KVM_CAP_VM_TYPES as u64),
    ];
    for cmd in SevCmd::ALL {
        out.push((cmd.name().to_string(), cmd as u64));
    }
    // The header spells 0x03 INAVLID_CONFIG and 0x04 INVALID_LEN; the rest match the spec.
    for &status in Status::ALL {
        let name = match status {
            Status::InvalidConfig => "INAVLID_CONFIG".to_string(),
            Status::InvalidLength => "INVALID_LEN".to_string(),
            Status::DfFlushRequired => "DFFLUSH_REQUIRED".to_string(),
            Status::HwerrorPlatform => "HWSEV_RET_PLATFORM".to_string(),
            Status::HwerrorUnsafe => "HWSEV_RET_UNSAFE".to_string(),
            other => other.name().to_string(),
        };
        out.push((format!("SEV_RET_{name}"), status as u64));
    }
    let kvm_ids = [
        "INIT",
        "ES_INIT",
        "LAUNCH_START",
        "LAUNCH_UPDATE_DATA",
        "LAUNCH_UPDATE_VMSA",
        "LAUNCH_SECRET",
        "LAUNCH_MEASURE",
        "LAUNCH_FINISH",
        "SEND_START",
        "SEND_UPDATE_DATA",
        "SEND_UPDATE_VMSA",
        "SEND_FINISH",
        "RECEIVE_START",
        "RECEIVE_UPDATE_DATA",
        "RECEIVE_UPDATE_VMSA",
        "RECEIVE_FINISH",
        "GUEST_STATUS",
        "DBG_DECRYPT",
        "DBG_ENCRYPT",
        "CERT_EXPORT",
        "GET_ATTESTATION_REPORT",
        "SEND_CANCEL",
        "INIT2",
    ];
    for (i, name) in kvm_ids.iter().enumerate() {
        let id = KvmSevCmdId::from_id(i as u32).expect("id in range");
        out.push((format!("KVM_SEV_{name}"), id as u64));
    }
    for id in 100..=102 {
        let id = KvmSevCmdId::from_id(id).expect("SNP id");
        out.push((id.name().to_string(), id as u64));
    }
    out
}

/// The include directories of a header tree: the generic one and Debian's multiarch one.
fn include_dirs(root: &Path) -> [PathBuf; 2] {
    [root.to_path_buf(), root.join("x86_64-linux-gnu")]
}

fn header_text(dirs: &[PathBuf], header: &str) -> String {
    let mut text = String::new();
    for dir in dirs {
        for h in [header.to_string(), header.replace("linux/", "asm/")] {
            if let Ok(t) = std::fs::read_to_string(dir.join(&h)) {
                text.push_str(&t);
            }
        }
    }
    text
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().last();
        let after = text[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// Compiles every size, offset and constant the headers in `dirs` have, runs it, and
/// compares; returns what was checked and what the headers lack.
fn check_against(dirs: &[PathBuf]) -> (BTreeMap<String, u64>, Vec<String>) {
    let headers = header_text(dirs, "linux/psp-sev.h")
        + &header_text(dirs, "linux/kvm.h")
        + &header_text(dirs, "linux/sev-guest.h");
    if headers.is_empty() {
        panic!("no kernel headers in {dirs:?}: run scripts/setup.sh");
    }
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/psp-sev.h>\n#include <linux/kvm.h>\n#include <linux/sev-guest.h>\nint main(void) {\n",
    );
    let mut expected = BTreeMap::new();
    let mut skipped = vec![];
    for (name, _header, size, fields) in layouts() {
        if !headers.contains(&format!("struct {name} {{")) {
            skipped.push(name.to_string());
            continue;
        }
        c += &format!("printf(\"{name} %zu\\n\", sizeof(struct {name}));\n");
        expected.insert(name.to_string(), size as u64);
        for (field, off) in fields {
            let key = format!("{name}.{field}");
            c += &format!("printf(\"{key} %zu\\n\", offsetof(struct {name}, {field}));\n");
            expected.insert(key, off as u64);
        }
    }
    for (name, value) in constants() {
        if !has_word(&headers, &name) {
            skipped.push(name);
            continue;
        }
        c += &format!("printf(\"{name} %llu\\n\", (unsigned long long)({name}));\n");
        expected.insert(name, value);
    }
    c += "return 0; }\n";

    let dir = tempfile_dir();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let mut cc = Command::new("cc");
    for d in dirs {
        cc.arg("-I").arg(d);
    }
    let cc = cc.arg("-o").arg(&bin).arg(&src).output().expect("run cc");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&bin).output().expect("run layout program");
    let mut seen = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (key, value) = line.split_once(' ').unwrap();
        let value: u64 = value.parse().unwrap();
        assert_eq!(
            expected[key], value,
            "{key}: Rust says {}, C says {value}",
            expected[key]
        );
        seen += 1;
    }
    assert_eq!(seen, expected.len());
    let _ = std::fs::remove_dir_all(dir);
    (expected, skipped)
}

#[test]
fn rust_types_match_the_system_headers() {
    let (checked, skipped) = check_against(&include_dirs(Path::new("/usr/include")));
    // The installed headers must at least have the v4.16 ABI and KVM's SEV structs.
    assert!(checked.contains_key("sev_issue_cmd.error"));
    assert!(checked.contains_key("kvm_sev_cmd.sev_fd"));
    assert!(checked.contains_key("SEV_GET_ID2"));
    eprintln!(
        "checked {} items; not in the installed headers: {skipped:?}",
        checked.len()
    );
}

/// The structs and numbers of current kernels (KVM_SEV_INIT2, VM types, SNP), against a
/// newer header tree than the system's: Linux 6.12's, which scripts/test.sh unpacks
/// (scripts/fetch-headers.sh) and names in `UAPI_NEW_HEADERS`.
#[test]
fn rust_types_match_current_kernel_headers() {
    let Some(root) = std::env::var_os("UAPI_NEW_HEADERS") else {
        // Under CI, or as root (where scripts/test.sh sets it up), a missing tree fails.
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        let must = std::env::var("CI").is_ok_and(|v| v == "true") || root;
        assert!(
            !must,
            "UAPI_NEW_HEADERS is not set (scripts/test.sh fetches Linux 6.12's headers)"
        );
        eprintln!("skipped: UAPI_NEW_HEADERS is not set");
        return;
    };
    let (checked, skipped) = check_against(&include_dirs(&Path::new(&root).join("usr/include")));
    for item in [
        "kvm_sev_init.vmsa_features",
        "kvm_sev_init.ghcb_version",
        "KVM_SEV_INIT2",
        "KVM_X86_SEV_VM",
        "KVM_X86_SEV_ES_VM",
        "KVM_CAP_VM_TYPES",
        "sev_user_data_snp_status.current_tcb_version",
        "SNP_PLATFORM_STATUS",
        "kvm_sev_snp_launch_start.gosvw",
        "kvm_sev_snp_launch_update.type",
        "kvm_sev_snp_launch_finish.vcek_disabled",
        "kvm_sev_snp_launch_finish.host_data",
        "KVM_X86_SNP_VM",
        "KVM_SEV_SNP_LAUNCH_FINISH",
    ] {
        assert!(
            checked.contains_key(item),
            "{item} not checked; missing: {skipped:?}"
        );
    }
    eprintln!(
        "checked {} items against {}; not in those headers: {skipped:?}",
        checked.len(),
        Path::new(&root).display()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    // One per call: the tests run side by side in one process.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("uapi-layout-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
