//! Reloads when the configuration file changes. The file's directory is watched,
//! not the file: editors replace a file by writing a temporary one and renaming it
//! over, and Kubernetes swaps a ConfigMap by renaming the `..data` symlink the file
//! points through; in both cases the watched inode goes away. Any event in the
//! directory, after a quiet `DEBOUNCE`, leads to reading the file; only a change of
//! its content reloads.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::control::Control;

/// Bursts of events (write, chmod, rename of one save) settle within this; short
/// enough that a change applies well within a second.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches `control`'s file; the returned watcher must be kept alive.
pub fn watch(
    control: Arc<Control>,
    runtime: &tokio::runtime::Handle,
) -> notify::Result<notify::RecommendedWatcher> {
    let file = control.source().to_path_buf();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok() {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut last = std::fs::read(&file).ok();
    runtime.spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst end.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let now = std::fs::read(&file).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            tracing::info!(file = %file.display(), "configuration file changed; reloading");
            let _ = control.reload();
        }
    });
    tracing::info!(dir = %dir.display(), "watching the configuration file");
    Ok(watcher)
}
