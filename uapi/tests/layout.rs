//! Compares every size, offset and constant of `uapi` with the system's kernel headers,
//! compiled by the C compiler. Items the installed headers do not have yet (SNP structs on
//! older `linux-libc-dev`) are skipped and listed.

use std::collections::BTreeMap;
use std::mem::offset_of;
use std::process::Command;

use uapi::ioctl;
use uapi::kvm::*;
use uapi::psp_sev::*;
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
        layout!("linux/kvm.h", "kvm_sev_cmd", KvmSevCmd { "id" => id, "data" => data, "error" => error, "sev_fd" => sev_fd }),
        layout!("linux/kvm.h", "kvm_sev_init", KvmSevInit {
            "vmsa_features" => vmsa_features, "flags" => flags, "ghcb_version" => ghcb_version }),
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
    .map(|(c, h, s, f)| (c, if h == PSP { PSP } else { KVM }, s, f))
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
    out
}

fn header_text(header: &str) -> String {
    let mut text = String::new();
    for dir in ["/usr/include", "/usr/include/x86_64-linux-gnu"] {
        for h in [header.to_string(), header.replace("linux/", "asm/")] {
            if let Ok(t) = std::fs::read_to_string(format!("{dir}/{h}")) {
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

#[test]
fn rust_types_match_the_system_headers() {
    let headers = header_text("linux/psp-sev.h") + &header_text("linux/kvm.h");
    if headers.is_empty() {
        panic!("linux-libc-dev headers are missing: run scripts/setup.sh");
    }
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/psp-sev.h>\n#include <linux/kvm.h>\nint main(void) {\n",
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
    let cc = Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc");
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
    // The installed headers must at least have the v4.16 ABI and KVM's SEV structs.
    assert!(expected.contains_key("sev_issue_cmd.error"));
    assert!(expected.contains_key("kvm_sev_cmd.sev_fd"));
    assert!(expected.contains_key("SEV_GET_ID2"));
    eprintln!("checked {seen} items; not in the installed headers: {skipped:?}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("uapi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
