//! The object store behind the tier, chosen by URL.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::TierError;
use crate::remote_partition::MANIFEST;

/// Length of a topic id in a topic directory's name: a UUID in its simple form (32 lowercase
/// hex digits, as `Uuid::simple` writes it).
const TOPIC_ID_CHARS: usize = 32;

/// An object store and the prefix under which Strata keeps its data.
///
/// URLs: `file:///abs/path`, `memory://` (tests), `s3://bucket/prefix`, `gs://bucket/prefix`,
/// `az://container/prefix` (and the other forms `object_store` accepts). Cloud stores take
/// their settings from the process environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...) and from
/// explicit `options`, which win over the environment.
///
/// A `file://` store writes each object to a staging file `<object>#<n>` next to it and
/// renames it into place when complete; a process killed mid-write leaves the staging file,
/// which the store's listings hide. The tier deletes those itself
/// ([`RemotePartition::clean_orphans`](crate::RemotePartition::clean_orphans),
/// [`TierStore::delete_topic_dir`]). Cloud stores have no such files, but an abandoned S3
/// (or GCS, Azure) multipart upload keeps its parts, invisible to listings and billed, until
/// it is aborted: as Kafka's tiered storage documentation also advises, give the bucket a
/// lifecycle rule that aborts incomplete multipart uploads after a day or so.
#[derive(Clone, Debug)]
pub struct TierStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    url: String,
    /// For a `file://` store: the folder of its root (`scoped` included), which the tier
    /// reads and writes directly only to delete staging files.
    local_root: Option<PathBuf>,
}

