//! Who may read what rill writes.
//!
//! State, dead-letter queues and a run's other private files hold whole
//! records: the `rill` binary calls [`private_by_default`] first thing, so
//! everything it creates is owner-only (files 0600, folders 0700) whatever
//! the umask. Output files that users and other tools read (a file sink's
//! output) get the usual permissions back with [`shared_file`]: 0666 less
//! the umask the process started with.

use std::sync::atomic::{AtomicU32, Ordering};

/// The umask the process started with, once [`private_by_default`] ran
/// (`u32::MAX` before).
static STARTED_WITH: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes every file and folder this process creates owner-only, and
/// remembers the umask it replaces.
pub fn private_by_default() {
    // SAFETY: umask only swaps the process's file-creation mask
    let old = unsafe { libc::umask(0o077) };
    STARTED_WITH.store(old, Ordering::SeqCst);
}

/// Gives a file the permissions it would have had without
/// [`private_by_default`] (for outputs meant to be shared); a no-op when
/// that was never called.
pub fn shared_file(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let umask = STARTED_WITH.load(Ordering::SeqCst);
    if umask == u32::MAX {
        return Ok(());
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask))
}

/// Creates `dir` and its missing parents with the permissions they would
/// have had without [`private_by_default`] (the folders of an output).
pub fn create_shared_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&std::path::Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    let umask = STARTED_WITH.load(Ordering::SeqCst);
    if umask != u32::MAX {
        for d in missing {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777 & !umask))?;
        }
    }
    Ok(())
}
