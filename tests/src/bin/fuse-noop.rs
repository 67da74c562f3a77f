//! The benchmark's baseline: a minimal FUSE file whose every ioctl is answered at once with
//! its own argument, mounted at the path given, until SIGTERM.

use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use vfs::{
    Caller, CharDevice, DeviceFs, Errno, FileMode, IoctlReply, IoctlRequest, MountOptions, OpenFile,
};

struct Noop;

impl CharDevice for Noop {
    fn ioctl(&self, _: &Caller, _: &OpenFile, req: IoctlRequest<'_>) -> Result<IoctlReply, Errno> {
        Ok(IoctlReply::ok(req.in_data.to_vec()))
    }
}

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: fuse-noop MOUNTPOINT_DIR");
        std::process::exit(2);
    };
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if signals.thread_block().is_err() {
        std::process::exit(1);
    }
    let devs: Vec<(String, Arc<dyn CharDevice>)> = vec![("sev".into(), Arc::new(Noop))];
    let opts = MountOptions {
        fsname: "sevd-noop".into(),
        allow_other: false,
    };
    let mount = match vfs::mount(
        DeviceFs::dir(devs, FileMode::default()),
        path.as_ref(),
        &opts,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fuse-noop: mount: {e}");
            std::process::exit(1);
        }
    };
    let _ = signals.wait();
    let _ = mount.detach();
    std::process::exit(0);
}
