//! KVM's SEV interface (`include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`) and the
//! three requests of this project's `sev-vm` node, which carry KVM's structs unchanged.
//!
//! These structs have natural alignment with explicit padding fields (not packed).

use crate::bytes::byte_valued;

/// `enum sev_cmd_id`: `kvm_sev_cmd.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum KvmSevCmdId {
    Init = 0,
    EsInit = 1,
    LaunchStart = 2,
    LaunchUpdateData = 3,
    LaunchUpdateVmsa = 4,
    LaunchSecret = 5,
    LaunchMeasure = 6,
    LaunchFinish = 7,
    SendStart = 8,
    SendUpdateData = 9,
    SendUpdateVmsa = 10,
    SendFinish = 11,
    ReceiveStart = 12,
    ReceiveUpdateData = 13,
    ReceiveUpdateVmsa = 14,
    ReceiveFinish = 15,
    GuestStatus = 16,
    DbgDecrypt = 17,
    DbgEncrypt = 18,
    CertExport = 19,
    GetAttestationReport = 20,
    SendCancel = 21,
    Init2 = 22,
    SnpLaunchStart = 100,
    SnpLaunchUpdate = 101,
    SnpLaunchFinish = 102,
}

impl KvmSevCmdId {
    /// The id for a value, `None` for values KVM does not define below `KVM_SEV_NR_MAX`.
    pub fn from_id(id: u32) -> Option<Self> {
        use KvmSevCmdId::*;
        const ALL: [KvmSevCmdId; 23] = [
            Init,
            EsInit,
            LaunchStart,
            LaunchUpdateData,
            LaunchUpdateVmsa,
            LaunchSecret,
            LaunchMeasure,
            LaunchFinish,
            SendStart,
            SendUpdateData,
            SendUpdateVmsa,
            SendFinish,
            ReceiveStart,
            ReceiveUpdateData,
            ReceiveUpdateVmsa,
            ReceiveFinish,
            GuestStatus,
            DbgDecrypt,
            DbgEncrypt,
            CertExport,
            GetAttestationReport,
            SendCancel,
            Init2,
        ];
        match id {
            100 => Some(SnpLaunchStart),
            101 => Some(SnpLaunchUpdate),
            102 => Some(SnpLaunchFinish),
            _ => ALL.get(id as usize).copied(),
        }
    }

    /// Whether the id is one of SNP's (`KVM_SEV_SNP_LAUNCH_START` and above), the only ids an
    /// SNP VM takes.
    pub fn is_snp(self) -> bool {
        self as u32 >= KvmSevCmdId::SnpLaunchStart as u32
    }

    /// KVM's name for the id (`KVM_SEV_LAUNCH_START`).
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 23] = [
            "KVM_SEV_INIT",
            "KVM_SEV_ES_INIT",
            "KVM_SEV_LAUNCH_START",
            "KVM_SEV_LAUNCH_UPDATE_DATA",
            "KVM_SEV_LAUNCH_UPDATE_VMSA",
            "KVM_SEV_LAUNCH_SECRET",
            "KVM_SEV_LAUNCH_MEASURE",
            "KVM_SEV_LAUNCH_FINISH",
            "KVM_SEV_SEND_START",
            "KVM_SEV_SEND_UPDATE_DATA",
            "KVM_SEV_SEND_UPDATE_VMSA",
            "KVM_SEV_SEND_FINISH",
            "KVM_SEV_RECEIVE_START",
            "KVM_SEV_RECEIVE_UPDATE_DATA",
            "KVM_SEV_RECEIVE_UPDATE_VMSA",
            "KVM_SEV_RECEIVE_FINISH",
            "KVM_SEV_GUEST_STATUS",
            "KVM_SEV_DBG_DECRYPT",
            "KVM_SEV_DBG_ENCRYPT",
            "KVM_SEV_CERT_EXPORT",
            "KVM_SEV_GET_ATTESTATION_REPORT",
            "KVM_SEV_SEND_CANCEL",
            "KVM_SEV_INIT2",
        ];
        match self {
            KvmSevCmdId::SnpLaunchStart => "KVM_SEV_SNP_LAUNCH_START",
            KvmSevCmdId::SnpLaunchUpdate => "KVM_SEV_SNP_LAUNCH_UPDATE",
            KvmSevCmdId::SnpLaunchFinish => "KVM_SEV_SNP_LAUNCH_FINISH",
            _ => NAMES[self as usize],
        }
    }
}

