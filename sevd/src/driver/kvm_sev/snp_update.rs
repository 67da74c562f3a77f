//! `KVM_SEV_SNP_LAUNCH_UPDATE` (`snp_launch_update` and `sev_gmem_post_populate` in
//! arch/x86/kvm/svm/sev.c): each page copied from the caller's source into the guest's
//! memory, assigned to the guest in the RMP and measured by the firmware. The range goes in
//! pieces staged outside the firmware's lock; while the firmware works on one piece, the
//! next is read from the VMM and the one before written back, each on its own thread.

use std::thread::ScopedJoinHandle;

use uapi::kvm::KvmSevSnpLaunchUpdate;
use uapi::snp::PageType;
use vfs::{CallerMemory, Errno, UserAddr};

use super::{Ctx, KvmSev, Vm, PAGE};
use crate::driver::{read_obj, write_obj};
use crate::memctl::rmp::HostPage;
use crate::memctl::{GuestAddress, GuestMemory, VecGuestMemory};

/// Pages staged and handed to the firmware under one hold of its lock (4 MiB).
const PIECE_PAGES: u64 = 1024;

/// Why a page of a launch update stopped the loop: KVM's errno inside
/// `kvm_gmem_populate`, and the firmware status when the firmware refused.
#[derive(Debug, Clone, Copy)]
struct PageFailure {
    errno: Errno,
    status: u32,
}

/// A piece read from the caller: its pages staged at their guest addresses, and how many
/// of them could be read.
struct Staged {
    gpa: u64,
    src: u64,
    n: u64,
    mem: VecGuestMemory,
    readable: u64,
}

/// Reads `n` pages of the caller's `src` into `buf`, staged at `gpa` (per page if the
/// piece cannot be read whole, to find the first page that faults). ZERO pages read nothing.
fn stage(
    mem: &dyn CallerMemory,
    ty: PageType,
    gpa: u64,
    src: u64,
    n: u64,
    mut buf: Vec<u8>,
) -> Staged {
    buf.resize((n * PAGE) as usize, 0);
    let mut readable = n;
    if ty != PageType::Zero && mem.read(UserAddr(src), &mut buf).is_err() {
        readable = 0;
        for i in 0..n {
            let page = &mut buf[(i * PAGE) as usize..((i + 1) * PAGE) as usize];
            if mem
                .read(UserAddr(src.wrapping_add(i * PAGE)), page)
                .is_err()
            {
                break;
            }
            readable += 1;
        }
    }
    Staged {
        gpa,
        src,
        n,
        mem: VecGuestMemory::from_region(GuestAddress(gpa), buf),
        readable,
    }
}

impl KvmSev {
    /// `snp_launch_update`. A failure after some pages stops early: the pages done stay
    /// done and the rest of the range is written back, as `kvm_gmem_populate` returns a
    /// partial count; a failure at the first page is EIO, with the firmware's status if it
    /// refused.
    pub(super) fn snp_launch_update(&self, vm: &mut Vm, ctx: &mut Ctx<'_>) -> Result<(), Errno> {
        let sev = vm.sev.as_ref().filter(|s| s.snp && s.handle != 0);
        let sev = sev.ok_or(Errno::EINVAL)?;
        let mut params: KvmSevSnpLaunchUpdate = read_obj(ctx.mem, ctx.data)?;
        let ty = PageType::from_u8(params.type_).filter(|t| *t != PageType::Vmsa);
        let Some(ty) = ty.filter(|_| params.len % PAGE == 0 && params.flags == 0) else {
            return Err(Errno::EINVAL);
        };
        let gpa0 = params.gfn_start.checked_mul(PAGE).ok_or(Errno::EINVAL)?;
        let slot = vm.slots.by_gpa(gpa0).copied().ok_or(Errno::EINVAL)?;
        // `kvm_gmem_populate` stops at the end of the memory slot.
        let npages = (params.len / PAGE).min((slot.gpa + slot.size - gpa0) / PAGE);
        let fd_ok = self.check_fd(ctx.pid, ctx.sev_fd).is_ok();
        let target = Target {
            gctx: sev.handle,
            asid: sev.asid,
            object: vm.object,
            ty,
            fd_ok,
        };
        let (done, failure) = self.update_pieces(vm, ctx.mem, &target, gpa0, params.uaddr, npages);
        if let (0, Some(f)) = (done, &failure) {
            *ctx.error = f.status;
            log::debug!(
                "KVM_SEV_SNP_LAUNCH_UPDATE failed at its first page: {}",
                f.errno
            );
            return Err(Errno::EIO);
        }
        params.gfn_start += done;
        params.len -= done * PAGE;
        if ty != PageType::Zero {
            params.uaddr = params.uaddr.wrapping_add(done * PAGE);
        }
        *ctx.error = 0;
        write_obj(ctx.mem, ctx.data, &params)
    }

