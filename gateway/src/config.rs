//! Gateway configuration: the `tenfold serve --config FILE` TOML file and the
//! storage policy shared with `tenfold dev`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tenfold_balancer::{NodeTrust, ReplicaPolicy};
use tenfold_common::tls::TlsFiles;
use tenfold_common::units::{parse_duration, parse_size};

use crate::crypto::{Keyring, MasterKey};
use crate::error::GatewayError;
use crate::fragment::SegmentCodec;

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// A duration as people write it (`"30s"`, `"10m"`, `"7d"`), or a number
/// of seconds (what the older `*_seconds` keys hold).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Length {
        Seconds(u64),
        Text(String),
    }
    match Length::deserialize(d)? {
        Length::Seconds(n) => Ok(Duration::from_secs(n)),
        Length::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// How objects are cut, compressed and replicated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoragePolicy {
    /// Fragments per segment.
    pub fragments: u16,
    /// Replicas of each fragment on mainnet nodes.
    pub mainnet_replicas: usize,
    /// Replicas of each fragment on testnet nodes.
    pub testnet_replicas: usize,
    /// zstd compression level.
    pub zstd_level: i32,
    /// Plaintext bytes per segment: the unit of streaming and of memory use.
    #[serde(deserialize_with = "size")]
    pub segment_size: u64,
    /// Plaintext bytes per zstd frame.
    #[serde(deserialize_with = "size")]
    pub frame_size: u64,
    /// Smallest fragment worth a node round trip: a small object gets fewer
    /// fragments, so that an object of up to this size is one fragment
    /// (four node writes per PUT, one read per GET), not ten.
    #[serde(deserialize_with = "size")]
    pub min_fragment_size: u64,
    /// Multipart uploads this old are aborted and their parts removed
    /// (`abandoned_upload_seconds`, a number of seconds, still works).
    #[serde(alias = "abandoned_upload_seconds", deserialize_with = "duration")]
    pub abandoned_upload: Duration,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        Self {
            fragments: 10,
            mainnet_replicas: 3,
            testnet_replicas: 1,
            zstd_level: 3,
            segment_size: 8 << 20,
            frame_size: 1 << 20,
            min_fragment_size: 128 << 10,
            abandoned_upload: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl StoragePolicy {
    /// The replica policy the balancer applies.
    pub fn replicas(&self) -> ReplicaPolicy {
        ReplicaPolicy {
            mainnet: self.mainnet_replicas,
            testnet: self.testnet_replicas,
        }
    }

    /// The segment codec.
    pub fn codec(&self) -> SegmentCodec {
        SegmentCodec {
            fragments: self.fragments,
            min_fragment_size: usize::try_from(self.min_fragment_size).unwrap_or(usize::MAX),
            frame_size: usize::try_from(self.frame_size).unwrap_or(usize::MAX),
            level: self.zstd_level,
        }
    }

    /// Checks the values make sense.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the bad value.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |m: &str| Err(GatewayError::Config(m.to_owned()));
        if self.fragments == 0 {
            return bad("storage.fragments must be at least 1");
        }
        if self.mainnet_replicas + self.testnet_replicas == 0 {
            return bad("at least one replica is needed");
        }
        if self.segment_size == 0 || self.segment_size > 256 << 20 {
            return bad("storage.segment_size must be between 1 byte and 256MiB");
        }
        if self.frame_size == 0 {
            return bad("storage.frame_size must be at least 1 byte");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("storage.zstd_level must be between 1 and 22");
        }
        Ok(())
    }
}

/// How stored data is kept over time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilityPolicy {
    /// How long replicas released by a commit (an overwrite, a delete)
    /// stay on their nodes before they are removed: reads through other
    /// gateways that started before the commit finish within it (reads
    /// through this gateway hold leases and always finish).
    #[serde(deserialize_with = "duration")]
    pub gc_delay: Duration,
    /// How long a replica on a node that nothing in the index names (and
    /// nothing is writing) stays before the orphan sweep removes it.
    #[serde(deserialize_with = "duration")]
    pub orphan_grace: Duration,
    /// How long an active node may stay unreachable (to every gateway)
    /// before it is lost: its replicas stop counting and are repaired
    /// elsewhere.
    #[serde(deserialize_with = "duration")]
    pub node_lost_after: Duration,
    /// The write quorum: a PUT (or part) is acknowledged only once every
    /// fragment has at least this many copies (the overflow's pin counts as
    /// one; at most the storage policy's copies). Below it the write fails
    /// and leaves nothing; above it, short of the policy, the fragment is
    /// queued for repair.
    pub min_copies: usize,
    /// Fragments repaired at once by one gateway.
    pub repair_concurrency: usize,
    /// Every replica is read back and checked at least once per this
    /// period (0 turns the scrub off).
    #[serde(deserialize_with = "duration")]
    pub scrub_every: Duration,
    /// Bytes a second the scrub reads at most (per gateway).
    #[serde(deserialize_with = "size")]
    pub scrub_rate: u64,
    /// One replica picked at random on every node is audited this often,
    /// besides the scrub's passes (0 turns spot audits off).
    #[serde(deserialize_with = "duration")]
    pub spot_audit_every: Duration,
}

