//! How a VM becomes an SEV guest, as KVM has it since Linux 6.10: the VM's type
//! (`SEVD_VM_SET_TYPE`, standing in for `KVM_CREATE_VM`'s argument), the legacy
//! `KVM_SEV_INIT`/`KVM_SEV_ES_INIT` on the default type, `KVM_SEV_INIT2` on the SEV types
//! (`__sev_guest_init` in arch/x86/kvm/svm/sev.c), and the save area that `sev_es_sync_vmsa`
//! hands LAUNCH_UPDATE_VMSA.

use uapi::kvm::{
    KvmSevInit, KVM_X86_DEFAULT_VM, KVM_X86_SEV_ES_VM, KVM_X86_SEV_VM, KVM_X86_SNP_VM,
};
use vfs::Errno;

use super::{Ctx, KvmSev, SevVm, Vm, PAGE};
use crate::driver::kvm_asids::AsidError;
use crate::driver::read_obj;
use crate::memctl::VecGuestMemory;

/// The SEV-ES features `vmsa_features` may ask for (`sev_supported_vmsa_features`):
/// DebugSwap (bit 5), as a host whose `kvm_amd.debug_swap` is on, the default since 6.6.
pub const SUPPORTED_VMSA_FEATURES: u64 = 1 << 5;
/// `GHCB_VERSION_MAX` and `GHCB_VERSION_DEFAULT`.
const GHCB_VERSION_MAX: u16 = 2;
/// `GHCB_VERSION_MIN`, what the legacy ES_INIT keeps to.
const GHCB_VERSION_MIN: u16 = 1;

/// Offsets in the SEV-ES save area (APM vol. 2 table B-4; `struct sev_es_save_area`).
mod vmsa {
    pub const DR7: usize = 0x160;
    pub const SEV_FEATURES: usize = 0x3b0;
    /// `x87_dp` .. the end of `fpreg_ymm`: the FPU state KVM syncs under INIT2.
    pub const FPU: std::ops::Range<usize> = 0x400..0x670;
}
/// `DR7_FIXED_1`: the only DR7 bit KVM lets through to a save area it encrypts.
const DR7_FIXED_1: u64 = 0x400;

impl KvmSev {
    /// `SEVD_VM_SET_TYPE`: `KVM_CREATE_VM`'s type, before any other ioctl on the VM. Types
    /// this platform does not offer are refused as `kvm_arch_init_vm` refuses them.
    pub(super) fn set_type(&self, vm: &mut Vm, ty: u64, first: bool) -> Result<(), Errno> {
        if !first {
            return Err(Errno::EINVAL);
        }
        let snp = self.snp_offered();
        let asids = self.asids.lock().unwrap_or_else(|e| e.into_inner());
        let offered = match u32::try_from(ty) {
            Ok(KVM_X86_DEFAULT_VM) => true,
            Ok(KVM_X86_SEV_VM) => !asids.range(false).is_empty(),
            Ok(KVM_X86_SEV_ES_VM) => !asids.range(true).is_empty(),
            Ok(KVM_X86_SNP_VM) => snp && !asids.range(true).is_empty(),
            _ => false,
        };
        if !offered {
            return Err(Errno::EINVAL);
        }
        vm.vm_type = ty as u32;
        Ok(())
    }

    /// Whether SNP VMs are offered: the host enabled SNP (`sev_snp_supported` is decided
    /// when KVM loads, from the platform's SNP state after `sev_platform_init`).
    fn snp_offered(&self) -> bool {
        self.dev().snp_usable()
    }

    /// `sev_guest_init`: the legacy KVM_SEV_INIT / ES_INIT, on the default VM type only.
    pub(super) fn legacy_init(
        &self,
        vm: &mut Vm,
        es: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        if es && self.asids().range(true).is_empty() {
            return Err(Errno::ENOTTY);
        }
        if vm.vm_type != KVM_X86_DEFAULT_VM {
            return Err(Errno::EINVAL);
        }
        let params = KvmSevInit {
            ghcb_version: if es { GHCB_VERSION_MIN } else { 0 },
            ..Default::default()
        };
        self.guest_init(vm, &params, es, false, ctx)
    }

    /// `sev_guest_init2`: KVM_SEV_INIT2 on an SEV or SEV-ES VM type, once.
    pub(super) fn init2(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        // KVM's `need_init`: an SEV type that is not yet an SEV guest.
        let (es, snp) = match vm.vm_type {
            KVM_X86_SEV_VM => (false, false),
            KVM_X86_SEV_ES_VM => (true, false),
            KVM_X86_SNP_VM => (true, true),
            _ => return Err(Errno::EINVAL),
        };
        if vm.sev.is_some() {
            return Err(Errno::EINVAL);
        }
        let params: KvmSevInit = read_obj(ctx.mem, ctx.data)?;
        self.guest_init(vm, &params, es, snp, ctx)
    }

