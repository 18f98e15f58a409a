//! A data folder of `tenfold dev`: the one place that knows the names of the
//! files in it.

use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::error::GatewayError;

/// A `tenfold dev` data folder: the SQLite index, the master key, the
/// endpoint the gateway last listened on, and the in-process nodes' data.
#[derive(Debug, Clone)]
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The SQLite index file.
    pub fn index_file(&self) -> PathBuf {
        self.0.join("index.db")
    }

    /// The URL of the SQLite index in the folder.
    pub fn index_url(&self) -> String {
        format!("sqlite://{}", self.index_file().display())
    }

    /// The file holding the master key (64 hex digits).
    pub fn master_key_file(&self) -> PathBuf {
        self.0.join("master.key")
    }

    /// The data folder of the in-process node `name`.
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.0.join("nodes").join(name)
    }

    fn endpoint_file(&self) -> PathBuf {
        self.0.join("gateway.json")
    }

    /// Records the endpoint the gateway listens on, for the admin commands.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when the file cannot be written.
    pub fn record_endpoint(&self, endpoint: &str) -> Result<(), GatewayError> {
        let path = self.endpoint_file();
        let info = serde_json::json!({ "endpoint": endpoint });
        std::fs::write(&path, info.to_string())
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
    }

    /// The endpoint `tenfold dev` recorded.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when none is recorded.
    pub fn recorded_endpoint(&self) -> Result<String, GatewayError> {
        let path = self.endpoint_file();
        let info: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                GatewayError::Config(format!(
                    "no gateway address recorded in {}: pass --public-url",
                    path.display()
                ))
            })?;
        info.get("endpoint")
            .and_then(|e| e.as_str())
            .map(str::to_owned)
            .ok_or_else(|| GatewayError::Config(format!("{} has no endpoint", path.display())))
    }

    /// The folder's master key, if it has one.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when the file cannot be read or holds no key.
    pub fn master_key(&self) -> Result<Option<MasterKey>, GatewayError> {
        let path = self.master_key_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => MasterKey::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(GatewayError::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// The folder's master key, created (readable by its owner only) when
    /// the folder has none.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when the file cannot be read or written.
    pub fn master_key_or_create(&self) -> Result<MasterKey, GatewayError> {
        if let Some(key) = self.master_key()? {
            return Ok(key);
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.master_key_file();
        let io = |e: std::io::Error| GatewayError::Config(format!("{}: {e}", path.display()));
        let key = MasterKey::generate();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(key.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        MasterKey::parse(&key)
    }
}
