//! Platform commands (firmware-semantics.md §1.3, FW column).

use uapi::cert::{algo, usage, CERT_LEN};
use uapi::psp_sev::{SevUserDataStatus, SEV_STATUS_FLAGS_CONFIG_ES, SEV_STATUS_FLAGS_OWNER};
use uapi::Status;

use super::nv::{NvError, Owner, PlatformKeys};
use super::{internal, Firmware, FwResult, PlatformState, INIT_FLAGS_ES};
use crate::certs::{check_ecc, verify_sev};
use crate::crypto::ecc::EcKeyPair;

/// Size of the PDH_CERT_EXPORT chain: PEK ‖ OCA ‖ CEK.
const CHAIN_LEN: u32 = 3 * CERT_LEN as u32;
/// Size of one chip id.
const ID_LEN: u32 = 64;

impl Firmware {
    fn api(&self) -> (u8, u8) {
        (self.config.version.api_major, self.config.version.api_minor)
    }

    fn require(&self, allowed: &[PlatformState]) -> FwResult<()> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(Status::InvalidPlatformState)
        }
    }

    pub(super) fn keys(&self) -> FwResult<&PlatformKeys> {
        // Invariant: keys are loaded in every state but UNINIT, which callers exclude first.
        self.keys.as_ref().ok_or(Status::InvalidPlatformState)
    }

    fn new_pdh(&self, pek_key: &EcKeyPair) -> FwResult<(EcKeyPair, uapi::cert::Certificate)> {
        let make = || {
            let pdh_key = EcKeyPair::generate()?;
            let mut pdh = pdh_key.certificate(self.api(), usage::PDH, algo::ECDH_SHA256)?;
            pek_key.sign_certificate(&mut pdh, usage::PEK, algo::ECDSA_SHA256)?;
            Ok::<_, crate::crypto::CryptoError>((pdh_key, pdh))
        };
        make().map_err(|e| internal("PDH generation", e))
    }

    /// New self-owned OCA, PEK (signed by OCA and CEK) and PDH.
    fn new_self_owned_keys(&self) -> FwResult<PlatformKeys> {
        let make = || {
            let oca_key = EcKeyPair::generate()?;
            let mut oca = oca_key.certificate(self.api(), usage::OCA, algo::ECDSA_SHA256)?;
            oca_key.sign_certificate(&mut oca, usage::OCA, algo::ECDSA_SHA256)?;
            let pek_key = EcKeyPair::generate()?;
            let mut pek = pek_key.certificate(self.api(), usage::PEK, algo::ECDSA_SHA256)?;
            oca_key.sign_certificate(&mut pek, usage::OCA, algo::ECDSA_SHA256)?;
            self.cek_key
                .sign_certificate(&mut pek, usage::CEK, algo::ECDSA_SHA256)?;
            Ok::<_, crate::crypto::CryptoError>((oca_key, oca, pek_key, pek))
        };
        let (oca_key, oca, pek_key, pek) = make().map_err(|e| internal("PEK generation", e))?;
        let (pdh_key, pdh) = self.new_pdh(&pek_key)?;
        Ok(PlatformKeys {
            owner: Owner::SelfOwned,
            oca_key: Some(oca_key),
            oca,
            pek_key,
            pek,
            pdh_key,
            pdh,
        })
    }

    /// Writes `keys` to flash; on failure nothing in the firmware changes.
    fn persist(&mut self, keys: &PlatformKeys) -> FwResult<()> {
        let seal_key = self.chip.nv_seal_key().map_err(|e| internal("NV key", e))?;
        let bytes = keys
            .encode(&seal_key)
            .map_err(|e| internal("NV encode", e))?;
        self.nv
            .write(&bytes)
            .map_err(|e| internal("writing the non-volatile store", e))
    }

    /// INIT: UNINIT → INIT; loads (or creates) the persistent keys.
    pub fn init(&mut self, flags: u32) -> FwResult<()> {
        self.require(&[PlatformState::Uninit])?;
        if flags & !INIT_FLAGS_ES != 0 {
            return Err(Status::InvalidConfig);
        }
        let stored = self
            .nv
            .read()
            .map_err(|e| internal("reading the non-volatile store", e))?;
        let keys = match stored {
            None => {
                let keys = self.new_self_owned_keys()?;
                self.persist(&keys)?;
                keys
            }
            Some(bytes) => {
                let seal_key = self.chip.nv_seal_key().map_err(|e| internal("NV key", e))?;
                let v1_key = self
                    .chip
                    .nv_v1_mac_key()
                    .map_err(|e| internal("NV key", e))?;
                match PlatformKeys::decode(&bytes, &seal_key, &v1_key) {
                    Ok(keys) => keys,
                    Err(NvError::Corrupt(why)) => {
                        // As the PSP does: report it and start afresh at the next INIT, which
                        // the kernel issues right away. The bad copy is kept aside.
                        log::error!("firmware: INIT: non-volatile store is corrupt ({why}); it was set aside and the next INIT starts a new one");
                        self.nv
                            .quarantine()
                            .map_err(|e| internal("setting the corrupt store aside", e))?;
                        return Err(Status::SecureDataInvalid);
                    }
                    Err(NvError::Crypto(e)) => return Err(internal("NV decode", e)),
                }
            }
        };
        self.keys = Some(keys);
        self.config_es = flags & INIT_FLAGS_ES != 0;
        self.dirty_all_asids();
        self.state = PlatformState::Init;
        Ok(())
    }

    /// SHUTDOWN: any state → UNINIT. Persistent keys stay in flash.
    pub fn shutdown(&mut self) -> FwResult<()> {
        self.destroy_guests();
        self.keys = None;
        self.config_es = false;
        self.state = PlatformState::Uninit;
        Ok(())
    }

    /// PLATFORM_RESET: UNINIT only; erases the persistent keys (the next INIT makes new ones).
    pub fn platform_reset(&mut self) -> FwResult<()> {
        self.require(&[PlatformState::Uninit])?;
        self.nv
            .erase()
            .map_err(|e| internal("erasing the non-volatile store", e))
    }

    /// PLATFORM_STATUS: any state. Owner, ES and guest count read as 0 in UNINIT.
    pub fn platform_status(&self) -> FwResult<SevUserDataStatus> {
        let mut flags = 0;
        if let Some(keys) = &self.keys {
            if keys.owner == Owner::External {
                flags |= SEV_STATUS_FLAGS_OWNER;
            }
            if self.config_es {
                flags |= SEV_STATUS_FLAGS_CONFIG_ES;
            }
        }
        Ok(SevUserDataStatus {
            api_major: self.config.version.api_major,
            api_minor: self.config.version.api_minor,
            state: self.state as u8,
            flags,
            build: self.config.version.build,
            guest_count: self.guests.len() as u32,
        })
    }

    /// PEK_GEN: INIT only; new OCA, PEK and PDH; the platform becomes self-owned.
    pub fn pek_gen(&mut self) -> FwResult<()> {
        self.require(&[PlatformState::Init])?;
        let keys = self.new_self_owned_keys()?;
        self.persist(&keys)?;
        self.keys = Some(keys);
        Ok(())
    }

    /// PEK_CSR: INIT or WORKING; the PEK body with both signature slots empty.
    /// `csr_len` is the command buffer's in/out length.
    pub fn pek_csr(&mut self, csr_len: &mut u32) -> FwResult<Vec<u8>> {
        self.require(&[PlatformState::Init, PlatformState::Working])?;
        let given = *csr_len;
        *csr_len = CERT_LEN as u32;
        if given < CERT_LEN as u32 {
            return Err(Status::InvalidLength);
        }
        let mut csr = self.keys()?.pek.clone();
        csr.sigs = [
            uapi::cert::Signature::empty(),
            uapi::cert::Signature::empty(),
        ];
        Ok(csr.encode())
    }

    /// PEK_CERT_IMPORT: INIT only; takes an OCA-signed PEK and the OCA, adds the CEK's
    /// signature, regenerates the PDH and makes the platform externally owned.
    pub fn pek_cert_import(&mut self, pek_cert: &[u8], oca_cert: &[u8]) -> FwResult<()> {
        self.require(&[PlatformState::Init])?;
        let current = self.keys()?;
        if current.owner == Owner::External {
            return Err(Status::AlreadyOwned);
        }
        if pek_cert.len() != CERT_LEN || oca_cert.len() != CERT_LEN {
            return Err(Status::InvalidLength);
        }
        let bad_cert = |_| Status::InvalidCertificate;
        let mut pek = uapi::cert::Certificate::decode(pek_cert).map_err(bad_cert)?;
        let oca = uapi::cert::Certificate::decode(oca_cert).map_err(bad_cert)?;
        let status = |e: crate::certs::CertError| {
            if e.is_signature() {
                Status::BadSignature
            } else {
                Status::InvalidCertificate
            }
        };
        // Signature first, then body, then usage (sev_cert_validate's order).
        verify_sev(&oca, "OCA", &oca, "OCA").map_err(status)?;
        check_ecc(&oca, "OCA", usage::OCA).map_err(status)?;
        verify_sev(&oca, "OCA", &pek, "PEK").map_err(status)?;
        check_ecc(&pek, "PEK", usage::PEK).map_err(status)?;
        if pek.body() != current.pek.body() {
            return Err(Status::InvalidCertificate);
        }
        self.cek_key
            .sign_certificate(&mut pek, usage::CEK, algo::ECDSA_SHA256)
            .map_err(|e| internal("CEK signature", e))?;
        let pek_key = EcKeyPair::from_der(
            &current
                .pek_key
                .to_der()
                .map_err(|e| internal("PEK copy", e))?,
        )
        .map_err(|e| internal("PEK copy", e))?;
        let (pdh_key, pdh) = self.new_pdh(&pek_key)?;
        let keys = PlatformKeys {
            owner: Owner::External,
            oca_key: None,
            oca,
            pek_key,
            pek,
            pdh_key,
            pdh,
        };
        self.persist(&keys)?;
        self.keys = Some(keys);
        Ok(())
    }

    /// PDH_GEN: INIT or WORKING; a new PDH signed by the PEK.
    pub fn pdh_gen(&mut self) -> FwResult<()> {
        self.require(&[PlatformState::Init, PlatformState::Working])?;
        let (pdh_key, pdh) = self.new_pdh(&self.keys()?.pek_key)?;
        let mut keys = self.keys.take().ok_or(Status::InvalidPlatformState)?;
        let old = (
            std::mem::replace(&mut keys.pdh_key, pdh_key),
            std::mem::replace(&mut keys.pdh, pdh),
        );
        if let Err(status) = self.persist(&keys) {
            (keys.pdh_key, keys.pdh) = old;
            self.keys = Some(keys);
            return Err(status);
        }
        self.keys = Some(keys);
        Ok(())
    }

    /// PDH_CERT_EXPORT: INIT or WORKING; the PDH and PEK ‖ OCA ‖ CEK. Both in/out lengths
    /// are written back on success and on INVALID_LENGTH.
    pub fn pdh_cert_export(
        &mut self,
        pdh_len: &mut u32,
        certs_len: &mut u32,
    ) -> FwResult<(Vec<u8>, Vec<u8>)> {
        self.require(&[PlatformState::Init, PlatformState::Working])?;
        let short = *pdh_len < CERT_LEN as u32 || *certs_len < CHAIN_LEN;
        *pdh_len = CERT_LEN as u32;
        *certs_len = CHAIN_LEN;
        if short {
            return Err(Status::InvalidLength);
        }
        let keys = self.keys()?;
        let mut chain = keys.pek.encode();
        chain.extend_from_slice(&keys.oca.encode());
        chain.extend_from_slice(&self.chip.cek.encode());
        Ok((keys.pdh.encode(), chain))
    }

    /// GET_ID: any state; the 64-byte chip id.
    pub fn get_id(&mut self, id_len: &mut u32) -> FwResult<Vec<u8>> {
        let given = *id_len;
        *id_len = ID_LEN;
        if given < ID_LEN {
            return Err(Status::InvalidLength);
        }
        Ok(self.chip.id().map_err(|e| internal("chip id", e))?.to_vec())
    }

    /// DF_FLUSH: no state check in the firmware. WBINVD is taken as done on every core (the
    /// host cannot run it here), so this never fails with WBINVD_REQUIRED.
    pub fn df_flush(&mut self) -> FwResult<()> {
        self.flush_asids();
        Ok(())
    }
}