/// `KVM_X86_DEFAULT_VM`.
pub const KVM_X86_DEFAULT_VM: u32 = 0;
/// `KVM_X86_SEV_VM`.
pub const KVM_X86_SEV_VM: u32 = 2;
/// `KVM_X86_SEV_ES_VM`.
pub const KVM_X86_SEV_ES_VM: u32 = 3;
/// `KVM_X86_SNP_VM`.
pub const KVM_X86_SNP_VM: u32 = 4;
/// `KVM_SEV_SNP_PAGE_TYPE_*` of `kvm_sev_snp_launch_update.type` are the firmware's page
/// types, [`crate::snp::PageType`], less VMSA.
/// `KVM_SEV_SNP_ID_BLOCK_SIZE`.
pub const KVM_SEV_SNP_ID_BLOCK_SIZE: usize = 96;
/// `KVM_SEV_SNP_ID_AUTH_SIZE`.
pub const KVM_SEV_SNP_ID_AUTH_SIZE: usize = 4096;
/// `KVM_SEV_SNP_FINISH_DATA_SIZE`.
pub const KVM_SEV_SNP_FINISH_DATA_SIZE: usize = 32;
/// `KVM_CAP_VM_TYPES`.
pub const KVM_CAP_VM_TYPES: u32 = 235;

/// `struct kvm_sev_cmd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevCmd {
    /// [`KvmSevCmdId`].
    pub id: u32,
    /// Padding.
    pub pad0: u32,
    /// User address of the sub-command struct.
    pub data: u64,
    /// Firmware status (out).
    pub error: u32,
    /// The caller's fd of the `sev` node.
    pub sev_fd: u32,
}

/// `struct kvm_sev_init` (KVM_SEV_INIT2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevInit {
    /// SEV-ES VMSA features.
    pub vmsa_features: u64,
    /// Must be 0.
    pub flags: u32,
    /// GHCB protocol version.
    pub ghcb_version: u16,
    /// Padding.
    pub pad1: u16,
    /// Padding.
    pub pad2: [u32; 8],
}

/// `struct kvm_sev_snp_launch_start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevSnpLaunchStart {
    /// The guest's SNP policy.
    pub policy: u64,
    /// Guest OS visible workarounds.
    pub gosvw: [u8; 16],
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad0: [u8; 6],
    /// Padding.
    pub pad1: [u64; 4],
}

/// `struct kvm_sev_snp_launch_update`: the remaining range is written back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevSnpLaunchUpdate {
    /// First guest frame.
    pub gfn_start: u64,
    /// Source of the pages (ignored for ZERO).
    pub uaddr: u64,
    /// Bytes, a multiple of 4096.
    pub len: u64,
    /// Page type (`KVM_SEV_SNP_PAGE_TYPE_*`).
    pub type_: u8,
    /// Padding.
    pub pad0: u8,
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: [u64; 4],
}

/// `struct kvm_sev_snp_launch_finish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevSnpLaunchFinish {
    /// The ID block (96 bytes), if `id_block_en`.
    pub id_block_uaddr: u64,
    /// The ID authentication structure (4096 bytes), if `id_block_en`.
    pub id_auth_uaddr: u64,
    /// Whether an ID block is given.
    pub id_block_en: u8,
    /// Whether the ID auth carries an author key.
    pub auth_key_en: u8,
    /// Whether reports may not be signed with the VCEK.
    pub vcek_disabled: u8,
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// Padding.
    pub pad0: [u8; 3],
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad1: [u64; 4],
}

/// `struct kvm_sev_launch_start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevLaunchStart {
    /// In: handle to share keys with (or 0); out: the new handle.
    pub handle: u32,
    /// Guest policy.
    pub policy: u32,
    /// Guest owner's DH certificate.
    pub dh_uaddr: u64,
    /// Its length.
    pub dh_len: u32,
    /// Padding.
    pub pad0: u32,
    /// Session buffer.
    pub session_uaddr: u64,
    /// Its length.
    pub session_len: u32,
    /// Padding.
    pub pad1: u32,
}

/// `struct kvm_sev_launch_update_data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevLaunchUpdateData {
    /// User address of the guest memory to encrypt in place.
    pub uaddr: u64,
    /// Its length.
    pub len: u32,
    /// Padding.
    pub pad0: u32,
}

/// `struct kvm_sev_launch_secret`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevLaunchSecret {
    /// Packet header (52 bytes).
    pub hdr_uaddr: u64,
    /// Its length.
    pub hdr_len: u32,
    /// Padding.
    pub pad0: u32,
    /// Guest memory the secret goes to.
    pub guest_uaddr: u64,
    /// Its length.
    pub guest_len: u32,
    /// Padding.
    pub pad1: u32,
    /// Encrypted payload.
    pub trans_uaddr: u64,
    /// Its length.
    pub trans_len: u32,
    /// Padding.
    pub pad2: u32,
}

/// `struct kvm_sev_launch_measure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevLaunchMeasure {
    /// Buffer for the 48-byte measurement.
    pub uaddr: u64,
    /// Its length (0 = query).
    pub len: u32,
    /// Padding.
    pub pad0: u32,
}

