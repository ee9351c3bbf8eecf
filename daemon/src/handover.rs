//! Handing the daemon's directories to its service user before root is dropped.
//!
//! Started as root, lokeyd creates its data directory and its socket, then becomes
//! `daemon.user` (`lokey`). From then on that user must be able to use both: open and write the
//! store, and remove the socket at exit (which needs write access to the socket's directory,
//! not to the socket). This module makes that so for what lokeyd created and checks it for what
//! it found:
//!
//! - Every directory lokeyd created ([`missing_dirs`], recorded before creating), and the
//!   socket, become the user's. Directories that existed before are the administrator's: they
//!   are checked, never taken over (the data directory itself excepted: it is the store's, and
//!   is given to the user as a whole, as before).
//! - The kernel is then asked, as the user ([`lokey::privilege::first_denied_as`]), whether the
//!   user can pass through every directory above the data directory and the socket, read and
//!   write the data directory, and create and remove files in the socket's directory. Where it
//!   cannot, the start is refused ([`Unreachable`]) with the directory, the user and the fix,
//!   while still root, so the socket just bound is removed again.
//!
//! Without this, such a start ran without its store (the user could not open it) and left its
//! socket behind at exit.

use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, User};

/// The directories that creating `path` with `create_dir_all` would create: `path` and its
/// missing ancestors, deepest first. Empty when `path` exists.
#[must_use]
pub fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| std::fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// What the service user needs of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Pass through it (search, `x`) on the way to the daemon's files.
    Pass,
    /// Read, write and search it: the data directory.
    Store,
    /// Create and remove files in it (write and search): the socket's directory.
    Socket,
}

impl Need {
    fn flags(self) -> AccessFlags {
        match self {
            Need::Pass => AccessFlags::X_OK,
            Need::Store => AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK,
            Need::Socket => AccessFlags::W_OK | AccessFlags::X_OK,
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The service user could not use a directory it needs.
    #[error(transparent)]
    Unreachable(Box<Unreachable>),
    /// Giving a directory to the user, or asking the kernel, failed.
    #[error("{what}: {reason}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

/// A directory the service user cannot use as it must.
#[derive(Debug, thiserror::Error)]
#[error(
    "user {user} cannot {verb} {dir}, which it needs for {purpose} {target}: lokeyd started as \
     root runs as {user} (daemon.user). Fix: {fix}, choose a {flag} in a directory {user} can \
     write, or start lokeyd with --user naming a user who can"
)]
pub struct Unreachable {
    /// The service user.
    pub user: String,
    /// The directory it cannot use.
    pub dir: PathBuf,
    /// What it needs there.
    pub need: Need,
    /// The data directory or the socket this is about.
    pub target: PathBuf,
    verb: &'static str,
    purpose: &'static str,
    fix: String,
    flag: &'static str,
}

/// What the daemon needs its user to reach: its data directory (`None` when there is none to
/// check, e.g. it could not be created) and its socket.
#[derive(Debug)]
pub struct Needs<'a> {
    /// The data directory.
    pub data_dir: Option<&'a Path>,
    /// The socket (bound).
    pub socket: &'a Path,
}

/// Gives `created` (directories lokeyd made, see [`missing_dirs`]) to `user`, then refuses
/// unless `user` can use what `needs` names (see the module docs).
///
/// # Errors
///
/// [`HandoverError::Unreachable`] naming the first directory the user cannot use;
/// [`HandoverError::Failed`] when a change of owner or the check itself fails.
pub fn hand_over(user: &User, created: &[PathBuf], needs: &Needs<'_>) -> Result<(), HandoverError> {
    for dir in created {
        nix::unistd::chown(dir.as_path(), Some(user.uid), Some(user.gid)).map_err(|e| {
            HandoverError::Failed {
                what: format!("cannot give {} to user {}", dir.display(), user.name),
                reason: e.to_string(),
            }
        })?;
    }
    // (directory, what is needed, whether it is for the socket)
    let mut checks: Vec<(PathBuf, Need, bool)> = Vec::new();
    let mut add = |for_socket: bool, dir: &Path, need: Need| -> Result<(), HandoverError> {
        // Absolute and without symbolic links: the directories the kernel walks through.
        let dir = std::fs::canonicalize(dir).map_err(|e| HandoverError::Failed {
            what: format!("cannot resolve {}", dir.display()),
            reason: e.to_string(),
        })?;
        for above in dir
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            checks.push((above.to_path_buf(), Need::Pass, for_socket));
        }
        checks.push((dir, need, for_socket));
        Ok(())
    };
    if let Some(data) = needs.data_dir {
        add(false, data, Need::Store)?;
    }
    let socket_dir = match needs.socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    add(true, socket_dir, Need::Socket)?;
    let asked: Vec<(&Path, AccessFlags)> = checks
        .iter()
        .map(|(dir, need, _)| (dir.as_path(), need.flags()))
        .collect();
    let denied =
        lokey::privilege::first_denied_as(user, &asked).map_err(|e| HandoverError::Failed {
            what: format!("cannot check what user {} may access", user.name),
            reason: e.to_string(),
        })?;
    let Some(i) = denied else {
        return Ok(());
    };
    let (dir, need, is_socket) = checks.swap_remove(i);
    let target = if is_socket {
        needs.socket
    } else {
        needs.data_dir.unwrap_or(needs.socket)
    };
    let (verb, fix) = match need {
        Need::Pass => (
            "pass through",
            format!("let it pass (chmod o+x {})", dir.display()),
        ),
        Need::Store => (
            "read and write",
            format!(
                "give it to the user (chown -R {} {})",
                user.name,
                dir.display()
            ),
        ),
        Need::Socket => (
            "create and remove files in",
            format!(
                "give it to the user (chown {} {})",
                user.name,
                dir.display()
            ),
        ),
    };
    Err(Box::new(Unreachable {
        user: user.name.clone(),
        dir,
        need,
        target: target.to_path_buf(),
        verb,
        purpose: if is_socket {
            "its socket"
        } else {
            "its data directory"
        },
        fix,
        flag: if is_socket { "--socket" } else { "--data-dir" },
    })
    .into())
}

impl From<Box<Unreachable>> for HandoverError {
    fn from(e: Box<Unreachable>) -> HandoverError {
        HandoverError::Unreachable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dirs_are_the_path_and_its_missing_ancestors_deepest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("c");
        assert_eq!(
            missing_dirs(&path),
            [
                path.clone(),
                dir.path().join("a").join("b"),
                dir.path().join("a")
            ]
        );
        std::fs::create_dir_all(&path).unwrap();
        assert!(missing_dirs(&path).is_empty());
        assert_eq!(missing_dirs(Path::new("")), Vec::<PathBuf>::new());
    }
}