impl TierStore {
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, TierError> {
        let parsed =
            Url::parse(url).map_err(|e| TierError::Config(format!("{url:?} is not a URL: {e}")))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|()| TierError::Config(format!("{url} is not a local path")))?;
            // LocalFileSystem creates directories as it writes, but the root itself must
            // exist for listing to work.
            std::fs::create_dir_all(&dir)
                .map_err(TierError::io(format!("creating {}", dir.display())))?;
            // Directories emptied by deletions are removed (below the root), as object
            // stores have no directories: a deleted partition or topic leaves nothing that
            // a listing would still show.
            let store = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| TierError::Config(format!("{url}: {e}")))?
                .with_automatic_cleanup(true);
            // Where the store's paths are: it canonicalised the folder.
            let local_root = std::fs::canonicalize(&dir)
                .map_err(TierError::io(format!("resolving {}", dir.display())))?;
            return Ok(TierStore {
                store: Arc::new(store),
                root: Path::ROOT,
                url: url.to_string(),
                local_root: Some(local_root),
            });
        }
        let mut settings: Vec<(String, String)> = std::env::vars().collect();
        settings.extend(options.iter().cloned());
        let (store, root) = object_store::parse_url_opts(&parsed, settings)
            .map_err(|e| TierError::Config(format!("{url}: {e}")))?;
        Ok(TierStore {
            store: Arc::from(store),
            root,
            url: url.to_string(),
            local_root: None,
        })
    }

    /// The URL this store was opened from, for logs and metrics.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same store with its root narrowed to `prefix` below the current root (the broker
    /// scopes everything under its cluster id, so clusters sharing a bucket never see each
    /// other's objects). `prefix` may hold several `/`-separated parts; empty parts are
    /// ignored and characters object stores cannot take are percent-encoded, so a prefix can
    /// never climb out of the root. [`TierStore::url`] is unchanged.
    pub fn scoped(&self, prefix: &str) -> TierStore {
        let mut root = self.root.clone();
        let before = root.parts().count();
        root.extend(prefix.split(object_store::path::DELIMITER));
        let local_root = self.local_root.as_ref().map(|dir| {
            let mut dir = dir.clone();
            dir.extend(
                root.parts()
                    .skip(before)
                    .map(|part| part.as_ref().to_string()),
            );
            dir
        });
        TierStore {
            store: Arc::clone(&self.store),
            root,
            url: self.url.clone(),
            local_root,
        }
    }

    /// The topic directories directly under the root, as (topic, topic id), sorted: every
    /// directory named `<topic>-<topic id>` whose topic id (after the last `-`: topic names
    /// may contain `-`, ids do not) is 32 lowercase hex digits and whose topic is not empty.
    /// Other names are not the tier's and are ignored. For the broker's garbage collection of
    /// deleted topics: a topic id the metadata image does not know is a deleted topic, whose
    /// pair goes to [`TierStore::delete_topic_dir`].
    pub async fn list_topic_dirs(&self) -> Result<Vec<(String, String)>, TierError> {
        let listing = self.store.list_with_delimiter(self.root_prefix()).await?;
        let mut dirs: Vec<(String, String)> = listing
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename())
            .filter_map(parse_topic_dir)
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Deletes every object under `<topic>-<topic_id>/`: first each partition's
    /// `manifest.json` (so a deletion cut short never leaves a manifest naming missing
    /// objects), then everything else. Idempotent (objects already gone are fine): call again
    /// until it succeeds. Returns how many objects this call deleted. Memory stays bounded
    /// whatever the number of objects: listings are streamed, never collected.
    ///
    /// For a `file://` store, the staging files that writes cut short by a crash left in the
    /// topic's folder (`<object>#<n>`, hidden from listings) are deleted too, and counted,
    /// then the topic's folder itself goes, whatever is left in it. As for any deletion of a
    /// topic's data, nothing may still be uploading to the topic.
    pub async fn delete_topic_dir(&self, topic: &str, topic_id: &str) -> Result<usize, TierError> {
        let dir = self.path(&[&format!("{topic}-{topic_id}")]);
        let mut deleted = 0usize;
        // Manifests first. Partition directories are `<dir>/<partition>/`; a manifest sits
        // directly in one, so only listings of those are needed, not the whole tree.
        let partitions = self.store.list_with_delimiter(Some(&dir)).await?;
        for partition in &partitions.common_prefixes {
            let manifest = partition.clone().join(MANIFEST);
            // Some stores (S3) answer a deletion of a missing object with success; asking
            // first keeps the count true when a deletion is retried.
            match self.store.head(&manifest).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            match self.store.delete(&manifest).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Then everything else, streamed through the store's bulk deletion.
        let locations = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut results = self.store.delete_stream(locations);
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Last, for a local store: what its listings do not show, and the folders.
        if let Some(local) = self.local_dir(&dir) {
            deleted += blocking(move || {
                let staging = delete_staging_files(&local, true)?;
                match std::fs::remove_dir_all(&local) {
                    Ok(()) => Ok(staging),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(staging),
                    Err(e) => Err(TierError::io(format!("removing {}", local.display()))(e)),
                }
            })
            .await?;
        }
        Ok(deleted)
    }

    /// The local folder of `path` (a path below the root) for a `file://` store; `None` for
    /// other stores. The store maps each part of a path to a file name as it is written
    /// (percent-encoded).
    pub(crate) fn local_dir(&self, path: &Path) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        let rest = path.prefix_match(&self.root)?;
        let mut dir = root.clone();
        dir.extend(rest.map(|part| part.as_ref().to_string()));
        Some(dir)
    }

    /// The local folder of the root, for a `file://` store.
    pub(crate) fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// The root as a listing prefix (`None` for the store's own root).
    fn root_prefix(&self) -> Option<&Path> {
        (!self.root.as_ref().is_empty()).then_some(&self.root)
    }

    pub(crate) fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |p, part| p.join(*part))
    }
}

/// Runs blocking file-system work of a `file://` store off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TierError> + Send + 'static,
) -> Result<T, TierError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TierError::Io {
            context: "local file-system task".into(),
            source: std::io::Error::other(e),
        })?
}

/// Whether a file name in a `file://` store's folder is a staging file: the store writes an
/// object to `<name>#<n>` and renames it when complete, and object names the tier writes never
/// hold `#`.
pub(crate) fn is_staging_file(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().contains(&b'#')
}