/// `struct kvm_sev_guest_status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevGuestStatus {
    /// Guest handle.
    pub handle: u32,
    /// Guest policy.
    pub policy: u32,
    /// Guest state.
    pub state: u32,
}

/// `struct kvm_sev_dbg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevDbg {
    /// Source.
    pub src_uaddr: u64,
    /// Destination.
    pub dst_uaddr: u64,
    /// Length.
    pub len: u32,
    /// Padding.
    pub pad0: u32,
}

/// `struct kvm_sev_send_start` (migration.md §3.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevSendStart {
    /// The guest's policy (out).
    pub policy: u32,
    /// Padding.
    pub pad0: u32,
    /// The target's PDH certificate.
    pub pdh_cert_uaddr: u64,
    /// Its length.
    pub pdh_cert_len: u32,
    /// Padding.
    pub pad1: u32,
    /// The target's PEK ‖ OCA ‖ CEK.
    pub plat_certs_uaddr: u64,
    /// Their length.
    pub plat_certs_len: u32,
    /// Padding.
    pub pad2: u32,
    /// AMD's ASK ‖ ARK.
    pub amd_certs_uaddr: u64,
    /// Their length.
    pub amd_certs_len: u32,
    /// Padding.
    pub pad3: u32,
    /// Where the session goes.
    pub session_uaddr: u64,
    /// Its length (in/out; 0 = query).
    pub session_len: u32,
    /// Padding.
    pub pad4: u32,
}

/// `struct kvm_sev_send_update_data`; `kvm_sev_receive_update_data` has the same shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevSendUpdateData {
    /// The packet header.
    pub hdr_uaddr: u64,
    /// Its length (in/out; 0 = query).
    pub hdr_len: u32,
    /// Padding.
    pub pad0: u32,
    /// The guest memory, in the VMM's address space.
    pub guest_uaddr: u64,
    /// Its length (at most a page, not crossing one).
    pub guest_len: u32,
    /// Padding.
    pub pad1: u32,
    /// The transport buffer.
    pub trans_uaddr: u64,
    /// Its length (in/out; 0 = query).
    pub trans_len: u32,
    /// Padding.
    pub pad2: u32,
}

/// `struct kvm_sev_receive_update_data`.
pub type KvmSevReceiveUpdateData = KvmSevSendUpdateData;

/// `struct kvm_sev_receive_start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevReceiveStart {
    /// A handle to share the memory key with, 0 for a new one (in); the new handle (out).
    pub handle: u32,
    /// The guest's policy.
    pub policy: u32,
    /// The source's PDH certificate.
    pub pdh_uaddr: u64,
    /// Its length.
    pub pdh_len: u32,
    /// Padding.
    pub pad0: u32,
    /// The session from SEND_START.
    pub session_uaddr: u64,
    /// Its length.
    pub session_len: u32,
    /// Padding.
    pub pad1: u32,
}

/// `struct kvm_sev_attestation_report`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmSevAttestationReport {
    /// Caller's nonce.
    pub mnonce: [u8; 16],
    /// Report buffer.
    pub uaddr: u64,
    /// Its length (0 = query).
    pub len: u32,
    /// Padding.
    pub pad0: u32,
}

/// `struct kvm_userspace_memory_region`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmUserspaceMemoryRegion {
    /// Slot number.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest physical address of the region.
    pub guest_phys_addr: u64,
    /// Size in bytes (0 deletes the slot).
    pub memory_size: u64,
    /// Caller's address of the backing memory.
    pub userspace_addr: u64,
}

/// `struct kvm_enc_region`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KvmEncRegion {
    /// Start.
    pub addr: u64,
    /// Size.
    pub size: u64,
}

/// The argument of `SEVD_VM_SET_VMSA`: a vCPU's initial 4 KiB save area.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SevdVmsa {
    /// vCPU index.
    pub vcpu: u32,
    /// Padding.
    pub pad: u32,
    /// Caller's address of the 4096-byte VMSA.
    pub uaddr: u64,
}

/// The argument of `SEVD_VM_GUEST_ACCESS`: read or write guest memory as the guest does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SevdGuestAccess {
    /// Guest physical address.
    pub gpa: u64,
    /// Caller's buffer.
    pub uaddr: u64,
    /// Length.
    pub len: u32,
    /// Non-zero to write.
    pub write: u32,
}

/// `struct sevd_snp_guest_request` (`SEVD_VM_SNP_GUEST_REQUEST`): the VMM's half of an SNP
/// guest request, what KVM does for the guest's VMGEXIT: the guest's shared request page in,
/// the firmware's response page out, and `exitinfo2` as KVM sets it in the GHCB (low half
/// the firmware status, high half the VMM's error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SevdSnpGuestRequest {
    /// The request page (4096 bytes).
    pub req_uaddr: u64,
    /// The response page (4096 bytes).
    pub resp_uaddr: u64,
    /// Out: the firmware status (low 32 bits) and the VMM error (high 32 bits).
    pub exitinfo2: u64,
}