    /// The pipeline over the range's pieces: the pages done and the failure that stopped it.
    fn update_pieces(
        &self,
        vm: &Vm,
        mem: &dyn CallerMemory,
        target: &Target,
        gpa0: u64,
        src0: u64,
        npages: u64,
    ) -> (u64, Option<PageFailure>) {
        let ty = target.ty;
        let piece = |i: u64| {
            let at = i * PIECE_PAGES;
            (
                gpa0 + at * PAGE,
                src0.wrapping_add(at * PAGE),
                (npages - at).min(PIECE_PAGES),
            )
        };
        let pieces = npages.div_ceil(PIECE_PAGES);
        let mut done = 0;
        let mut failure = None;
        std::thread::scope(|s| {
            let read = |i: u64, buf: Vec<u8>| {
                let (gpa, src, n) = piece(i);
                s.spawn(move || stage(mem, ty, gpa, src, n, buf))
            };
            let mut spare: Vec<Vec<u8>> = vec![];
            let mut ahead: Option<ScopedJoinHandle<'_, Staged>> =
                (pieces > 0).then(|| read(0, Vec::new()));
            let mut behind: Option<ScopedJoinHandle<'_, Vec<u8>>> = None;
            let mut i = 0;
            while let Some(next) = ahead.take() {
                let Ok(staged) = next.join() else {
                    failure = Some(PageFailure {
                        errno: Errno::EFAULT,
                        status: 0,
                    });
                    break;
                };
                i += 1;
                if i < pieces {
                    ahead = Some(read(i, spare.pop().unwrap_or_default()));
                }
                let (ok, fail) = self.update_staged(target, &staged);
                done += ok;
                if let Some(w) = behind.take() {
                    spare.extend(w.join().ok());
                }
                let slots = &vm.slots;
                behind = Some(s.spawn(move || finish(slots, mem, ty, staged, ok, fail)));
                if fail.is_some() {
                    failure = fail;
                    break;
                }
            }
            // A piece read ahead of a failure is dropped unused; its bytes are the caller's.
            if let Some(a) = ahead.take() {
                let _ = a.join();
            }
            if let Some(w) = behind.take() {
                let _ = w.join();
            }
        });
        (done, failure)
    }

    /// One staged piece under the firmware's lock: KVM's checks for each page before the
    /// firmware sees it (not yet assigned, its source readable, `sev_fd` ours), the RMP
    /// assignment, then the firmware's updates. A page the firmware refuses, and those after
    /// it, go back to the hypervisor.
    fn update_staged(&self, t: &Target, staged: &Staged) -> (u64, Option<PageFailure>) {
        let mut failure = None;
        let mut dev = self.dev();
        let fw = dev.firmware_mut();
        let mut pages = vec![];
        for i in 0..staged.n {
            let at = staged.gpa + i * PAGE;
            let page = HostPage {
                object: t.object,
                addr: at,
            };
            let errno = if fw.rmp_entry(page).is_guest() {
                Some(Errno::EEXIST)
            } else if i >= staged.readable {
                Some(Errno::EFAULT)
            } else if !t.fd_ok {
                Some(Errno::EBADF)
            } else if fw.rmp_assign(page, t.asid, at).is_err() {
                Some(Errno::EINVAL)
            } else {
                None
            };
            if let Some(errno) = errno {
                failure = Some(PageFailure { errno, status: 0 });
                break;
            }
            pages.push((page, GuestAddress(at)));
        }
        let (ok, r) = fw.snp_launch_update_pages(t.gctx, &pages, t.ty, &staged.mem);
        if let Err(status) = r {
            for (page, _) in &pages[ok..] {
                fw.rmp_make_shared(*page);
            }
            failure = Some(PageFailure {
                errno: Errno::EIO,
                status: status as u32,
            });
        }
        (ok as u64, failure)
    }
}

/// What a launch update works on.
struct Target {
    gctx: u32,
    asid: u32,
    object: u64,
    ty: PageType,
    fd_ok: bool,
}

/// A piece's end: the pages done written into the VMM's memory (the guest's, encrypted), a
/// CPUID page the firmware corrected copied back to its source, and the staged bytes of
/// pages not taken wiped. Returns the buffer for reuse.
fn finish(
    slots: &super::Slots,
    mem: &dyn CallerMemory,
    ty: PageType,
    staged: Staged,
    done: u64,
    failure: Option<PageFailure>,
) -> Vec<u8> {
    let (gpa, src) = (staged.gpa, staged.src);
    let mut bytes = staged.mem.into_first_region();
    if ty == PageType::Cpuid
        && failure.is_some_and(|f| f.status == uapi::Status::InvalidParam as u32)
    {
        let at = (done * PAGE) as usize;
        let _ = mem.write(
            UserAddr(src.wrapping_add(done * PAGE)),
            &bytes[at..at + PAGE as usize],
        );
    }
    if done > 0 {
        let written = slots
            .memory(mem)
            .write(GuestAddress(gpa), &bytes[..(done * PAGE) as usize]);
        if written.is_err() {
            log::warn!("KVM_SEV_SNP_LAUNCH_UPDATE: the VMM's memory at {gpa:#x} went away");
        }
    }
    zeroize::Zeroize::zeroize(&mut bytes[(done * PAGE) as usize..]);
    bytes
}
