//! Where the firmware's nonces and guest keys come from. Injected, so that two firmwares
//! given the same source produce the same nonces (tests, and comparing embedded and daemon
//! runs).

use crate::crypto::{fill_random, hmac_sha256, CryptoError};

/// A source of random bytes.
pub trait RandomSource: Send {
    /// Fills `buf`.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), CryptoError>;
}

/// The system's CSPRNG (getrandom(2)).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), CryptoError> {
        fill_random(buf)
    }
}

/// A deterministic stream, HMAC-SHA256(seed, counter), for tests only: its output is
/// predictable by anyone who knows the seed.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    seed: [u8; 32],
    counter: u64,
}

impl SeededRandom {
    /// The stream for `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        SeededRandom { seed, counter: 0 }
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in buf.chunks_mut(32) {
            let block = hmac_sha256(&self.seed, &[&self.counter.to_le_bytes()])?;
            chunk.copy_from_slice(&block[..chunk.len()]);
            self.counter += 1;
        }
        Ok(())
    }
}