impl DurabilityPolicy {
    /// Checks the values make sense.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the bad value.
    pub fn validate(&self) -> Result<(), GatewayError> {
        if self.min_copies == 0 {
            return Err(GatewayError::Config(
                "durability.min_copies must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What `tenfold dev --config FILE` takes from a `tenfold serve`
/// configuration: how objects are stored and kept, and the overflow store;
/// the rest of the file (addresses, index, credentials) is the dev
/// cluster's own and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DevConfig {
    pub ipfs_api: Option<String>,
    pub storage: StoragePolicy,
    pub durability: DurabilityPolicy,
}

impl DevConfig {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when it cannot be read or is invalid.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let config: Self = read_toml(path)?;
        config.storage.validate()?;
        config.durability.validate()?;
        Ok(config)
    }
}

/// Reads a TOML file into `T`; errors name the file.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
}

impl Default for DurabilityPolicy {
    fn default() -> Self {
        Self {
            gc_delay: DEFAULT_GC_DELAY,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            node_lost_after: DEFAULT_NODE_LOST_AFTER,
            min_copies: 2,
            repair_concurrency: 4,
            scrub_every: Duration::from_secs(30 * 86_400),
            scrub_rate: 8 << 20,
            spot_audit_every: Duration::from_secs(600),
        }
    }
}

/// The default age of an unnamed replica before it is swept: writes in
/// progress are known and never swept, so this only needs to be well above
/// the time a heartbeat takes to reach the index.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// The default time before an unreachable node is lost: long enough for a
/// reboot or a short outage, short enough that a dead disk's fragments are
/// not left one copy short for days (Storj waits about as long).
pub const DEFAULT_NODE_LOST_AFTER: Duration = Duration::from_secs(4 * 3600);

/// The default grace period between a commit and the removal of what it
/// released (Garage waits 10 minutes too).
pub const DEFAULT_GC_DELAY: Duration = Duration::from_secs(600);

/// The `tenfold serve` configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address the S3 API listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The index, e.g. `sqlite:///var/lib/tenfold/index.db`.
    pub index_url: String,
    /// S3 credentials clients sign with (`TENFOLD_ACCESS_KEY` and
    /// `TENFOLD_SECRET_KEY` override them).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Base domain for virtual-hosted-style requests (`bucket.BASE`);
    /// path-style always works.
    pub base_domain: Option<String>,
    /// The IPFS RPC API that takes fragments the nodes cannot hold, e.g.
    /// `http://127.0.0.1:5001` (`TENFOLD_IPFS_API` overrides it). Without
    /// one, an upload the nodes cannot hold fails with InsufficientStorage.
    pub ipfs_api: Option<String>,
    /// The master key (64 hex digits) that wraps every object's data key
    /// (`TENFOLD_MASTER_KEY` overrides it). Required.
    pub master_key: Option<String>,
    /// Former master keys, still used to read what they encrypted.
    #[serde(default)]
    pub old_master_keys: Vec<String>,
    /// How long a client may take to send its request headers, may stay
    /// silent in the middle of a body (`RequestTimeout`), and may leave its
    /// connection idle or stop reading a response, before it is cut off;
    /// `client_timeout_seconds` still works.
    #[serde(
        default = "default_client_timeout",
        alias = "client_timeout_seconds",
        deserialize_with = "duration"
    )]
    pub client_timeout: Duration,
    /// Client connections open at once; more wait until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests a second one client address may make on average to the
    /// routes that need no signature (share and upload links, form
    /// uploads, CORS preflights), in bursts of five times that; 0: no limit.
    #[serde(default = "default_anonymous_rate")]
    pub anonymous_rate: u32,
    /// How long the requests in progress (uploads included) may take to
    /// finish after SIGTERM or SIGINT, before the gateway exits anyway.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Time between node health probes and registry refreshes;
    /// `refresh_seconds` still works.
    #[serde(
        default = "default_refresh",
        alias = "refresh_seconds",
        deserialize_with = "duration"
    )]
    pub refresh: Duration,
    /// Serve HTTPS with this certificate chain (PEM); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// A private CA (PEM) that `https://` nodes' certificates may chain to,
    /// besides the system's roots.
    pub node_ca_file: Option<PathBuf>,
    /// The admin listener (`/metrics`, `/health`, `/ready`): an address,
    /// or `off`; by default 127.0.0.1:9001, skipped with a warning when
    /// that address is taken.
    pub admin_listen: Option<String>,
    /// When set, `/metrics` asks for `Authorization: Bearer TOKEN`.
    pub metrics_token: Option<String>,
    #[serde(default)]
    pub storage: StoragePolicy,
    #[serde(default)]
    pub durability: DurabilityPolicy,
}

fn default_listen() -> String {
    "127.0.0.1:9000".into()
}

fn default_client_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_shutdown_grace() -> Duration {
    tenfold_common::http_server::DEFAULT_SHUTDOWN_GRACE
}

