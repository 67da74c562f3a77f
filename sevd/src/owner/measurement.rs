//! The launch measurement (firmware-semantics.md §7.1, API ≥ 0.17):
//! HMAC-SHA256(TIK, 0x04 ‖ API_MAJOR ‖ API_MINOR ‖ BUILD ‖ POLICY ‖ DIGEST ‖ MNONCE).

use crate::crypto::{hmac_sha256, CryptoError};

/// The "measure" channel context byte.
const CONTEXT_MEASURE: u8 = 0x04;

/// What the measurement binds besides the launch digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredPlatform {
    /// API major, as PLATFORM_STATUS reports it.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// Build.
    pub build: u8,
}

/// MEASURE for a launch digest and nonce.
pub fn measure(
    tik: &[u8; 16],
    platform: MeasuredPlatform,
    policy: u32,
    digest: &[u8; 32],
    mnonce: &[u8; 16],
) -> Result<[u8; 32], CryptoError> {
    hmac_sha256(
        tik,
        &[
            &[
                CONTEXT_MEASURE,
                platform.api_major,
                platform.api_minor,
                platform.build,
            ],
            &policy.to_le_bytes(),
            digest,
            mnonce,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AMDESE/sev-tool src/tests.cpp test_calc_measurement, also virtee/sev's `verify` test.
    #[test]
    fn matches_sev_tool_vector() {
        let tik: [u8; 16] = hex::decode("66320db73158a35a255d051758e95ed4")
            .unwrap()
            .try_into()
            .unwrap();
        let digest = crate::crypto::sha256(b"");
        let mnonce: [u8; 16] = hex::decode("4fbe0bedbad6c86ae8f68971d103e554")
            .unwrap()
            .try_into()
            .unwrap();
        let platform = MeasuredPlatform {
            api_major: 0,
            api_minor: 0x12,
            build: 0x0f,
        };
        let m = measure(&tik, platform, 0, &digest, &mnonce).unwrap();
        assert_eq!(
            hex::encode(m),
            "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
        );
    }
}