/// `struct sevd_vmsa_packet`: one vCPU's save area as a migration packet, the argument of
/// `SEVD_VM_SEND_VMSA` and `SEVD_VM_RECEIVE_VMSA` (KVM has no ids for SEV-ES save areas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SevdVmsaPacket {
    /// The vCPU.
    pub vcpu: u32,
    /// Out: the firmware status.
    pub error: u32,
    /// The packet header.
    pub hdr_uaddr: u64,
    /// Its length (send: in/out, 0 = query).
    pub hdr_len: u32,
    /// Padding.
    pub pad0: u32,
    /// The transport buffer.
    pub trans_uaddr: u64,
    /// Its length (send: in/out, 0 = query).
    pub trans_len: u32,
    /// Padding.
    pub pad1: u32,
}

/// `struct sevd_pages`: a run of guest pages as migration packets, one per page, the argument
/// of `SEVD_VM_SEND_PAGES` and `SEVD_VM_RECEIVE_PAGES`. Each page is one SEND_UPDATE_DATA or
/// RECEIVE_UPDATE_DATA of 4096 bytes, as KVM's ids 9 and 13 issue it; the run only spares the
/// VMM one round trip per page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SevdPages {
    /// The first page, in the VMM's address space (page-aligned, one memory slot).
    pub guest_uaddr: u64,
    /// How many pages (1 to `SEVD_PAGES_MAX`).
    pub npages: u32,
    /// Out: the firmware status of the page that failed.
    pub error: u32,
    /// `npages` packet headers of 52 bytes, one after another (send: out, receive: in).
    pub hdr_uaddr: u64,
    /// `npages` transport buffers of 4096 bytes, one after another (send: out, receive: in).
    pub trans_uaddr: u64,
    /// Out: the pages done, in order, before any failure.
    pub done: u32,
    /// Padding.
    pub pad: u32,
}

/// The most pages one `SEVD_VM_SEND_PAGES` or `SEVD_VM_RECEIVE_PAGES` takes (1 MiB): the
/// firmware is held for one run, so a run stays short.
pub const SEVD_PAGES_MAX: u32 = 256;

/// `struct kvm_regs` (x86): a vCPU's general registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct KvmRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// `struct kvm_segment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct KvmSegment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

/// `struct kvm_dtable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

/// `struct kvm_sregs` (x86): segments, control registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct KvmSregs {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

byte_valued! {
    KvmRegs = 144,
    KvmSegment = 24,
    KvmDtable = 16,
    KvmSregs = 312,
    KvmSevCmd = 24,
    KvmSevInit = 48,
    KvmSevSnpLaunchStart = 64,
    KvmSevSnpLaunchUpdate = 64,
    KvmSevSnpLaunchFinish = 88,
    KvmSevLaunchStart = 40,
    KvmSevLaunchUpdateData = 16,
    KvmSevLaunchSecret = 48,
    KvmSevLaunchMeasure = 16,
    KvmSevGuestStatus = 12,
    KvmSevDbg = 24,
    KvmSevAttestationReport = 32,
    KvmSevSendStart = 72,
    KvmSevSendUpdateData = 48,
    KvmSevReceiveStart = 40,
    KvmUserspaceMemoryRegion = 32,
    KvmEncRegion = 16,
    SevdVmsa = 16,
    SevdGuestAccess = 24,
    SevdSnpGuestRequest = 24,
    SevdVmsaPacket = 40,
    SevdPages = 40,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(KvmSevCmd, data) == 8);
    assert!(offset_of!(KvmSevCmd, sev_fd) == 20);
    assert!(offset_of!(KvmSevSnpLaunchStart, flags) == 24);
    assert!(offset_of!(KvmSevSnpLaunchUpdate, type_) == 24);
    assert!(offset_of!(KvmSevSnpLaunchUpdate, flags) == 26);
    assert!(offset_of!(KvmSevSnpLaunchFinish, host_data) == 19);
    assert!(offset_of!(KvmSevSnpLaunchFinish, flags) == 54);
    assert!(offset_of!(KvmSevLaunchStart, session_uaddr) == 24);
    assert!(offset_of!(KvmSevLaunchSecret, trans_len) == 40);
    assert!(offset_of!(KvmSevAttestationReport, uaddr) == 16);
    assert!(offset_of!(KvmSevSendStart, session_len) == 64);
    assert!(offset_of!(KvmSevSendUpdateData, trans_len) == 40);
    assert!(offset_of!(KvmSevReceiveStart, session_uaddr) == 24);
    assert!(offset_of!(KvmUserspaceMemoryRegion, userspace_addr) == 24);
    assert!(offset_of!(SevdPages, done) == 32);
};
