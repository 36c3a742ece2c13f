//! The policy directory (`--policies`) as last listed: which files it holds and whether any of
//! them changed since the last look.
//!
//! The loop looks every 2 s. With thousands of files, parsing, indexing and checking every
//! policy at every look cost most of the daemon's CPU while nothing changed. Now a look stats
//! the directories: a file added, removed or replaced (editors, `git`, `kubectl cp` of a new
//! file and a ConfigMap volume's `..data` swap all rename or create) changes one of their
//! times and the files are listed and stat'ed again; so they are every [`FULL_LOOK`] anyway,
//! which is when a file edited in place (same inode, same directory) is noticed. Only a
//! difference makes the loop gather policies again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often every file is stat'ed even when no directory changed.
pub const FULL_LOOK: Duration = Duration::from_secs(10);

/// What tells one version of a file from another without reading it: its inode (a file
/// replaced by a rename, as editors, `git` and a ConfigMap volume's `..data` swap do, is a new
/// inode even with the same time and size), modification and change times, and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    inode: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    len: u64,
}

impl Stamp {
    /// The stamp of the file `path` names (symlinks followed); `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp::from_metadata(&m))
    }

    #[cfg(unix)]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            inode: m.ino(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
            len: m.size(),
        }
    }

    #[cfg(not(unix))]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        let nanos = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        Stamp { inode: 0, modified: (nanos, 0), changed: (0, 0), len: m.len() }
    }
}

/// The files below a policy directory and their stamps, in path order.
#[derive(Debug)]
pub struct PolicyDir {
    root: PathBuf,
    listing: Vec<(PathBuf, Option<Stamp>)>,
    /// The directories walked, with their stamps at the last full look.
    dirs: Vec<(PathBuf, Option<Stamp>)>,
    /// When every file was last listed and stat'ed (`None`: never).
    full_look: Option<Instant>,
    /// The last listing error (logged once, not at every look).
    error: Option<String>,
}

impl PolicyDir {
    pub fn new(root: PathBuf) -> Self {
        PolicyDir { root, listing: Vec::new(), dirs: Vec::new(), full_look: None, error: None }
    }

    /// Looks at the directory again; `true` when a file was added, removed or changed since
    /// the last look (always at the first). Cheap while no directory changed: the files are
    /// listed and stat'ed only then and every [`FULL_LOOK`]. A directory that cannot be read
    /// keeps the last listing: a transient error must not look like every file removed.
    pub fn rescan(&mut self) -> bool {
        let recent = self.full_look.is_some_and(|t| t.elapsed() < FULL_LOOK);
        if recent && self.dirs.iter().all(|(d, stamp)| Stamp::of(d) == *stamp) {
            return false;
        }
        let (files, dirs) = match crate::cli::validate::collect_with_dirs(std::slice::from_ref(&self.root)) {
            Ok(found) => {
                self.error = None;
                found
            }
            Err(e) => {
                if self.error.as_deref() != Some(e.as_str()) {
                    tracing::error!(error = %e, "cannot list the policy directory (--policies); keeping the policies last read until it can be: check that it exists and that the daemon's user may read it");
                    self.error = Some(e);
                }
                return false;
            }
        };
        let stamped = |paths: Vec<PathBuf>| -> Vec<(PathBuf, Option<Stamp>)> {
            paths
                .into_iter()
                .map(|p| {
                    let stamp = Stamp::of(&p);
                    (p, stamp)
                })
                .collect()
        };
        let listing = stamped(files);
        self.dirs = stamped(dirs);
        let changed = self.full_look.is_none() || listing != self.listing;
        self.listing = listing;
        self.full_look = Some(Instant::now());
        changed
    }

    /// The files as last listed, with their stamps (`None`: could not be stat'ed).
    pub fn files(&self) -> &[(PathBuf, Option<Stamp>)] {
        &self.listing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_reports_files_added_edited_replaced_and_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("a.yaml");
        let write = |p: &Path, text: &str| std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
        write(&file, "one");
        let mut policies = PolicyDir::new(dir.path().to_path_buf());
        assert!(policies.rescan(), "the first look reports everything");
        assert!(!policies.rescan(), "nothing changed");
        assert_eq!(policies.files().len(), 1);
        // Edited in place, same size: no directory changes, so it is noticed at the next full
        // look (its change time moved).
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&file, "two");
        assert!(!policies.rescan(), "not before the next full look");
        policies.full_look = policies.full_look.and_then(|t| t.checked_sub(FULL_LOOK));
        assert!(policies.rescan(), "an in-place edit is a change at the full look");
        // Replaced by a rename, as editors, git and ConfigMap volumes do: a new inode.
        let tmp = dir.path().join(".a.yaml.swp");
        write(&tmp, "two");
        std::fs::rename(&tmp, &file).unwrap_or_else(|e| panic!("{e}"));
        assert!(policies.rescan(), "a replaced file is a change");
        write(&dir.path().join("b.yml"), "three");
        write(&dir.path().join("notes.txt"), "not a policy");
        assert!(policies.rescan(), "an added policy file is a change");
        assert_eq!(policies.files().len(), 2);
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(policies.rescan(), "a removed file is a change");
        assert!(!policies.rescan());
    }

    #[test]
    fn a_directory_that_cannot_be_listed_keeps_the_last_listing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("policies");
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("a.yaml"), "x").unwrap_or_else(|e| panic!("{e}"));
        let mut policies = PolicyDir::new(root.clone());
        assert!(policies.rescan());
        std::fs::rename(&root, dir.path().join("elsewhere")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!policies.rescan(), "a missing directory is not every policy removed");
        assert_eq!(policies.files().len(), 1);
    }
}
