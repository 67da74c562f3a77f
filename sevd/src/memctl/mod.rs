//! The memory controller: one key slot per ASID, and AES-128-XTS on 16-byte blocks with the
//! guest physical address of each block as its tweak (DESIGN.md "The software firmware").
//!
//! The hypervisor's view of guest memory is whatever [`GuestMemory`] holds; an encrypted
//! guest's pages hold ciphertext there, and only [`MemoryController::guest_read`] (the guest's
//! own view, C-bit set) sees plaintext. Equal plaintext at two addresses encrypts
//! differently, as AMD's memory encryption ties ciphertext to its address.

mod memory;
pub mod rmp;
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
/// Ranges longer than this are hashed on a side thread ([`MemoryController::encrypt_range`]).
pub const SIDE_HASH_ABOVE: usize = CHUNK;

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
    /// first, in order (LAUNCH_UPDATE_DATA measures it). Memory of this process is worked on
    /// where it lies; other memory is copied a chunk at a time, so a few chunks at most are
    /// held, never the range. Above one chunk, `inspect` runs on a second thread a chunk
    /// ahead of the cipher, as the PSP's hash and AES engines work side by side.
    pub fn encrypt_range(
        &self,
        asid: u32,
        mem: &dyn GuestMemory,
        gpa: GuestAddress,
        len: u64,
        inspect: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), MemctlError> {
        check_aligned(gpa, len as usize)?;
        let key = &self.key(asid)?.0;
        mem.check_range(gpa, len)?;
        let side = len > SIDE_HASH_ABOVE as u64;
        let mut result = Ok(());
        let direct = mem.in_place(gpa, len, &mut |bytes| {
            let mut chunks = bytes.chunks_mut(CHUNK).enumerate();
            result = hash_then_encrypt(
                key,
                side,
                inspect,
                |_| Ok(chunks.next().map(|(i, c)| (gpa.0 + (i * CHUNK) as u64, c))),
                |_, _| Ok(None),
            );
        });
        if direct {
            return result;
        }
        let mut done = 0u64;
        hash_then_encrypt(
            key,
            side,
            inspect,
            |spare: Option<Vec<u8>>| {
                if done >= len {
                    return Ok(None);
                }
                let n = (len - done).min(CHUNK as u64) as usize;
                let at = gpa.0 + done;
                let mut buf = spare.unwrap_or_default();
                buf.resize(n, 0);
                mem.read(GuestAddress(at), &mut buf)?;
                done += n as u64;
                Ok(Some((at, buf)))
            },
            |at, buf| {
                mem.write(GuestAddress(at), &buf)?;
                Ok(Some(buf))
            },
        )
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

/// Chunks in flight between the cipher and the hasher: one being hashed, one waiting.
const IN_FLIGHT: usize = 2;

/// The pipeline of [`MemoryController::encrypt_range`]: `produce` gives the next chunk (and
/// its guest address), reusing a buffer `consume` gave back; each chunk is inspected, then
/// encrypted, then handed to `consume`. With `side`, inspection runs on a scoped thread one
/// chunk ahead, so no chunk is encrypted before it is inspected and the order holds.
fn hash_then_encrypt<T: AsMut<[u8]> + AsRef<[u8]> + Send>(
    key: &[u8; 32],
    side: bool,
    inspect: &mut (dyn FnMut(&[u8]) + Send),
    mut produce: impl FnMut(Option<T>) -> Result<Option<(u64, T)>, MemctlError>,
    mut consume: impl FnMut(u64, T) -> Result<Option<T>, MemctlError>,
) -> Result<(), MemctlError> {
    if !side {
        let mut spare = None;
        while let Some((at, mut chunk)) = produce(spare.take())? {
            xts::apply_inspecting(key, at, chunk.as_mut(), true, &mut *inspect)?;
            spare = consume(at, chunk)?;
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        let (to_hasher, hasher_in) = mpsc::sync_channel::<(u64, T)>(IN_FLIGHT);
        let (hasher_out, hashed) = mpsc::sync_channel::<(u64, T)>(IN_FLIGHT + 1);
        let hasher = s.spawn(move || {
            for (at, chunk) in hasher_in {
                inspect(chunk.as_ref());
                if hasher_out.send((at, chunk)).is_err() {
                    break;
                }
            }
        });
        let mut spare = None;
        let mut in_flight = 0;
        let mut produced_all = false;
        let result = loop {
            while !produced_all && in_flight < IN_FLIGHT {
                match produce(spare.take()) {
                    Ok(Some(item)) => {
                        if to_hasher.send(item).is_err() {
                            break;
                        }
                        in_flight += 1;
                    }
                    Ok(None) => produced_all = true,
                    Err(e) => return Err(e),
                }
            }
            if in_flight == 0 {
                break Ok(());
            }
            let Ok((at, mut chunk)) = hashed.recv() else {
                break Ok(());
            };
            in_flight -= 1;
            if let Err(e) = xts::apply(key, at, chunk.as_mut(), true) {
                break Err(e.into());
            }
            match consume(at, chunk) {
                Ok(back) => spare = back,
                Err(e) => break Err(e),
            }
        };
        drop(to_hasher);
        // The hasher ends when its channel does; a panic in it is a bug here.
        let _ = hasher.join();
        result
    })
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
