//! The program to run: found as execvp(3) finds it, with its arguments and environment
//! ready for an execve that allocates nothing after the fork.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// execvp(3)'s search path when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A program, its arguments and environment.
#[derive(Debug, Clone)]
pub struct Program {
    pub(crate) path: CString,
    shown: PathBuf,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Program {
    /// `name` with `args`, in this process's environment. A name without a slash is
    /// looked up in PATH; one that is not there is [`Error::NotFound`], one there that may
    /// not be executed [`Error::CannotRun`].
    pub fn new(name: &OsStr, args: &[OsString]) -> Result<Program, Error> {
        let path = find(name)?;
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| Error::CannotRun {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an argument or variable holds a NUL byte",
                ),
            })
        };
        let mut argv = vec![c(name)?];
        for a in args {
            argv.push(c(a)?);
        }
        let envp = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                c(OsStr::from_bytes(&kv))
            })
            .collect::<Result<_, _>>()?;
        Ok(Program {
            path: c(path.as_os_str())?,
            shown: path,
            argv,
            envp,
        })
    }

    /// Where it was found.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    pub(crate) fn argv_ptrs(&self) -> Vec<*const libc::c_char> {
        nul_terminated(&self.argv)
    }

    pub(crate) fn envp_ptrs(&self) -> Vec<*const libc::c_char> {
        nul_terminated(&self.envp)
    }

    /// What an execve of it that failed with `e` means.
    pub(crate) fn exec_error(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(self.shown.clone())
        } else {
            Error::CannotRun {
                path: self.shown.clone(),
                source: e,
            }
        }
    }
}

fn nul_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Finds `name` as execvp does: as given when it has a slash, else the first executable
/// file of that name in PATH (remembering one that exists but may not be run).
fn find(name: &OsStr) -> Result<PathBuf, Error> {
    if name.is_empty() {
        return Err(Error::NotFound(PathBuf::new()));
    }
    if name.as_bytes().contains(&b'/') {
        let p = PathBuf::from(name);
        return match p.metadata() {
            Ok(_) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(p)),
            Err(source) => Err(Error::CannotRun { path: p, source }),
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    find_in(name, &search)
}

/// Looks `name` up in the directories of `search` (PATH's form).
fn find_in(name: &OsStr, search: &OsStr) -> Result<PathBuf, Error> {
    let mut denied = None;
    for dir in std::env::split_paths(search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let p = dir.join(name);
        match p.metadata() {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(p),
            Ok(_) => {
                denied.get_or_insert(p);
            }
            Err(_) => {}
        }
    }
    match denied {
        Some(path) => Err(Error::CannotRun {
            path,
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        }),
        None => Err(Error::NotFound(PathBuf::from(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_in_path_and_a_missing_one_is_not_found() {
        let p = Program::new(OsStr::new("sh"), &[]).unwrap();
        assert!(p.path().is_absolute(), "{}", p.path().display());
        assert!(matches!(
            Program::new(OsStr::new("no-such-program-anywhere"), &[]),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            Program::new(OsStr::new("/nonexistent/x"), &[]),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn a_file_that_may_not_be_run_is_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plain");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let found = find_in(OsStr::new("plain"), &path);
        assert!(matches!(found, Err(Error::CannotRun { .. })));
    }
}
