//! What can go wrong, and the exit code each kind gets.

use sevd::platform::PlatformError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input is wrong: arguments, files, manifests. Exit 2.
    #[error("{0}")]
    Input(String),
    /// The guest owner refused the platform or the launch: chain or measurement. Exit 3.
    #[error("attestation refused: {0}")]
    Attestation(String),
    /// The platform refused or failed a command. Exit 4.
    #[error(transparent)]
    Platform(PlatformError),
    /// A migration's connection or stream failed: the peer is unreachable, silent, gone,
    /// refused the guest, or sent what is not a stream. Exit 5.
    #[error("migration failed: {0}")]
    Migration(String),
    /// What another sevctl process (a kept guest's) failed with, and its exit code.
    #[error("{message}")]
    Relayed {
        /// The exit code the other process gave it.
        code: u8,
        /// Its message.
        message: String,
    },
    /// Anything else: the platform cannot be reached (permission denied on the node, the
    /// embedded state in use by another process), I/O, the crypto library. Exit 1.
    #[error("{0}")]
    Other(String),
}

impl From<PlatformError> for CliError {
    /// Only a command the platform refused is exit 4; not reaching it is something else.
    fn from(e: PlatformError) -> Self {
        match &e {
            // `--device` names something that is no device (a directory, say).
            PlatformError::Open { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EISDIR | libc::ENOTDIR | libc::ENXIO | libc::ENODEV)
                ) =>
            {
                CliError::Input(e.to_string())
            }
            PlatformError::Open { .. } => CliError::Other(e.to_string()),
            // A state directory the user must fix (unsafe, not a directory, corrupt files).
            PlatformError::Embedded(b) if b.is_config() => CliError::Input(e.to_string()),
            PlatformError::Embedded(_) => CliError::Other(e.to_string()),
            _ => CliError::Platform(e),
        }
    }
}

impl CliError {
    /// What went wrong, without the kind's prefix: what a migration tells its peer.
    pub fn reason(&self) -> String {
        match self {
            CliError::Migration(m) => m.clone(),
            e => e.to_string(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Input(_) => 2,
            CliError::Attestation(_) => 3,
            CliError::Platform(_) => 4,
            CliError::Migration(_) => 5,
            CliError::Relayed { code, .. } => *code,
        }
    }
}

impl From<sevd::owner::ovmf::OvmfError> for CliError {
    fn from(e: sevd::owner::ovmf::OvmfError) -> Self {
        CliError::Input(e.to_string())
    }
}

impl From<sevd::owner::guid::BadGuid> for CliError {
    fn from(e: sevd::owner::guid::BadGuid) -> Self {
        CliError::Input(e.to_string())
    }
}

impl From<sevd::crypto::CryptoError> for CliError {
    fn from(e: sevd::crypto::CryptoError) -> Self {
        CliError::Other(e.to_string())
    }
}

/// `Result` with [`CliError`].
pub type Result<T> = std::result::Result<T, CliError>;

/// An input error with a message.
pub fn input(msg: impl Into<String>) -> CliError {
    CliError::Input(msg.into())
}
