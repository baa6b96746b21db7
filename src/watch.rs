//! Reloads when the configuration file, or a certificate or key file it names,
//! changes. Directories are watched, not files: editors replace a file by writing a
//! temporary one and renaming it over, Kubernetes swaps a ConfigMap or Secret by
//! renaming the `..data` symlink the file points through, and certbot re-points
//! the symlinks in `live/`; in each case the watched inode goes away. For a path
//! that is a symlink, the directory of its target is watched too, so a target
//! rewritten in place is seen. Any event, after a quiet `DEBOUNCE`, leads to
//! reading the files; only a change of their content reloads.
//!
//! A certificate change goes through the whole reload: the files are checked as
//! `check` checks them, and a broken one is a rejected reload (logged, counted,
//! the old certificate kept serving).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::control::Control;

/// Bursts of events (write, chmod, rename of one save; a certificate and its key
/// replaced one after the other) settle within this; short enough that a change
/// applies well within a second.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A running file watch; dropping it stops the watch.
pub struct Watch {
    _watcher: Arc<Mutex<Dirs>>,
}

/// The watcher and the directories it watches.
struct Dirs {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl Dirs {
    /// Watches exactly `want`. A directory that cannot be watched is logged and
    /// left out; the configuration file's own is checked by `watch` up front.
    fn sync(&mut self, want: BTreeSet<PathBuf>) {
        for gone in self.watched.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in want.difference(&self.watched) {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for certificate changes; reload with SIGHUP or the admin API");
            }
        }
        self.watched = want;
    }
}

/// Watches `control`'s file and the certificate files of the configuration it
/// runs; the returned `Watch` must be kept alive.
pub fn watch(control: Arc<Control>, runtime: &tokio::runtime::Handle) -> notify::Result<Watch> {
    let file = control.source().to_path_buf();
    let config_dir = dir_of(&file);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok() {
            let _ = tx.send(());
        }
    })?;
    // The configuration's own directory must be watchable; the error is the caller's.
    watcher.watch(&config_dir, RecursiveMode::NonRecursive)?;
    let mut dirs = Dirs {
        watcher,
        watched: BTreeSet::from([config_dir.clone()]),
    };
    let mut tls_files = control.shared.config().tls_files();
    dirs.sync(dirs_for(&file, &tls_files));
    let dirs = Arc::new(Mutex::new(dirs));
    let weak: Weak<Mutex<Dirs>> = Arc::downgrade(&dirs);
    let mut last = Contents::default();
    last.read(&file, &tls_files);
    runtime.spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst end.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            // File reads block: off the runtime, as the reload itself.
            let (f, t) = (file.clone(), tls_files.clone());
            let Ok(now) = tokio::task::spawn_blocking(move || {
                let mut now = Contents::default();
                now.read(&f, &t);
                now
            })
            .await
            else {
                continue;
            };
            // A configuration file that is gone for now (mid-swap) is no change.
            if now.0.get(&file).is_none_or(Option::is_none) || now == last {
                continue;
            }
            last = now;
            tracing::info!(file = %file.display(), "configuration or certificate files changed; reloading");
            let _ = control.reload_async().await;
            // The new configuration may name other certificate files.
            let files = control.shared.config().tls_files();
            if files != tls_files {
                tls_files = files;
                // Files new to the watch: their content as of now is the baseline.
                let (f, t) = (file.clone(), tls_files.clone());
                if let Ok(l) = tokio::task::spawn_blocking(move || {
                    let mut l = last;
                    l.read(&f, &t);
                    l
                })
                .await
                {
                    last = l;
                } else {
                    last = Contents::default();
                }
                let Some(dirs) = weak.upgrade() else { return };
                dirs.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sync(dirs_for(&file, &tls_files));
            }
        }
    });
    tracing::info!(dir = %config_dir.display(), "watching the configuration file");
    Ok(Watch { _watcher: dirs })
}

/// The content of each watched file (`None`: unreadable now).
#[derive(Default, PartialEq, Eq)]
struct Contents(BTreeMap<PathBuf, Option<Vec<u8>>>);

impl Contents {
    /// Reads those of the configuration file and `tls_files` not known yet, and
    /// forgets files no longer watched.
    fn read(&mut self, file: &Path, tls_files: &[PathBuf]) {
        self.0
            .retain(|p, _| p.as_path() == file || tls_files.contains(p));
        for p in std::iter::once(file).chain(tls_files.iter().map(PathBuf::as_path)) {
            if !self.0.contains_key(p) {
                self.0.insert(p.to_owned(), std::fs::read(p).ok());
            }
        }
    }
}

/// Every directory to watch: each file's own, and its symlink target's.
fn dirs_for(file: &Path, tls_files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for p in std::iter::once(file).chain(tls_files.iter().map(PathBuf::as_path)) {
        dirs.insert(dir_of(p));
        if let Ok(target) = std::fs::canonicalize(p) {
            dirs.insert(dir_of(&target));
        }
    }
    dirs
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
