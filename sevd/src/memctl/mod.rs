//! The memory controller: one key slot per ASID, and AES-128-XTS on 16-byte blocks with the
//! guest physical address of each block as its tweak (DESIGN.md "The software firmware").
//!
//! The hypervisor's view of guest memory is whatever [`GuestMemory`] holds; an encrypted
//! guest's pages hold ciphertext there, and only [`MemoryController::guest_read`] (the guest's
//! own view, C-bit set) sees plaintext. Equal plaintext at two addresses encrypts
//! differently, as AMD's memory encryption ties ciphertext to its address.

mod memory;
mod xts;

pub use memory::{GuestAddress, GuestMemory, GuestMemoryError, VecGuestMemory};

use std::collections::HashMap;
use std::sync::mpsc;

use zeroize::Zeroizing;

use crate::crypto::CryptoError;

/// The block the controller encrypts: 16 bytes, aligned.
pub const BLOCK: u64 = 16;

/// A VM encryption key: AES-128-XTS K1 ‖ K2.
pub struct Vek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Vek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vek(..)")
    }
}

impl Clone for Vek {
    fn clone(&self) -> Self {
        Vek(Zeroizing::new(*self.0))
    }
}

impl Vek {
    /// A fresh random key with K1 ≠ K2.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_with(&mut crate::crypto::fill_random)
    }

    /// A key from a given source of random bytes, with K1 ≠ K2 (XTS needs distinct halves).
    pub fn generate_with(
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), CryptoError>,
    ) -> Result<Self, CryptoError> {
        loop {
            let mut key = Zeroizing::new([0u8; 32]);
            fill(&mut key[..])?;
            if key[..16] != key[16..] {
                return Ok(Vek(key));
            }
        }
    }
}

