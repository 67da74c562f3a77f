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
    /// The platform failed a command. Exit 4.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// Anything else (I/O on our own output, crypto library). Exit 1.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Input(_) => 2,
            CliError::Attestation(_) => 3,
            CliError::Platform(_) => 4,
        }
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
