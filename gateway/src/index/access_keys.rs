//! Access keys and bucket ownership in the index.

use sqlx::Row;

use super::{Index, now_ms};
use crate::error::GatewayError;

/// An access key as `tenfold keys list` shows it (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessKeyRow {
    pub name: String,
    pub access_key: String,
    pub admin: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// How many buckets it owns.
    pub buckets: i64,
}

/// An access key of the index, as requests are checked against it.
#[derive(Debug, Clone)]
pub struct IndexKey {
    /// The secret, opened with the master key.
    pub secret: String,
    /// The key's name (`tenfold keys create NAME`).
    pub name: String,
    /// Whether it may use every bucket.
    pub admin: bool,
}

/// Who owns a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The admin key of the configuration.
    Admin,
    /// The access key that created it.
    Key(String),
}

impl Owner {
    /// The owner's id as S3 shows it (`Owner.ID`, and what
    /// `x-amz-expected-bucket-owner` names): Tenfold has no accounts, so it
    /// is the owning access key, or `tenfold` for the configuration's key.
    pub fn id(&self) -> &str {
        match self {
            Self::Admin => "tenfold",
            Self::Key(key) => key,
        }
    }

    fn from_column(owner: Option<String>) -> Self {
        owner.map_or(Self::Admin, Self::Key)
    }

    fn column(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Key(key) => Some(key),
        }
    }
}

/// Random characters from `alphabet`.
fn random_text(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

impl Index {
    /// Creates an access key named `name` and returns its access key id and
    /// secret (the only time the secret is shown; the index keeps it sealed
    /// with the master key).
    ///
    /// # Errors
    /// [`GatewayError::InvalidArgument`] when the name is taken,
    /// [`GatewayError::Config`] without a master key.
    pub async fn create_access_key(
        &self,
        name: &str,
        admin: bool,
    ) -> Result<(String, String), GatewayError> {
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            GatewayError::Config(
                "creating an access key needs the master key, to seal its secret: set TENFOLD_MASTER_KEY, pass --master-key-file, or use --data with a dev folder".into(),
            )
        })?;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(GatewayError::InvalidArgument(
                "a key name is 1 to 128 printable characters".into(),
            ));
        }
        let access_key = format!("TF{}", random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 18));
        let secret = random_text(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        );
        let done = sqlx::query(
            "INSERT INTO access_keys (access_key, name, secret, admin, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&access_key)
        .bind(name)
        .bind(keyring.seal_secret(&secret))
        .bind(i64::from(admin))
        .bind(now_ms())
        .execute(&mut self.reader().await?)
        .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::InvalidArgument(format!(
                "an access key named {name:?} already exists"
            )));
        }
        Ok((access_key, secret))
    }

    /// Every access key, by name.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn access_keys(&self) -> Result<Vec<AccessKeyRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT k.name, k.access_key, k.admin, k.created_at, \
                    (SELECT COUNT(*) FROM buckets b WHERE b.owner = k.access_key) AS buckets \
             FROM access_keys k ORDER BY k.name",
        )
        .fetch_all(&mut self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AccessKeyRow {
                    name: row.try_get("name")?,
                    access_key: row.try_get("access_key")?,
                    admin: row.try_get::<i64, _>("admin")? != 0,
                    created_at: row.try_get("created_at")?,
                    buckets: row.try_get("buckets")?,
                })
            })
            .collect()
    }

    /// Deletes the access key with this name or access key id; `false` when
    /// there is none. Its buckets stay, reachable by admin keys only.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn delete_access_key(&self, name_or_id: &str) -> Result<bool, GatewayError> {
        let done = sqlx::query("DELETE FROM access_keys WHERE name = $1 OR access_key = $1")
            .bind(name_or_id)
            .execute(&mut self.reader().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// An access key of the index with its secret opened; `None` for an
    /// unknown key.
    ///
    /// # Errors
    /// [`GatewayError::Index`], or [`GatewayError::MasterKey`] when the
    /// secret does not open.
    pub async fn access_key(&self, access_key: &str) -> Result<Option<IndexKey>, GatewayError> {
        let Some((sealed, name, admin)) = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT secret, name, admin FROM access_keys WHERE access_key = $1",
        )
        .bind(access_key)
        .fetch_optional(&mut self.reader().await?)
        .await?
        else {
            return Ok(None);
        };
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            GatewayError::MasterKey("access key secrets need the master key".into())
        })?;
        Ok(Some(IndexKey {
            secret: keyring.open_secret(&sealed)?,
            name,
            admin: admin != 0,
        }))
    }

    /// The owner of a bucket; `None` when there is no such bucket.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn bucket_owner(&self, bucket: &str) -> Result<Option<Owner>, GatewayError> {
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner FROM buckets WHERE name = $1")
                .bind(bucket)
                .fetch_optional(&mut self.reader().await?)
                .await?;
        Ok(owner.map(Owner::from_column))
    }

    /// Creates a bucket owned by `owner`; `false` when it already exists.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn create_bucket(&self, name: &str, owner: &Owner) -> Result<bool, GatewayError> {
        let done = sqlx::query(
            "INSERT INTO buckets (name, created_at, owner) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .bind(owner.column())
        .execute(&mut self.reader().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Buckets with their creation times (ms), by name: all of them, or
    /// those `owner` owns.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_buckets(
        &self,
        owner: Option<&Owner>,
    ) -> Result<Vec<(String, i64)>, GatewayError> {
        let query = match owner {
            None => sqlx::query_as("SELECT name, created_at FROM buckets ORDER BY name"),
            Some(owner) => sqlx::query_as(
                "SELECT name, created_at FROM buckets WHERE owner IS NOT DISTINCT FROM $1 ORDER BY name",
            )
            .bind(owner.column().map(str::to_owned)),
        };
        Ok(query.fetch_all(&mut self.reader().await?).await?)
    }
}