/// The default of [`ServeConfig::anonymous_rate`].
pub const DEFAULT_ANONYMOUS_RATE: u32 = 20;

fn default_anonymous_rate() -> u32 {
    DEFAULT_ANONYMOUS_RATE
}

fn default_max_connections() -> usize {
    tenfold_common::http_server::DEFAULT_MAX_CONNECTIONS
}

fn default_refresh() -> Duration {
    Duration::from_secs(2)
}

impl ServeConfig {
    /// The master keys: `master_key` (or `given`, from the command line or
    /// the environment, which overrides it), then the old ones.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when the master key is missing or malformed.
    pub fn keyring(&self, given: Option<&str>) -> Result<Keyring, GatewayError> {
        let current = given
            .map(str::to_owned)
            .or_else(|| self.master_key.clone())
            .ok_or_else(|| {
                GatewayError::Config(
                    "master_key missing: set master_key (64 hex digits, e.g. `openssl rand -hex 32`) in the config or TENFOLD_MASTER_KEY".into(),
                )
            })?;
        let older = self
            .old_master_keys
            .iter()
            .map(|k| MasterKey::parse(k))
            .collect::<Result<_, _>>()?;
        Ok(Keyring::new(MasterKey::parse(&current)?, older))
    }

    /// The listener's certificate, if it serves HTTPS.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when only one of `tls_cert` and `tls_key`
    /// is set.
    pub fn tls(&self) -> Result<Option<TlsFiles>, GatewayError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(GatewayError::Config(
                "tls_cert and tls_key go together".into(),
            )),
        }
    }

    /// How https nodes are verified: the system's roots, plus
    /// `node_ca_file`.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when the CA file cannot be read or holds no
    /// certificate.
    pub fn node_trust(&self) -> Result<NodeTrust, GatewayError> {
        let Some(path) = &self.node_ca_file else {
            return Ok(NodeTrust::default());
        };
        let pem = std::fs::read(path)
            .map_err(|e| GatewayError::Config(format!("node_ca_file {}: {e}", path.display())))?;
        NodeTrust::with_private_ca(pem)
            .map_err(|e| GatewayError::Config(format!("node_ca_file {}: {e}", path.display())))
    }

    /// The configuration of a gateway on `index_url` with every other
    /// setting at its default (credentials and master key from the
    /// environment).
    pub fn for_index(index_url: String) -> Self {
        Self {
            listen: default_listen(),
            index_url,
            access_key: None,
            secret_key: None,
            base_domain: None,
            ipfs_api: None,
            master_key: None,
            old_master_keys: Vec::new(),
            client_timeout: default_client_timeout(),
            max_connections: default_max_connections(),
            anonymous_rate: default_anonymous_rate(),
            shutdown_grace: default_shutdown_grace(),
            refresh: default_refresh(),
            tls_cert: None,
            tls_key: None,
            node_ca_file: None,
            admin_listen: None,
            metrics_token: None,
            storage: StoragePolicy::default(),
            durability: DurabilityPolicy::default(),
        }
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`GatewayError::Config`] when it cannot be read or is invalid.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let config: Self = read_toml(path)?;
        config.storage.validate()?;
        config.durability.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_defaults() {
        let c: ServeConfig = toml::from_str(
            "index_url = 'sqlite:///tmp/x.db'\n[storage]\nsegment_size = '4MiB'\nfragments = 6\n",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.storage.segment_size, 4 << 20);
        assert_eq!(c.storage.fragments, 6);
        assert_eq!(c.storage.mainnet_replicas, 3);
        c.storage.validate().unwrap();
        assert!(toml::from_str::<ServeConfig>("index_url = 'x'\nbogus = 1\n").is_err());
        let bad = StoragePolicy {
            zstd_level: 99,
            ..StoragePolicy::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn durations_as_text_or_seconds_under_old_and_new_keys() {
        let c: ServeConfig = toml::from_str(
            "index_url = 'x'\nrefresh = '500ms'\nclient_timeout = '1m'\n\
             [storage]\nabandoned_upload = '2d'\n",
        )
        .unwrap();
        assert_eq!(c.refresh, Duration::from_millis(500));
        assert_eq!(c.client_timeout, Duration::from_secs(60));
        assert_eq!(c.storage.abandoned_upload, Duration::from_secs(2 * 86_400));
        let old: ServeConfig = toml::from_str(
            "index_url = 'x'\nrefresh_seconds = 1\nclient_timeout_seconds = 2\n\
             [storage]\nabandoned_upload_seconds = 20\n",
        )
        .unwrap();
        assert_eq!(old.refresh, Duration::from_secs(1));
        assert_eq!(old.client_timeout, Duration::from_secs(2));
        assert_eq!(old.storage.abandoned_upload, Duration::from_secs(20));
        let defaults: ServeConfig = toml::from_str("index_url = 'x'").unwrap();
        assert_eq!(defaults.refresh, Duration::from_secs(2));
        assert!(toml::from_str::<ServeConfig>("index_url = 'x'\nrefresh = 'soon'").is_err());
    }
}
