//! A caller that never stops: `status-loop NODE` issues PLATFORM_STATUS on NODE in a loop and
//! prints `done` after each ioctl returns, whatever it returned, until it is killed.

use std::io::Write;

fn main() {
    let Some(node) = std::env::args_os().nth(1) else {
        eprintln!("usage: status-loop NODE");
        std::process::exit(2);
    };
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("status-loop: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    loop {
        // Every returned ioctl counts, whatever it returned: the test counts audit lines.
        let _ = tests::platform_status(&f);
        if writeln!(out, "done").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    }
}
