//! Guest memory as the hypervisor sees it, addressed by guest physical address.

use std::sync::Mutex;

/// A guest physical address. Distinct from a caller's user address on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestAddress(pub u64);

/// An access outside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest range {gpa:#x}+{len:#x} is not backed by guest memory")]
pub struct GuestMemoryError {
    /// Start.
    pub gpa: u64,
    /// Length.
    pub len: usize,
}

/// Guest memory, read and written as the hypervisor does (no decryption).
pub trait GuestMemory {
    /// Fills `buf` from `gpa`; all or an error. May span regions.
    fn read(&self, gpa: GuestAddress, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
    /// Writes `data` at `gpa`; all or an error. May span regions.
    fn write(&self, gpa: GuestAddress, data: &[u8]) -> Result<(), GuestMemoryError>;
    /// Whether all of `gpa`+`len` is backed, so a long operation can refuse before it starts.
    fn check_range(&self, gpa: GuestAddress, len: u64) -> Result<(), GuestMemoryError>;
    /// Runs `f` on the bytes of `gpa`+`len` where they lie, if they are one buffer of this
    /// process, and says whether it did. Memory reached by copying (the VMM's) says no, and
    /// the caller copies instead.
    fn in_place(&self, _gpa: GuestAddress, _len: u64, _f: &mut dyn FnMut(&mut [u8])) -> bool {
        false
    }
}

/// Guest memory made of local buffers at guest physical addresses: the embedded mode's
/// memory and the tests' mock.
#[derive(Debug, Default)]
pub struct VecGuestMemory {
    regions: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl VecGuestMemory {
    /// No memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// One region holding `data` at `gpa`: a staged copy of a span of guest memory that lives
    /// elsewhere (the VMM's), so the firmware works on it without touching the original.
    pub fn from_region(gpa: GuestAddress, data: Vec<u8>) -> Self {
        VecGuestMemory {
            regions: Mutex::new(vec![(gpa.0, data)]),
        }
    }

    /// The bytes of the first region, taken out (the staged span, after the firmware ran).
    pub fn into_first_region(self) -> Vec<u8> {
        let mut regions = self.regions.into_inner().unwrap_or_else(|e| e.into_inner());
        if regions.is_empty() {
            return vec![];
        }
        regions.swap_remove(0).1
    }

    /// Adds `len` zero bytes at `gpa`.
    pub fn add_region(&self, gpa: GuestAddress, len: usize) {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.push((gpa.0, vec![0; len]));
        regions.sort_by_key(|r| r.0);
    }

    fn access(
        &self,
        gpa: GuestAddress,
        len: usize,
        mut f: impl FnMut(&mut [u8], usize),
    ) -> Result<(), GuestMemoryError> {
        let err = GuestMemoryError { gpa: gpa.0, len };
        // Check first, so a failed access changes nothing.
        self.check_range(gpa, len as u64)?;
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < len {
            let at = gpa.0 + done as u64;
            let (base, data) = regions
                .iter_mut()
                .find(|(base, data)| at >= *base && at < *base + data.len() as u64)
                .ok_or(err)?;
            let off = (at - *base) as usize;
            let n = (data.len() - off).min(len - done);
            f(&mut data[off..off + n], done);
            done += n;
        }
        Ok(())
    }
}

impl GuestMemory for VecGuestMemory {
    fn check_range(&self, gpa: GuestAddress, len: u64) -> Result<(), GuestMemoryError> {
        let err = GuestMemoryError {
            gpa: gpa.0,
            len: len as usize,
        };
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = gpa.0;
        let end = gpa.0.checked_add(len).ok_or(err)?;
        while at < end {
            let r = regions
                .iter()
                .find(|(base, data)| at >= *base && at < base + data.len() as u64)
                .ok_or(err)?;
            at = r.0 + r.1.len() as u64;
        }
        Ok(())
    }

    fn in_place(&self, gpa: GuestAddress, len: u64, f: &mut dyn FnMut(&mut [u8])) -> bool {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(end) = gpa.0.checked_add(len) else {
            return false;
        };
        let whole = regions
            .iter_mut()
            .find(|(base, data)| gpa.0 >= *base && end <= *base + data.len() as u64);
        match whole {
            Some((base, data)) => {
                let off = (gpa.0 - *base) as usize;
                f(&mut data[off..off + len as usize]);
                true
            }
            None => false,
        }
    }

    fn read(&self, gpa: GuestAddress, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.access(gpa, buf.len(), |region, off| {
            buf[off..off + region.len()].copy_from_slice(region)
        })
    }

    fn write(&self, gpa: GuestAddress, data: &[u8]) -> Result<(), GuestMemoryError> {
        self.access(gpa, data.len(), |region, off| {
            let n = region.len();
            region.copy_from_slice(&data[off..off + n])
        })
    }
}
