//! Zip archives of a prefix, streamed as they are built: each object is read
//! through the download path and written as a stored entry with a data
//! descriptor, so nothing is buffered beyond a pipe and the download's
//! prefetch window, whatever the number or size of the files.

use std::collections::HashSet;
use std::sync::Arc;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder};
use bytes::Bytes;
use futures::{AsyncWriteExt, Stream, StreamExt, TryStreamExt};
use tokio::io::AsyncWrite;
use tokio_util::compat::TokioAsyncWriteCompatExt;
use tracing::Instrument;

use crate::error::GatewayError;
use crate::index::ObjectRow;
use crate::object_store::ObjectStore;
use crate::upload::BodyStream;

/// Objects listed per index query while building an archive.
const PAGE: i64 = 1000;
/// Bytes buffered between the archive writer and the response body.
const PIPE_BYTES: usize = 256 * 1024;
/// Zip records without zip64 hold 32-bit sizes and offsets and 16-bit counts.
const ZIP32_MAX_BYTES: u64 = 0xFFFF_FFFF;
const ZIP32_MAX_ENTRIES: u64 = 0xFFFF;

/// One file of an archive: its name inside the zip and its bytes.
pub struct ZipFile {
    pub name: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
    pub body: BodyStream,
}

/// What an archive will hold, known before the first byte is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchivePlan {
    pub entries: u64,
    pub bytes: u64,
    /// Bytes of entry names.
    pub name_bytes: u64,
}

impl ArchivePlan {
    /// Adds one entry.
    pub fn add(&mut self, name: &str, size: u64) {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(size);
        self.name_bytes += name.len() as u64;
    }

    /// Whether the archive needs zip64 records: an entry count past 65,535
    /// or an archive past 4 GiB (entries, headers, descriptors and central
    /// directory, counted generously).
    pub fn needs_zip64(&self) -> bool {
        let overhead = self.entries * 160 + self.name_bytes * 2 + 64;
        self.entries >= ZIP32_MAX_ENTRIES || self.bytes.saturating_add(overhead) > ZIP32_MAX_BYTES
    }
}

/// The name of the object `key` inside an archive of `prefix`: relative to
/// the folder the prefix names (so `photos/` and `photos/a.jpg` both give
/// `a.jpg`), with no empty, `.` or `..` component, no leading slash, no
/// backslash and no control character, so that unpacking it can never
/// leave the folder it is unpacked into.
pub fn entry_name(key: &str, prefix: &str) -> String {
    let base = prefix.rfind('/').map_or(0, |i| i + 1);
    let relative = key.get(base..).unwrap_or(key);
    let clean: Vec<String> = relative
        .split(['/', '\\'])
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .map(|part| part.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|part| !part.is_empty() && part != "." && part != "..")
        .collect();
    if clean.is_empty() {
        "file".to_owned()
    } else {
        clean.join("/")
    }
}

/// Writes `files` as a zip archive to `out`, in order, each entry stored
/// (objects are usually compressed already) with its CRC-32 computed as
/// it streams. With `zip64` false the archive must stay within the zip32
/// limits, which [`ArchivePlan::needs_zip64`] decides beforehand.
///
/// # Errors
/// Fails when a file cannot be read, its length differs from its announced
/// size, or `out` fails.
pub async fn write_zip<W, S>(out: W, zip64: bool, mut files: S) -> Result<W, GatewayError>
where
    W: AsyncWrite + Unpin,
    S: Stream<Item = Result<ZipFile, GatewayError>> + Unpin,
{
    let mut zip = ZipFileWriter::new(out.compat_write());
    if !zip64 {
        zip = zip.force_no_zip64();
    }
    let zip_err = |e: async_zip::error::ZipError| GatewayError::Internal(format!("zip: {e}"));
    let mut names = HashSet::new();
    while let Some(file) = files.next().await {
        let mut file = file?;
        let name = unique_name(&mut names, &file.name);
        let span = tracing::debug_span!("zip_entry", name = %name, size = file.size);
        let _enter = span.enter();
        let entry = ZipEntryBuilder::new(name.into(), Compression::Stored)
            .size(file.size, file.size)
            .last_modification_date(zip_date(file.modified_ms))
            .unix_permissions(0o644);
        let mut writer = zip.write_entry_stream(entry).await.map_err(zip_err)?;
        let mut written = 0u64;
        while let Some(chunk) = file.body.next().await {
            let chunk: Bytes = chunk?;
            written += chunk.len() as u64;
            writer.write_all(&chunk).await.map_err(pipe_err)?;
        }
        if written != file.size {
            return Err(GatewayError::Internal(format!(
                "{} changed while it was zipped: {written} bytes, {} expected",
                file.name, file.size
            )));
        }
        writer.close().await.map_err(zip_err)?;
    }
    let mut out = zip.close().await.map_err(zip_err)?.into_inner();
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(pipe_err)?;
    Ok(out)
}