    /// `__sev_guest_init`: KVM's checks in KVM's order, then an ASID and an initialised
    /// platform. The padding of `kvm_sev_init` is not checked, as KVM does not.
    fn guest_init(
        &self,
        vm: &mut Vm,
        params: &KvmSevInit,
        es: bool,
        snp: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Errno> {
        let valid_features = if es { SUPPORTED_VMSA_FEATURES } else { 0 };
        if !vm.vmsas.is_empty()
            || params.flags != 0
            || params.vmsa_features & !valid_features != 0
            || params.ghcb_version > GHCB_VERSION_MAX
            || (!es && params.ghcb_version != 0)
            || vm.sev.is_some()
        {
            return Err(Errno::EINVAL);
        }
        let mut asids = self.asids();
        let mut dev = self.dev();
        let asid = match asids.alloc(es, vm.uid, &mut dev) {
            Ok(a) => a,
            Err(AsidError::UidLimit) => {
                return Err(self.limit_hit(vm.uid, "ASIDs", AsidError::UidLimit.errno()))
            }
            Err(e) => return Err(e.errno()),
        };
        if let Err(e) = dev.platform_init(ctx.error) {
            asids.free(asid);
            return Err(e);
        }
        // KVM turns SNP on in every save area of an SNP guest.
        let snp_feature = if snp {
            super::snp::SEV_FEAT_SNP_ACTIVE
        } else {
            0
        };
        vm.sev = Some(SevVm {
            es,
            snp,
            asid,
            handle: 0,
            fd: 0,
            vmsa_mem: VecGuestMemory::new(),
            vmsa_features: params.vmsa_features | snp_feature,
            sync_fpu: vm.vm_type != KVM_X86_DEFAULT_VM,
        });
        Ok(())
    }
}

/// `sev_es_sync_vmsa` on the save area the VMM gave, which stands for the vCPU's state: EINVAL
/// for a DR7 with bits KVM refuses; SEV_FEATURES is the VM's `vmsa_features` (0 under the
/// legacy init). Under INIT2 the FPU state is the vCPU's, as the VMM gave it (QEMU's reset
/// state has MXCSR 0x1F80 and FCW 0x037F); the legacy init leaves that area as KVM's page
/// holds it, zero.
pub(super) fn sync_vmsa(
    page: &mut [u8; PAGE as usize],
    vmsa_features: u64,
    sync_fpu: bool,
) -> Result<(), Errno> {
    let field = |page: &[u8; PAGE as usize], at: usize| {
        u64::from_le_bytes(page[at..at + 8].try_into().unwrap_or_default())
    };
    if field(page, vmsa::DR7) & !DR7_FIXED_1 != 0 {
        return Err(Errno::EINVAL);
    }
    page[vmsa::SEV_FEATURES..vmsa::SEV_FEATURES + 8].copy_from_slice(&vmsa_features.to_le_bytes());
    if !sync_fpu {
        page[vmsa::FPU].fill(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Box<[u8; PAGE as usize]> {
        let mut p = Box::new([0xa5u8; PAGE as usize]);
        p[vmsa::DR7..vmsa::DR7 + 8].copy_from_slice(&0x400u64.to_le_bytes());
        p
    }

    #[test]
    fn the_legacy_init_clears_the_fpu_and_sev_features() {
        let mut p = page();
        sync_vmsa(&mut p, 0, false).unwrap();
        assert_eq!(p[vmsa::SEV_FEATURES..vmsa::SEV_FEATURES + 8], [0; 8]);
        assert!(p[vmsa::FPU].iter().all(|b| *b == 0));
        assert!(
            p[0x670..].iter().all(|b| *b == 0xa5),
            "past the FPU: untouched"
        );
    }

    #[test]
    fn init2_keeps_the_vcpus_fpu_and_sets_the_features() {
        let mut p = page();
        let before = p.clone();
        sync_vmsa(&mut p, SUPPORTED_VMSA_FEATURES, true).unwrap();
        assert_eq!(p[0x3b0..0x3b8], 0x20u64.to_le_bytes());
        assert_eq!(p[vmsa::FPU], before[vmsa::FPU]);
    }

    #[test]
    fn a_debug_register_state_kvm_refuses() {
        let mut p = page();
        p[vmsa::DR7] = 0x01;
        assert_eq!(sync_vmsa(&mut p, 0, true), Err(Errno::EINVAL));
    }
}
