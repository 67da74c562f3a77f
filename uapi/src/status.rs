//! Firmware status codes (`sev_ret_code` in psp-sev.h; AMD SEV API pub. 55766, "Status Codes").
//!
//! One table generates the enum, its conversions and its text, so there is no second list to
//! keep in step.

macro_rules! status_table {
    ($( $code:literal $variant:ident $name:literal $meaning:literal ;)*) => {
        /// A firmware status code, as the PSP returns it and the kernel writes into
        /// `sev_issue_cmd.error`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Status {
            $(
                #[doc = concat!($name, ": ", $meaning, ".")]
                $variant = $code,
            )*
        }

        impl Status {
            /// Every status, in code order.
            pub const ALL: &'static [Status] = &[$(Status::$variant),*];

            /// The specification's name (`INVALID_PLATFORM_STATE`).
            pub fn name(self) -> &'static str {
                match self { $(Status::$variant => $name,)* }
            }

            /// What the status means, for people.
            pub fn meaning(self) -> &'static str {
                match self { $(Status::$variant => $meaning,)* }
            }
        }

        impl TryFrom<u32> for Status {
            type Error = u32;
            /// The status for a code; the code itself when it is not one.
            fn try_from(code: u32) -> Result<Self, u32> {
                match code {
                    $($code => Ok(Status::$variant),)*
                    other => Err(other),
                }
            }
        }
    };
}

status_table! {
    0x00 Success "SUCCESS" "the command succeeded";
    0x01 InvalidPlatformState "INVALID_PLATFORM_STATE" "the platform state is invalid for this command";
    0x02 InvalidGuestState "INVALID_GUEST_STATE" "the guest state is invalid for this command";
    0x03 InvalidConfig "INVALID_CONFIG" "the platform configuration is invalid";
    0x04 InvalidLength "INVALID_LENGTH" "a buffer is too small or a length is invalid";
    0x05 AlreadyOwned "ALREADY_OWNED" "the platform is already owned";
    0x06 InvalidCertificate "INVALID_CERTIFICATE" "the certificate is invalid";
    0x07 PolicyFailure "POLICY_FAILURE" "the request is not allowed by the guest policy";
    0x08 Inactive "INACTIVE" "the guest is not active";
    0x09 InvalidAddress "INVALID_ADDRESS" "an address is invalid";
    0x0A BadSignature "BAD_SIGNATURE" "a signature does not verify";
    0x0B BadMeasurement "BAD_MEASUREMENT" "a MAC or measurement does not verify";
    0x0C AsidOwned "ASID_OWNED" "the ASID is already owned";
    0x0D InvalidAsid "INVALID_ASID" "the ASID is invalid";
    0x0E WbinvdRequired "WBINVD_REQUIRED" "WBINVD must be executed first";
    0x0F DfFlushRequired "DF_FLUSH_REQUIRED" "DF_FLUSH must be issued first";
    0x10 InvalidGuest "INVALID_GUEST" "the guest handle is invalid";
    0x11 InvalidCommand "INVALID_COMMAND" "the command is not recognised";
    0x12 Active "ACTIVE" "the guest is active";
    0x13 HwerrorPlatform "HWERROR_PLATFORM" "a hardware condition prevents the command";
    0x14 HwerrorUnsafe "HWERROR_UNSAFE" "a hardware condition made the platform unsafe";
    0x15 Unsupported "UNSUPPORTED" "the feature is not supported";
    0x16 InvalidParam "INVALID_PARAM" "a parameter is invalid";
    0x17 ResourceLimit "RESOURCE_LIMIT" "the firmware is out of a resource";
    0x18 SecureDataInvalid "SECURE_DATA_INVALID" "the persistent secure data failed its integrity check";
    0x19 InvalidPageSize "INVALID_PAGE_SIZE" "the RMP page size is wrong";
    0x1A InvalidPageState "INVALID_PAGE_STATE" "the RMP page state is wrong";
    0x1B InvalidMdataEntry "INVALID_MDATA_ENTRY" "the metadata entry is invalid";
    0x1C InvalidPageOwner "INVALID_PAGE_OWNER" "the page ownership is wrong";
    0x1D AeadOflow "AEAD_OFLOW" "the AEAD algorithm would overflow";
    0x1F ExitRingBuffer "EXIT_RING_BUFFER" "the ring buffer was exited";
    0x20 RmpInitRequired "RMP_INIT_REQUIRED" "the RMP must be initialised first";
    0x21 BadSvn "BAD_SVN" "the security version number is too low";
    0x22 BadVersion "BAD_VERSION" "the version is invalid";
    0x23 ShutdownRequired "SHUTDOWN_REQUIRED" "the platform must be shut down first";
    0x24 UpdateFailed "UPDATE_FAILED" "the update failed";
    0x25 RestoreRequired "RESTORE_REQUIRED" "a restore is required";
    0x26 RmpInitializationFailed "RMP_INITIALIZATION_FAILED" "the RMP failed to initialise";
    0x27 InvalidKey "INVALID_KEY" "the key is invalid";
}

/// `SEV_RET_NO_FW_CALL` (-1 as u32): the driver failed before calling the firmware.
pub const SEV_RET_NO_FW_CALL: u32 = u32::MAX;

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (0x{:02x}): {}",
            self.name(),
            *self as u32,
            self.meaning()
        )
    }
}

/// Describes any value found in an `error` field, known or not.
pub fn describe(code: u32) -> String {
    match Status::try_from(code) {
        Ok(status) => status.to_string(),
        Err(SEV_RET_NO_FW_CALL) => "NO_FW_CALL: the firmware was not called".to_string(),
        Err(other) => format!("unknown firmware status 0x{other:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for &status in Status::ALL {
            assert_eq!(Status::try_from(status as u32), Ok(status));
            assert!(status.to_string().starts_with(status.name()));
        }
        assert_eq!(Status::ALL.len(), 0x27);
        assert_eq!(Status::try_from(0x1E), Err(0x1E));
        assert_eq!(Status::try_from(0x28), Err(0x28));
        assert_eq!(
            describe(4),
            "INVALID_LENGTH (0x04): a buffer is too small or a length is invalid"
        );
        assert!(describe(u32::MAX).starts_with("NO_FW_CALL"));
    }
}
