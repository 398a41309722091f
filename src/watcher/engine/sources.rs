//! The log files: logpath globs expanded, new files followed, rotation
//! handled by the follower, and the names inotify should wake us for.

use super::*;

/// Most bytes read from one file per poll; bounds one transaction.
pub(super) const CHUNK_BYTES: usize = 4 << 20;

pub(super) fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Compressed rotations are never read, even when a glob matches them.
pub(super) fn compressed(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("gz" | "xz" | "bz2" | "zst" | "lz4" | "zip")
    )
}

impl<E: Enforcer> Watcher<E> {
    /// Expands every jail's logpaths and starts following new files.
    pub(super) fn scan(&mut self) {
        let first = !self.started;
        let fresh = std::mem::take(&mut self.fresh);
        let mut found: Vec<(PathBuf, usize, Duration)> = Vec::new();
        for (ji, jail) in self.settings.jails.iter().enumerate() {
            for pat in &jail.logpaths {
                if is_glob(pat) {
                    if let Ok(paths) = glob::glob(pat) {
                        for p in paths.flatten() {
                            if p.is_file() && !compressed(&p) {
                                found.push((p, ji, jail.rules.findtime));
                            }
                        }
                    }
                } else {
                    found.push((PathBuf::from(pat), ji, jail.rules.findtime));
                }
            }
        }
        for (path, ji, findtime) in found {
            if let Some(&si) = self.by_path.get(&path) {
                let s = &mut self.sources[si];
                if !s.jails.contains(&ji) {
                    s.jails.push(ji);
                }
                continue;
            }
            let start = match self.state.position(&path) {
                Ok(Some(pos)) => Start::Resume(pos),
                Ok(None) if (first || fresh.contains(&ji)) && path.exists() => {
                    Start::Tail(findtime)
                }
                Ok(None) => Start::Beginning,
                Err(e) => {
                    self.stats.db_errors += 1;
                    self.errors.error("db", &format!("{e}"));
                    continue;
                }
            };
            tracing::info!(path = %path.display(), start = ?start, "following log");
            self.by_path.insert(path.clone(), self.sources.len());
            self.sources.push(Source {
                follower: Follower::new(path, start),
                jails: vec![ji],
            });
        }
    }

    /// Polls one file and handles its lines; true when there may be more.
    pub(super) fn poll_source(&mut self, si: usize) -> bool {
        let before = self.sources[si].follower.position();
        let skipped_before = skipped(&self.sources[si].follower.stats);
        let chunk = self.sources[si]
            .follower
            .poll(CHUNK_BYTES, SystemTime::now());
        let skipped_now = skipped(&self.sources[si].follower.stats) - skipped_before;
        for &ji in &self.sources[si].jails {
            self.metrics
                .lines_n(&self.settings.jails[ji].name, "skipped", skipped_now);
        }
        let path = self.sources[si].follower.path().to_path_buf();
        for n in &chunk.notes {
            tracing::info!(path = %path.display(), "{n}");
        }
        if chunk.lines.is_empty() && chunk.position == before {
            return false;
        }
        let jails: Vec<usize> = self.sources[si].jails.clone();
        let more = !chunk.lines.is_empty();
        match self.handle_lines(&path, &jails, &chunk.lines, chunk.position.as_ref()) {
            Ok(new_bans) => {
                if !new_bans.is_empty() {
                    self.apply(&new_bans);
                }
                more
            }
            Err(e) => {
                self.stats.db_errors += 1;
                self.errors
                    .error("db", &format!("{e}; the lines will be read again"));
                if let Some(p) = before {
                    self.sources[si].follower.rewind(&p);
                }
                false
            }
        }
    }

    /// Adds an inotify watch for every log directory (again after a reload:
    /// watching a directory twice is harmless).
    pub(super) fn watch_all(&self, ino: &crate::sys::Inotify) {
        for d in self.watch_dirs() {
            if let Err(e) = ino.watch_dir(&d) {
                tracing::debug!(dir = %d.display(), error = %e, "no inotify watch; polling");
            }
        }
    }

    /// Directories to watch with inotify: the parent of each logpath (for a
    /// glob, of its first component without wildcards).
    pub(super) fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for j in &self.settings.jails {
            for p in &j.logpaths {
                let mut d = PathBuf::new();
                for c in Path::new(p).components() {
                    if is_glob(&c.as_os_str().to_string_lossy()) {
                        break;
                    }
                    d.push(c);
                }
                // A literal path names the file: watch its directory.
                if !is_glob(p) {
                    d.pop();
                }
                if !d.as_os_str().is_empty() && !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs
    }

    /// True when a changed directory entry `name` may be one of our logs.
    /// Changes to anything else in the directory (our own trace or log
    /// output, other programs' logs) must not wake us: that could feed back.
    pub(super) fn is_log_name(&self, name: &std::ffi::OsStr) -> bool {
        let name = name.to_string_lossy();
        self.settings
            .jails
            .iter()
            .flat_map(|j| &j.logpaths)
            .any(|p| {
                let last = Path::new(p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if is_glob(&last) {
                    glob::Pattern::new(&last).is_ok_and(|g| g.matches(&name))
                } else {
                    // Also the rotated copy (`x.log.1`) that we may still finish.
                    name == last || name.starts_with(&format!("{last}."))
                }
            })
    }
}