fn pipe_err(e: std::io::Error) -> GatewayError {
    GatewayError::ArchiveWrite(e)
}

fn unique_name(seen: &mut HashSet<String>, name: &str) -> String {
    let mut candidate = name.to_owned();
    let mut n = 1;
    while !seen.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{name} ({n})");
    }
    candidate
}

fn zip_date(ms: i64) -> async_zip::ZipDateTime {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Zip dates start in 1980.
    let t = t.max(time::macros::datetime!(1980-01-01 0:00 UTC));
    ZipDateTimeBuilder::new()
        .year(t.year())
        .month(u32::from(u8::from(t.month())))
        .day(u32::from(t.day()))
        .hour(u32::from(t.hour()))
        .minute(u32::from(t.minute()))
        .second(u32::from(t.second()))
        .build()
}

impl ObjectStore {
    /// What an archive of `bucket`/`prefix` will hold.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn plan_archive(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<ArchivePlan, GatewayError> {
        let mut plan = ArchivePlan::default();
        let mut after = String::new();
        while let Some((page, next)) = self.archive_page(bucket, prefix, &after).await? {
            for object in &page {
                plan.add(&entry_name(&object.key, prefix), object.size);
            }
            after = next;
        }
        Ok(plan)
    }

    /// The objects of `bucket` under `prefix` after `after` that go into an
    /// archive (folder markers left out), with the key to continue after;
    /// `None` past the last one.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn archive_page(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
    ) -> Result<Option<(Vec<ObjectRow>, String)>, GatewayError> {
        let mut page = self.index.list_objects(bucket, prefix, after, PAGE).await?;
        page.retain(|o| o.key.starts_with(prefix));
        let Some(next) = page.last().map(|o| o.key.clone()) else {
            return Ok(None);
        };
        page.retain(|o| !(o.key.ends_with('/') && o.size == 0));
        Ok(Some((page, next)))
    }

    /// The zip archive of `bucket`/`prefix` as a byte stream, built while it
    /// is sent. A failure half-way ends the stream with an error, so the
    /// client sees a broken transfer rather than a short archive.
    ///
    /// # Errors
    /// [`GatewayError::Index`] when the objects cannot be listed.
    pub async fn zip_stream(
        self: &Arc<Self>,
        bucket: String,
        prefix: String,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, GatewayError>
    {
        let plan = self.plan_archive(&bucket, &prefix).await?;
        let (pipe_in, pipe_out) = tokio::io::duplex(PIPE_BYTES);
        let this = Arc::clone(self);
        let span = tracing::info_span!("zip", %bucket, %prefix, entries = plan.entries, bytes = plan.bytes);
        let writer = tokio::spawn(
            async move {
                let files = this.archive_files(bucket, prefix);
                write_zip(pipe_in, plan.needs_zip64(), Box::pin(files))
                    .await
                    .map(drop)
            }
            .instrument(span),
        );
        let outcome = futures::stream::once(async move {
            match writer.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "zip stream failed");
                    Some(Err(std::io::Error::other(e)))
                }
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        })
        .filter_map(futures::future::ready);
        Ok(tokio_util::io::ReaderStream::new(pipe_out).chain(outcome))
    }

    /// The objects of an archive, each opened when the writer reaches it.
    fn archive_files(
        self: Arc<Self>,
        bucket: String,
        prefix: String,
    ) -> impl Stream<Item = Result<ZipFile, GatewayError>> + Send {
        let pages = futures::stream::try_unfold(
            (Arc::clone(&self), Some(String::new())),
            move |(this, after)| {
                let bucket = bucket.clone();
                let prefix = prefix.clone();
                async move {
                    let Some(after) = after else {
                        return Ok::<_, GatewayError>(None);
                    };
                    let Some((page, next)) = this.archive_page(&bucket, &prefix, &after).await?
                    else {
                        return Ok(None);
                    };
                    let files: Vec<Result<(ObjectRow, String), GatewayError>> = page
                        .into_iter()
                        .map(|o| {
                            let name = entry_name(&o.key, &prefix);
                            Ok((o, name))
                        })
                        .collect();
                    Ok(Some((futures::stream::iter(files), (this, Some(next)))))
                }
            },
        );
        pages.try_flatten().then(move |item| {
            let this = Arc::clone(&self);
            async move {
                let (object, name) = item?;
                let layout = this.index.layout(&object.id, 0..object.size).await?;
                let body = this.object_stream(layout, 0..object.size);
                Ok(ZipFile {
                    name,
                    size: object.size,
                    modified_ms: object.last_modified,
                    body: Box::pin(body),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_stay_inside_the_archive() {
        assert_eq!(entry_name("photos/a.jpg", "photos/"), "a.jpg");
        assert_eq!(entry_name("photos/a.jpg", "photos/a.jpg"), "a.jpg");
        assert_eq!(entry_name("photos/2024/b.jpg", "photos/"), "2024/b.jpg");
        assert_eq!(entry_name("photos/ab.jpg", "photos/a"), "ab.jpg");
        assert_eq!(entry_name("x/../../etc/passwd", ""), "x/etc/passwd");
        assert_eq!(entry_name("/abs//path", ""), "abs/path");
        assert_eq!(entry_name("a\\..\\b", ""), "a/b");
        assert_eq!(entry_name("nul\0byte", ""), "nulbyte");
        assert_eq!(entry_name("..", ""), "file");
        assert_eq!(entry_name("dir/", "dir/"), "file");
        assert_eq!(entry_name("été/naïve ☃.txt", "été/"), "naïve ☃.txt");
    }

    #[test]
    fn duplicate_names_get_a_suffix() {
        let mut seen = HashSet::new();
        assert_eq!(unique_name(&mut seen, "a"), "a");
        assert_eq!(unique_name(&mut seen, "a"), "a (2)");
        assert_eq!(unique_name(&mut seen, "a"), "a (3)");
    }

    /// A 4.1 GiB entry between two small ones, streamed through the writer
    /// into a sparse file (runs of zeros are skipped, not stored), then
    /// checked by `unzip -t` and Python's `zipfile`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zip64_archive_of_a_multi_gib_stream_is_valid() {
        use std::io::{Seek, SeekFrom, Write};
        use tokio::io::AsyncReadExt;

        const CHUNK: usize = 1 << 20;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        let big: u64 = (4 << 30) + (100 << 20);
        let chunks = usize::try_from(big / CHUNK as u64).unwrap();
        let small = |name: &str, text: &'static [u8]| ZipFile {
            name: name.into(),
            size: text.len() as u64,
            modified_ms: 1_700_000_000_000,
            body: Box::pin(futures::stream::iter([Ok(Bytes::from_static(text))])),
        };
        let files = vec![
            small("first.txt", b"hello"),
            ZipFile {
                name: "big/zeros.bin".into(),
                size: big,
                modified_ms: 1_700_000_000_000,
                body: Box::pin(futures::stream::iter(
                    (0..chunks).map(|_| Ok(Bytes::from_static(&ZEROS))),
                )),
            },
            small("last.txt", b"world"),
        ];
        let mut plan = ArchivePlan::default();
        for f in &files {
            plan.add(&f.name, f.size);
        }
        assert!(plan.needs_zip64());

        let dir = std::env::temp_dir().join(format!("tenfold-zip64-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.zip");
        let (writer, mut reader) = tokio::io::duplex(CHUNK);
        // The task drops the pipe when done, which ends the reading below.
        let write = tokio::spawn(async move {
            write_zip(
                writer,
                true,
                futures::stream::iter(files.into_iter().map(Ok)),
            )
            .await
            .map(drop)
        });
        let mut file = std::fs::File::create(&path).unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            if buf[..n] == ZEROS[..n] {
                file.seek(SeekFrom::Current(i64::try_from(n).unwrap()))
                    .unwrap();
            } else {
                file.write_all(&buf[..n]).unwrap();
            }
            total += n as u64;
        }
        file.set_len(total).unwrap();
        write.await.unwrap().unwrap();
        assert!(total > big);

        let unzip = std::process::Command::new("unzip")
            .args(["-t", "-qq"])
            .arg(&path)
            .output()
            .expect("unzip is installed by the test command");
        assert!(
            unzip.status.success(),
            "{}",
            String::from_utf8_lossy(&unzip.stdout)
        );
        let script = "import sys, zipfile\n\
            z = zipfile.ZipFile(sys.argv[1])\n\
            assert z.testzip() is None\n\
            print([(i.filename, i.file_size) for i in z.infolist()])";
        let py = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .expect("python3");
        let listing = String::from_utf8_lossy(&py.stdout);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        assert_eq!(
            listing.trim(),
            format!("[('first.txt', 5), ('big/zeros.bin', {big}), ('last.txt', 5)]")
        );
    }

    #[test]
    fn zip64_is_chosen_only_past_the_zip32_limits() {
        let mut small = ArchivePlan::default();
        small.add("a", 1 << 30);
        assert!(!small.needs_zip64());
        let mut big_entry = ArchivePlan::default();
        big_entry.add("a", 5 << 30);
        assert!(big_entry.needs_zip64());
        let mut big_total = ArchivePlan::default();
        for _ in 0..5 {
            big_total.add("a", 1 << 30);
        }
        assert!(big_total.needs_zip64());
        let mut many = ArchivePlan::default();
        for _ in 0..70_000 {
            many.add("a", 0);
        }
        assert!(many.needs_zip64());
    }
}