/// Why a memory access through the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum MemctlError {
    /// No key is installed for the ASID.
    #[error("no key is installed for ASID {0}")]
    NoKey(u32),
    /// The range is not 16-byte aligned where it must be.
    #[error("range {gpa:#x}+{len:#x} is not 16-byte aligned")]
    Unaligned {
        /// Start.
        gpa: u64,
        /// Length.
        len: usize,
    },
    /// Guest memory is not there.
    #[error(transparent)]
    Memory(#[from] GuestMemoryError),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The controller's key slots.
#[derive(Debug, Default)]
pub struct MemoryController {
    slots: HashMap<u32, Vek>,
}

/// How much guest memory is encrypted at a time: bounds the controller's own memory.
const CHUNK: usize = 256 * 1024;

impl MemoryController {
    /// A controller with every slot empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Programs `asid`'s slot (ACTIVATE).
    pub fn install(&mut self, asid: u32, vek: Vek) {
        self.slots.insert(asid, vek);
    }

    /// Empties `asid`'s slot; the key is zeroized (DEACTIVATE, DECOMMISSION).
    pub fn clear(&mut self, asid: u32) {
        self.slots.remove(&asid);
    }

    /// Whether `asid` has a key.
    pub fn has_key(&self, asid: u32) -> bool {
        self.slots.contains_key(&asid)
    }

    fn key(&self, asid: u32) -> Result<&Vek, MemctlError> {
        self.slots.get(&asid).ok_or(MemctlError::NoKey(asid))
    }

    /// Encrypts `data`, which lives at `gpa`, in place under `asid`'s key.
    pub fn encrypt(
        &self,
        asid: u32,
        gpa: GuestAddress,
        data: &mut [u8],
    ) -> Result<(), MemctlError> {
        self.crypt(asid, gpa, data, true)
    }

    /// Decrypts `data`, which lives at `gpa`, in place under `asid`'s key.
    pub fn decrypt(
        &self,
        asid: u32,
        gpa: GuestAddress,
        data: &mut [u8],
    ) -> Result<(), MemctlError> {
        self.crypt(asid, gpa, data, false)
    }

    fn crypt(
        &self,
        asid: u32,
        gpa: GuestAddress,
        data: &mut [u8],
        encrypt: bool,
    ) -> Result<(), MemctlError> {
        check_aligned(gpa, data.len())?;
        xts::apply(&self.key(asid)?.0, gpa.0, data, encrypt)?;
        Ok(())
    }

    /// Encrypts guest memory in place, chunk by chunk, handing the plaintext to `inspect`
    /// first, in order (LAUNCH_UPDATE_DATA measures it). Holds a few chunks at most, never
    /// the range. Above one chunk, `inspect` runs on a second thread while this one copies
    /// and encrypts, as the PSP's hash and AES engines work side by side.
    pub fn encrypt_range(
        &self,
        asid: u32,
        mem: &dyn GuestMemory,
        gpa: GuestAddress,
        len: u64,
        inspect: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), MemctlError> {
        check_aligned(gpa, len as usize)?;
        let key = self.key(asid)?;
        mem.check_range(gpa, len)?;
        if len <= CHUNK as u64 {
            let mut buf = vec![0u8; len as usize];
            mem.read(gpa, &mut buf)?;
            xts::apply_inspecting(&key.0, gpa.0, &mut buf, true, inspect)?;
            mem.write(gpa, &buf)?;
            return Ok(());
        }
        std::thread::scope(|s| {
            // Plaintext copies go to the hasher and come back for reuse: three in flight.
            let (to_hasher, from_main) = mpsc::sync_channel::<Vec<u8>>(2);
            let (to_main, returned) = mpsc::sync_channel::<Vec<u8>>(3);
            let hasher = s.spawn(move || {
                for plain in from_main {
                    inspect(&plain);
                    if to_main.send(plain).is_err() {
                        break;
                    }
                }
            });
            let mut work = vec![0u8; CHUNK];
            let mut spare: Vec<Vec<u8>> = (0..3).map(|_| Vec::with_capacity(CHUNK)).collect();
            let mut done = 0u64;
            let result = loop {
                if done >= len {
                    break Ok(());
                }
                let n = (len - done).min(CHUNK as u64) as usize;
                let at = GuestAddress(gpa.0 + done);
                let chunk = &mut work[..n];
                if let Err(e) = mem.read(at, chunk) {
                    break Err(MemctlError::from(e));
                }
                let mut plain = match spare.pop() {
                    Some(p) => p,
                    None => match returned.recv() {
                        Ok(p) => p,
                        Err(_) => break Ok(()),
                    },
                };
                plain.clear();
                plain.extend_from_slice(chunk);
                if to_hasher.send(plain).is_err() {
                    break Ok(());
                }
                if let Err(e) = xts::apply(&key.0, at.0, chunk, true) {
                    break Err(e.into());
                }
                if let Err(e) = mem.write(at, chunk) {
                    break Err(e.into());
                }
                done += n as u64;
            };
            drop(to_hasher);
            // The hasher only ends when its channel does; a panic in it is a bug here.
            let _ = hasher.join();
            result
        })
    }

    /// The plaintext of the 16-byte blocks covering `gpa`+`len`, and where they start.
    fn plain_span(
        &self,
        asid: u32,
        mem: &dyn GuestMemory,
        gpa: GuestAddress,
        len: usize,
    ) -> Result<(u64, Vec<u8>), MemctlError> {
        let (start, end) = block_span(gpa, len)?;
        let key = self.key(asid)?;
        let mut buf = vec![0u8; (end - start) as usize];
        mem.read(GuestAddress(start), &mut buf)?;
        xts::apply(&key.0, start, &mut buf, false)?;
        Ok((start, buf))
    }

    /// Reads guest memory as the guest sees it under `asid` (any alignment).
    pub fn guest_read(
        &self,
        asid: u32,
        mem: &dyn GuestMemory,
        gpa: GuestAddress,
        out: &mut [u8],
    ) -> Result<(), MemctlError> {
        let (start, buf) = self.plain_span(asid, mem, gpa, out.len())?;
        let off = (gpa.0 - start) as usize;
        out.copy_from_slice(&buf[off..off + out.len()]);
        Ok(())
    }

    /// Writes guest memory as the guest does under `asid` (any alignment: partial blocks
    /// are read, merged and re-encrypted).
    pub fn guest_write(
        &self,
        asid: u32,
        mem: &dyn GuestMemory,
        gpa: GuestAddress,
        data: &[u8],
    ) -> Result<(), MemctlError> {
        let (start, mut buf) = self.plain_span(asid, mem, gpa, data.len())?;
        let off = (gpa.0 - start) as usize;
        buf[off..off + data.len()].copy_from_slice(data);
        xts::apply(&self.key(asid)?.0, start, &mut buf, true)?;
        mem.write(GuestAddress(start), &buf)?;
        Ok(())
    }
}

fn check_aligned(gpa: GuestAddress, len: usize) -> Result<(), MemctlError> {
    if gpa.0 % BLOCK != 0 || len as u64 % BLOCK != 0 {
        return Err(MemctlError::Unaligned { gpa: gpa.0, len });
    }
    Ok(())
}

/// The 16-byte-aligned span covering `gpa`+`len`.
fn block_span(gpa: GuestAddress, len: usize) -> Result<(u64, u64), MemctlError> {
    let overflow = || GuestMemoryError { gpa: gpa.0, len };
    let end = gpa.0.checked_add(len as u64).ok_or_else(overflow)?;
    let start = gpa.0 & !(BLOCK - 1);
    let end = end.checked_add(BLOCK - 1).ok_or_else(overflow)? & !(BLOCK - 1);
    Ok((start, end))
}

#[cfg(test)]
mod tests;