/// Deletes the staging files in `dir` (in its subfolders too when `recursive`); a missing
/// folder has none. Returns how many it deleted. Symbolic links are not followed.
pub(crate) fn delete_staging_files(dir: &FsPath, recursive: bool) -> Result<usize, TierError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(TierError::io(format!("listing {}", dir.display()))(e)),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry.map_err(TierError::io(format!("listing {}", dir.display())))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(TierError::io(format!(
            "reading the type of {}",
            path.display()
        )))?;
        if kind.is_dir() {
            if recursive {
                deleted += delete_staging_files(&path, true)?;
            }
            continue;
        }
        if !is_staging_file(&entry.file_name()) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TierError::io(format!("deleting {}", path.display()))(e)),
        }
    }
    Ok(deleted)
}

/// Removes `dir` and then its parents while they are empty, up to (not including) `root`.
/// Errors (a folder not empty, already gone, ...) just stop it: folders are tidiness, not
/// data.
pub(crate) fn remove_empty_dirs(dir: &FsPath, root: &FsPath) {
    let mut dir = Some(dir);
    while let Some(d) = dir.filter(|d| *d != root && d.starts_with(root)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// `<topic>-<topic id>` → (topic, topic id), split at the last `-` (topic names may contain
/// `-`, topic ids never do); `None` for any other name.
fn parse_topic_dir(name: &str) -> Option<(String, String)> {
    let (topic, id) = name.rsplit_once('-')?;
    let is_id = id.len() == TOPIC_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_id && !topic.is_empty()).then(|| (topic.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_dir_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_topic_dir(&format!("orders-{id}")),
            Some(("orders".into(), id.into()))
        );
        assert_eq!(
            parse_topic_dir(&format!("my-topic-v2-{id}")),
            Some(("my-topic-v2".into(), id.into())),
            "split at the last '-'"
        );
        for bad in [
            "orders".to_string(),
            format!("-{id}"),
            "orders-0123".into(),
            format!("orders-{}", &id[..31]),
            format!("orders-{id}0"),
            "orders-0123456789abcdef0123456789abcdeg".into(),
            format!("orders-{id}-x"),
            "orders-0123456789ABCDEF0123456789ABCDEF".into(),
        ] {
            assert_eq!(parse_topic_dir(&bad), None, "{bad}");
        }
    }

    #[test]
    fn scoping_nests_the_root() {
        let store = TierStore::open("memory://", &[]).unwrap();
        let scoped = store.scoped("cluster-a");
        assert_eq!(scoped.path(&["x"]).as_ref(), "cluster-a/x");
        assert_eq!(scoped.url(), store.url());
        let deeper = scoped.scoped("/b//c/");
        assert_eq!(deeper.path(&["x"]).as_ref(), "cluster-a/b/c/x");
        // A prefix cannot climb out of the root.
        assert_eq!(store.scoped("..").path(&["x"]).as_ref(), "%2E%2E/x");
        assert_eq!(store.local_dir(&store.path(&["x"])), None);
    }

    #[test]
    fn local_folders_are_where_the_store_writes() {
        let root = tempfile::tempdir().unwrap();
        let url = format!("file://{}/tier", root.path().display());
        let store = TierStore::open(&url, &[]).unwrap();
        let fs = LocalFileSystem::new_with_prefix(root.path().join("tier")).unwrap();
        for scope in ["", "cluster-a", "a b/%x/../c#1", "\u{e9}t\u{e9}/./q?r"] {
            let scoped = store.scoped(scope);
            for parts in [&["orders-0123", "7"][..], &["t", "1", "a#b"][..]] {
                let path = scoped.path(parts);
                assert_eq!(
                    scoped.local_dir(&path).unwrap(),
                    fs.path_to_filesystem(&path).unwrap(),
                    "{scope:?} {parts:?}"
                );
            }
        }
    }
}
