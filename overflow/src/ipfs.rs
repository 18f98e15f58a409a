//! [`OverflowStore`] over the IPFS RPC API (`/api/v0`), as served by Kubo
//! and by js-ipfs.
//!
//! Requests are built and sent by `ipfs-api-backend-hyper`; the answers are
//! parsed here, tolerantly, because the two daemons differ: js-ipfs answers
//! `add` with `Size` as a number (Kubo: a string) and `repo/stat` with
//! strings (Kubo: numbers).

use std::io::Cursor;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use ipfs_api_backend_hyper::{Form, IpfsClient, TryFromUri, request};
use ipfs_api_prelude::{ApiRequest, Backend};
use serde::{Deserialize, Deserializer};

use crate::{OverflowError, OverflowHealth, OverflowStore};

/// Time allowed for one request: a fragment is about a MiB.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `repo/stat`, which `ipfs-api-prelude` only offers as `stats/repo`.
#[derive(serde::Serialize)]
struct RepoStat;

impl ApiRequest for RepoStat {
    const PATH: &'static str = "/repo/stat";
}

/// A number that the daemon may send as a JSON number or as a string.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }
    match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) => Ok(n),
        NumberOrText::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddAnswer {
    hash: String,
    #[serde(deserialize_with = "lenient_u64")]
    size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RepoStatAnswer {
    #[serde(deserialize_with = "lenient_u64")]
    repo_size: u64,
    #[serde(deserialize_with = "lenient_u64")]
    storage_max: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionAnswer {
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorAnswer {
    message: String,
}

/// An IPFS daemon reached over its RPC API.
#[derive(Clone)]
pub struct IpfsStore {
    client: IpfsClient,
    api_url: String,
}

impl std::fmt::Debug for IpfsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpfsStore")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl IpfsStore {
    /// A store talking to the RPC API at `api_url`, e.g.
    /// `http://127.0.0.1:5001` (any path is replaced by `/api/v0`).
    ///
    /// # Errors
    /// [`OverflowError::Malformed`] when the URL does not parse.
    pub fn new(api_url: &str) -> Result<Self, OverflowError> {
        let client = IpfsClient::from_str(api_url).map_err(|e| OverflowError::Malformed {
            store: format!("IPFS at {api_url}"),
            operation: "configuration",
            message: format!("bad API URL: {e}"),
        })?;
        Ok(Self {
            client,
            api_url: api_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request and returns the body of a successful answer.
    async fn call<R: ApiRequest>(
        &self,
        operation: &'static str,
        req: R,
        form: Option<Form<'static>>,
    ) -> Result<Bytes, OverflowError> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request_raw(req, form))
            .await
            .map_err(|_| OverflowError::Unreachable {
                store: self.describe(),
                message: format!("{operation} took longer than {REQUEST_TIMEOUT:?}"),
            })?;
        let (status, body) = answer.map_err(|e| OverflowError::Unreachable {
            store: self.describe(),
            message: e.to_string(),
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorAnswer>(&body).map_or_else(
            |_| format!("{status}: {}", String::from_utf8_lossy(&body)),
            |e| e.message,
        );
        Err(OverflowError::Refused {
            store: self.describe(),
            operation,
            message,
        })
    }

    /// Parses a JSON answer (the last line, for streamed answers).
    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &'static str,
        body: &[u8],
    ) -> Result<T, OverflowError> {
        let last = body
            .split(|b| *b == b'\n')
            .rfind(|line| !line.iter().all(u8::is_ascii_whitespace))
            .unwrap_or_default();
        serde_json::from_slice(last).map_err(|e| OverflowError::Malformed {
            store: self.describe(),
            operation,
            message: format!("{e}: {}", String::from_utf8_lossy(last)),
        })
    }
}

#[async_trait::async_trait]
impl OverflowStore for IpfsStore {
    fn describe(&self) -> String {
        format!("IPFS at {}", self.api_url)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(len = data.len()))]
    async fn add(&self, data: Bytes) -> Result<String, OverflowError> {
        let len = data.len() as u64;
        let mut form = Form::default();
        form.add_reader("file", Cursor::new(data));
        // Added unpinned: the pin, made apart, is what keeps the content, and
        // a failed add must not leave a pin behind.
        let add = request::Add {
            pin: Some(false),
            cid_version: Some(1),
            raw_leaves: Some(true),
            ..Default::default()
        };
        let body = self.call("add", add, Some(form)).await?;
        let added: AddAnswer = self.parse("add", &body)?;
        // `Size` counts the file's bytes, or with some daemons the DAG's;
        // never fewer than the data.
        if added.size < len {
            return Err(OverflowError::Malformed {
                store: self.describe(),
                operation: "add",
                message: format!("stored {} bytes of {len}", added.size),
            });
        }
        tracing::debug!(cid = %added.hash, "added to IPFS");
        Ok(added.hash)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn get(&self, cid: &str, range: Range<u64>) -> Result<Bytes, OverflowError> {
        let want = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let offset = usize::try_from(range.start).unwrap_or(usize::MAX);
        let cat = request::Cat {
            path: cid,
            offset: Some(offset),
            length: Some(want),
        };
        let body = self.call("cat", cat, None).await?;
        if body.len() != want {
            return Err(OverflowError::Malformed {
                store: self.describe(),
                operation: "cat",
                message: format!("{cid}: {} bytes instead of {want}", body.len()),
            });
        }
        Ok(body)
    }

    async fn pin(&self, cid: &str) -> Result<(), OverflowError> {
        let pin = request::PinAdd {
            key: cid,
            recursive: Some(true),
            progress: false,
        };
        self.call("pin/add", pin, None).await.map(drop)
    }

    async fn unpin(&self, cid: &str) -> Result<(), OverflowError> {
        let unpin = request::PinRm {
            key: cid,
            recursive: true,
        };
        match self.call("pin/rm", unpin, None).await {
            Ok(_) => Ok(()),
            // Kubo: "not pinned or pinned indirectly"; js-ipfs: "… is not pinned".
            Err(OverflowError::Refused { message, .. }) if message.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn health(&self) -> Result<OverflowHealth, OverflowError> {
        let version: VersionAnswer = self.parse(
            "version",
            &self.call("version", request::Version, None).await?,
        )?;
        let stat: RepoStatAnswer =
            self.parse("repo/stat", &self.call("repo/stat", RepoStat, None).await?)?;
        Ok(OverflowHealth {
            store: format!("IPFS {} at {}", version.version, self.api_url),
            repo_size: stat.repo_size,
            storage_max: stat.storage_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> IpfsStore {
        IpfsStore::new("http://127.0.0.1:5001").unwrap()
    }

    #[test]
    fn add_answers_of_kubo_and_js_ipfs_parse() {
        let kubo = br#"{"Name":"f","Hash":"bafkreia","Size":"42"}"#;
        let js = br#"{"Name":"f","Hash":"zb2rh","Size":42}"#;
        let a: AddAnswer = store().parse("add", kubo).unwrap();
        let b: AddAnswer = store().parse("add", js).unwrap();
        assert_eq!((a.hash.as_str(), a.size), ("bafkreia", 42));
        assert_eq!((b.hash.as_str(), b.size), ("zb2rh", 42));
        // A streamed answer: progress lines, then the result.
        let streamed =
            b"{\"Name\":\"\",\"Bytes\":42}\n{\"Name\":\"f\",\"Hash\":\"h\",\"Size\":\"42\"}\n";
        let c: AddAnswer = store().parse("add", streamed).unwrap();
        assert_eq!(c.hash, "h");
        assert!(
            store()
                .parse::<AddAnswer>("add", br#"{"Hash":"h","Size":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn repo_stat_answers_of_kubo_and_js_ipfs_parse() {
        let kubo = br#"{"RepoSize":111452,"StorageMax":10000000000,"NumObjects":13,"RepoPath":"/r","Version":"fs-repo@15"}"#;
        let js = br#"{"NumObjects":"13","RepoSize":"111452","RepoPath":"/r","Version":"12","StorageMax":"9007199254740991"}"#;
        let a: RepoStatAnswer = store().parse("repo/stat", kubo).unwrap();
        let b: RepoStatAnswer = store().parse("repo/stat", js).unwrap();
        assert_eq!((a.repo_size, a.storage_max), (111_452, 10_000_000_000));
        assert_eq!(
            (b.repo_size, b.storage_max),
            (111_452, 9_007_199_254_740_991)
        );
    }

    #[tokio::test]
    async fn an_unreachable_daemon_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = IpfsStore::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = store.put("k", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, OverflowError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
