//! Reads of stored bytes that leave the blocking pool out when they can.
//!
//! A file whose path the kernel's caches hold is opened on the calling
//! thread (`openat2` with `RESOLVE_CACHED` never waits for the disk). A
//! read whose pages the page cache holds is done on the calling thread:
//! `preadv2` with `RWF_NOWAIT` copies what is cached and never waits for the
//! disk. Only what it leaves goes to a blocking thread, whose two wake-ups
//! (there and back) cost more than copying a cached chunk. `RWF_NOWAIT`
//! needs a buffer that is already initialised, so the chunks of object files
//! are read into buffers of a [`BufferPool`], each used again once the
//! bytes sent from it are dropped: no chunk is allocated or zeroed per read.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::{Errno, ReadWriteFlags};

use crate::disk_store::blocking;

/// Fills `buf` with the bytes of `file` from `offset`: on this thread as
/// far as the page cache holds them, the rest on a blocking thread.
///
/// # Errors
/// A disk error, or [`std::io::ErrorKind::UnexpectedEof`] when the file
/// ends first.
pub(crate) async fn read_exact_at<B>(file: Arc<File>, mut buf: B, offset: u64) -> std::io::Result<B>
where
    B: AsMut<[u8]> + Send + 'static,
{
    let done = read_cached(&file, buf.as_mut(), offset);
    if done == buf.as_mut().len() {
        return Ok(buf);
    }
    blocking(move || {
        file.read_exact_at(&mut buf.as_mut()[done..], offset + done as u64)?;
        Ok(buf)
    })
    .await
}

/// How many bytes of `buf`, from its start, `file` gave from `offset`
/// without waiting for the disk (all of them when the page cache holds
/// them; fewer at the first page it does not, or at the file's end).
pub(crate) fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut buf[done..])],
            offset + done as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

/// Opens `path` read-only on this thread if the kernel's caches hold every
/// component of it: `Ok(None)` when they do not (or the kernel cannot say,
/// before Linux 5.12), and the caller opens it on a blocking thread.
///
/// # Errors
/// [`std::io::ErrorKind::NotFound`] when the cache knows the file is not
/// there.
pub(crate) fn open_cached(path: &Path) -> std::io::Result<Option<File>> {
    match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    ) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::NOENT) => Err(std::io::ErrorKind::NotFound.into()),
        Err(_) => Ok(None),
    }
}

/// Read buffers of one size, kept for reuse once sent; at most `keep` of
/// them wait in the pool, so what it holds is bounded.
#[derive(Debug)]
pub(crate) struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `keep` idle ones.
    pub(crate) fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            keep,
            free: Mutex::new(Vec::with_capacity(keep)),
        })
    }

    fn free(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A buffer of `len` bytes (at most the pool's size): an idle one, or
    /// a new one.
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> PooledBuffer {
        let buf = self.free().pop().unwrap_or_else(|| vec![0; self.size]);
        PooledBuffer {
            len: len.min(buf.len()),
            buf,
            pool: Arc::clone(self),
        }
    }

    /// Idle buffers (for tests).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.free().len()
    }
}

/// A buffer of a [`BufferPool`], back in the pool when dropped.
#[derive(Debug)]
pub(crate) struct PooledBuffer {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// Bytes that share the buffer, which goes back to the pool once they
    /// (and every slice of them) are dropped.
    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsMut<[u8]> for PooledBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut free = self.pool.free();
        if free.len() < self.pool.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn temp_file(bytes: &[u8]) -> (std::path::PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("tenfold-reads-{}", rand::random::<u64>()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        (path, file)
    }

    #[tokio::test]
    async fn cached_reads_never_wait_for_the_disk_and_the_rest_is_read_blocking() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (path, file) = temp_file(&bytes);
        file.sync_all().unwrap();
        let mut buf = vec![0u8; 50_000];
        assert_eq!(
            read_cached(&file, &mut buf, 4096),
            50_000,
            "just written, so cached"
        );
        assert_eq!(buf[..], bytes[4096..54_096]);
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert_eq!(read_cached(&file, &mut buf, 4096), 0, "evicted, yet read");
        let file = Arc::new(file);
        let back = read_exact_at(Arc::clone(&file), vec![0u8; 250_000], 7)
            .await
            .unwrap();
        assert_eq!(back[..], bytes[7..250_007]);
        // Past the end: the read fails and says so.
        let err = read_exact_at(file, vec![0u8; 10], 299_995)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn files_the_cache_knows_open_on_this_thread() {
        let (path, _) = temp_file(b"hello");
        let mut file = open_cached(&path).unwrap().expect("just made, so cached");
        let mut back = String::new();
        std::io::Read::read_to_string(&mut file, &mut back).unwrap();
        assert_eq!(back, "hello");
        drop(file);
        std::fs::remove_file(&path).unwrap();
        // Gone: the cache says so, or cannot, and the caller looks on a
        // blocking thread; never a file.
        match open_cached(&path) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("a removed file opened"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn pooled_buffers_come_back_when_their_bytes_are_dropped_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(1024, 2);
        let mut a = pool.take(1000);
        a.as_mut().fill(7);
        let bytes = a.into_bytes();
        assert_eq!(bytes.len(), 1000);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a slice still holds it");
        drop(slice);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(2000);
        assert_eq!(
            again.as_ref().len(),
            1024,
            "never longer than the pool's size"
        );
        assert_eq!(pool.idle(), 0);
        let taken: Vec<_> = (0..4).map(|_| pool.take(1)).collect();
        drop(taken);
        drop(again);
        assert_eq!(pool.idle(), 2, "at most `keep` idle buffers");
    }
}
