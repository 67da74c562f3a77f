//! MSG_KEY_REQ's answer (snp.md §7.3; ASPFW `SNP_MSG_KEY_REQ`): a 32-byte key derived for the
//! guest from a root key the guest cannot read (the VCEK's seed at a TCB it names, the VLEK,
//! or its own VMRK), mixed with the guest's identity fields it selects, so a key can be tied
//! to a measurement, a policy, an image or a TCB.

use uapi::snp::guest_msg::{key_req, key_rsp};
use uapi::Status;

use crate::firmware::{internal, Firmware, FwResult};

/// GUEST_FIELD_SELECT bits message version 1 knows (policy, image id, family id,
/// measurement, guest SVN, TCB version); version 2 adds LAUNCH_MIT_VECTOR (bit 6).
const GFS_V1: u64 = 0x3f;
const GFS_V2: u64 = 0x7f;

impl Firmware {
    /// The payload of MSG_KEY_RSP for a request of `version`, sealed with VMPCK `vmpck`.
    pub(super) fn key_response(
        &self,
        gctx: u32,
        vmpck: u32,
        version: u8,
        req: &[u8],
    ) -> FwResult<Vec<u8>> {
        let mut rsp = vec![0u8; key_rsp::LEN];
        let status = match self.derived_key(gctx, vmpck, version, req) {
            Ok(key) => {
                rsp[key_rsp::KEY].copy_from_slice(&key);
                Status::Success
            }
            Err(Status::HwerrorPlatform) => return Err(Status::HwerrorPlatform),
            Err(s) => s,
        };
        rsp[..4].copy_from_slice(&(status as u32).to_le_bytes());
        Ok(rsp)
    }

    fn derived_key(
        &self,
        gctx: u32,
        vmpck: u32,
        version: u8,
        req: &[u8],
    ) -> FwResult<zeroize::Zeroizing<Vec<u8>>> {
        let u32_at = |at: usize| u32::from_le_bytes(req[at..at + 4].try_into().unwrap_or_default());
        let u64_at = |at: usize| u64::from_le_bytes(req[at..at + 8].try_into().unwrap_or_default());
        let root_select = u32_at(key_req::ROOT_KEY_SELECT_AT);
        let gfs = u64_at(key_req::GUEST_FIELD_SELECT_AT);
        let vmpl = u32_at(key_req::VMPL_AT);
        let guest_svn = u32_at(key_req::GUEST_SVN_AT);
        let tcb = u64_at(key_req::TCB_VERSION_AT);
        let mit = if version >= 2 && req.len() >= key_req::LEN_V2 {
            u64_at(key_req::LAUNCH_MIT_VECTOR_AT)
        } else {
            0
        };
        let store = &self.snp.store;
        let vmrk = root_select & 1 != 0;
        let key_sel = (root_select >> 1) & 0b11;
        if root_select & !0b111 != 0 || u32_at(key_req::RESERVED_AT) != 0 {
            return Err(Status::InvalidParam);
        }
        if !vmrk && store.mask_chip_key {
            return Err(Status::InvalidKey);
        }
        let use_vlek = match key_sel {
            0 => self.snp.vlek.is_some(),
            1 => false,
            2 if self.snp.vlek.is_some() => true,
            _ => return Err(Status::InvalidKey),
        };
        let guest = self.snp_guest(gctx)?;
        let allowed = if version >= 2 { GFS_V2 } else { GFS_V1 };
        let tcb = self.chip.product.tcb(tcb).ok_or(Status::InvalidParam)?;
        let svn = guest.identity.map_or(0, |i| i.guest_svn);
        if vmpl < vmpck
            || vmpl > 3
            || gfs & !allowed != 0
            || tcb.exceeds(store.committed_tcb)
            || guest_svn > svn
        {
            return Err(Status::InvalidParam);
        }
        // The mix data: what the key is bound to (only the fields the guest selected).
        let mut mix = Vec::with_capacity(256);
        mix.extend_from_slice(&root_select.to_le_bytes());
        let id_used: u8 = match guest.identity {
            Some(i) if i.author_key_digest.is_some() => 2,
            Some(_) => 1,
            None => 0,
        };
        mix.push(id_used);
        mix.extend_from_slice(&gfs.to_le_bytes());
        mix.extend_from_slice(&vmpl.to_le_bytes());
        let bit = |n: u32| gfs & (1 << n) != 0;
        if bit(0) {
            mix.extend_from_slice(&guest.policy.to_le_bytes());
        }
        if bit(1) {
            mix.extend_from_slice(&guest.identity.map_or([0; 16], |i| i.image_id));
        }
        if bit(2) {
            mix.extend_from_slice(&guest.identity.map_or([0; 16], |i| i.family_id));
        }
        if bit(3) {
            mix.extend_from_slice(&guest.ld.bytes());
        }
        if bit(4) {
            mix.extend_from_slice(&guest_svn.to_le_bytes());
        }
        if bit(5) {
            mix.extend_from_slice(&tcb.to_u64().to_le_bytes());
        }
        if bit(6) {
            mix.extend_from_slice(&mit.to_le_bytes());
        }
        if let Some(i) = guest.identity {
            mix.extend_from_slice(&i.author_key_digest.unwrap_or(i.id_key_digest));
        }
        let root: zeroize::Zeroizing<Vec<u8>> = if vmrk {
            zeroize::Zeroizing::new(guest.vmrk.to_vec())
        } else if use_vlek {
            let vlek = self.snp.vlek.as_ref().ok_or(Status::InvalidKey)?;
            zeroize::Zeroizing::new(vlek[vlek.len() - 48..].to_vec())
        } else {
            // The VCEK's seed at the TCB asked for, not the reported one: a guest may ask
            // for a key that an older TCB could derive too.
            self.chip
                .vcek_seed(tcb)
                .map_err(|e| internal("VCEK seed", e))?
        };
        crate::crypto::kdf(&root, b"gmsg-keyreq", &mix, 32).map_err(|e| internal("KDF", e))
    }
}
