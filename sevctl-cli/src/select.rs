//! Which platform a command talks to: the device node, or the embedded firmware when asked
//! (`--emulated`) or when there is no device.

use std::path::{Path, PathBuf};

use sevd::paths::{published_ca, CA_FILE, DEFAULT_STATE_DIR};
use sevd::platform::{EmbeddedConfig, Platform};

use crate::error::Result;

/// The global options that choose the platform.
#[derive(Debug, Clone)]
pub struct Target {
    /// `--device`.
    pub device: PathBuf,
    /// `--emulated`.
    pub emulated: bool,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--product`: what a new embedded chip is made as (an existing one must be it).
    pub product: Option<sevd::part::Product>,
}

/// The embedded firmware's default state: `$XDG_STATE_HOME/sevctl` or
/// `~/.local/state/sevctl`, so it works without root.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("sevctl");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".local/state/sevctl")
}

impl Target {
    /// Whether commands go to the embedded firmware.
    pub fn is_embedded(&self) -> bool {
        self.emulated || !self.device.exists()
    }

    /// The state directory of the embedded firmware.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }

    /// The embedded platform's configuration.
    pub fn embedded(&self) -> EmbeddedConfig {
        let mut config = EmbeddedConfig::new(&self.state_dir());
        config.firmware.product = self.product;
        config
    }

    /// Opens the platform. The embedded firmware always says so on stderr, and why when it
    /// was not asked for.
    pub fn open(&self) -> Result<Platform> {
        if self.is_embedded() {
            let config = self.embedded();
            let dir = config.state_dir.display();
            if self.emulated {
                crate::steps::note(format!("using the embedded firmware (state in {dir})"));
            } else {
                crate::steps::note(format!(
                    "no SEV device at {}; using the embedded firmware (state in {dir})",
                    self.device.display(),
                ));
            }
            if !config.has_chip() {
                // RSA-4096 generation takes seconds: say so, so a first run never looks hung.
                crate::steps::note(
                    "making the embedded platform's chip identity (RSA-4096 ARK and ASK); this takes a few seconds, once",
                );
            }
            Ok(Platform::embedded(&config)?)
        } else {
            Ok(Platform::device(&self.device)?)
        }
    }

    /// AMD's part of the chain (ASK ‖ ARK) for this platform: given with `--ca`; the
    /// embedded firmware's own; or the one the sevd behind `--device` publishes, else the one
    /// in its default state directory.
    pub fn ca_file(&self, given: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = given {
            return Some(p.to_path_buf());
        }
        if self.is_embedded() {
            let published = EmbeddedConfig::new(&self.state_dir()).ca_file();
            return published.exists().then_some(published);
        }
        [
            published_ca(&self.device),
            Path::new(DEFAULT_STATE_DIR).join(CA_FILE),
        ]
        .into_iter()
        .find(|p| p.is_file())
    }
}
