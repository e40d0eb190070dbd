//! The object store behind the tier, chosen by URL.

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::error::TierError;

/// An object store and the prefix under which Strata keeps its data.
///
/// URLs: `file:///abs/path`, `memory://` (tests), `s3://bucket/prefix`, `gs://bucket/prefix`,
/// `az://container/prefix` (and the other forms `object_store` accepts). Cloud stores take
/// their settings from the process environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...) and from
/// explicit `options`, which win over the environment.
#[derive(Clone, Debug)]
pub struct TierStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    url: String,
}

impl TierStore {
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, TierError> {
        let parsed =
            Url::parse(url).map_err(|e| TierError::Config(format!("{url:?} is not a URL: {e}")))?;
        if parsed.scheme() == "file" {
            // LocalFileSystem creates directories as it writes, but the root itself must
            // exist for listing to work.
            std::fs::create_dir_all(parsed.path())
                .map_err(TierError::io(format!("creating {}", parsed.path())))?;
        }
        let mut settings: Vec<(String, String)> = std::env::vars().collect();
        settings.extend(options.iter().cloned());
        let (store, root) = object_store::parse_url_opts(&parsed, settings)
            .map_err(|e| TierError::Config(format!("{url}: {e}")))?;
        Ok(TierStore {
            store: Arc::from(store),
            root,
            url: url.to_string(),
        })
    }

    /// The URL this store was opened from, for logs and metrics.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |p, part| p.join(*part))
    }
}
