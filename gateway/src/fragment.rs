//! The stored form of a segment: zstd frames, cut into fragments that each
//! carry a small self-describing header.
//!
//! A segment's plaintext is compressed as independent zstd frames of at most
//! `frame_size` bytes each (so a later range read can decode only the frames
//! it needs), and the compressed bytes are split into up to `fragments`
//! nearly equal pieces. With a [`DataKey`], each compressed frame is sealed
//! (AES-256-GCM) before the cut, so fragments leave the gateway encrypted and
//! a range read opens only the frames it needs. Every fragment starts with a
//! [`FragmentHeader`], so the format can evolve (codec, cipher) without
//! migrating old data.

use std::cell::RefCell;
use std::io::Read;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};

pub use tenfold_balancer::Chunks;

use crate::crypto::{DataKey, TAG_LEN};

/// Magic number opening every fragment.
pub const MAGIC: &[u8; 4] = b"TFF1";
/// Current header version.
pub const VERSION: u8 = 1;
/// Encoded header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Most bytes reserved up front for a decoded segment (the largest segment
/// allowed): lengths read back from storage are not trusted further.
const MAX_RESERVE: usize = 256 << 20;
/// Codec id of zstd: every frame is a zstd frame (all unencrypted data,
/// and encrypted data stored before [`CODEC_ZSTD_OR_RAW`]).
pub const CODEC_ZSTD: u8 = 1;
/// Codec id of sealed frames that are zstd frames, except those zstd could
/// not shrink, which are stored as they are: an opened frame as long as
/// its plaintext is raw (a zstd frame is always shorter). Incompressible
/// data is then opened straight into the plaintext, without a copy
/// through zstd.
pub const CODEC_ZSTD_OR_RAW: u8 = 2;
/// Cipher id of "no encryption" (data stored before encryption existed).
pub const CIPHER_NONE: u8 = 0;
/// Cipher id of AES-256-GCM per zstd frame, with the data's own key.
pub const CIPHER_AES256GCM: u8 = 1;

fn cipher_of(key: Option<&DataKey>) -> u8 {
    if key.is_some() {
        CIPHER_AES256GCM
    } else {
        CIPHER_NONE
    }
}

/// The codec new fragments are written with: raw frames only where each
/// frame is opened on its own (sealed with a key); unencrypted data keeps
/// the stream of zstd frames it always had.
fn codec_of(key: Option<&DataKey>) -> u8 {
    if key.is_some() {
        CODEC_ZSTD_OR_RAW
    } else {
        CODEC_ZSTD
    }
}

/// The header at the start of every stored fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    pub codec: u8,
    pub cipher: u8,
    /// Segment number within the object.
    pub segment: u32,
    /// Fragment number within the segment.
    pub index: u16,
    /// Number of fragments the segment was cut into.
    pub count: u16,
    /// Plaintext bytes of the whole segment.
    pub segment_plain_len: u32,
    /// Payload bytes following this header.
    pub payload_len: u32,
}

/// Why stored bytes are not a valid fragment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("fragment shorter than its header")]
    Truncated,
    #[error("not a Tenfold fragment (bad magic)")]
    BadMagic,
    #[error("unsupported fragment version {0}")]
    Version(u8),
    #[error("fragment payload length {declared} does not match the {actual} bytes stored")]
    Length { declared: u32, actual: usize },
    #[error("fragment is {got:?}, expected {expected:?}")]
    Mismatch {
        got: (u32, u16, u16),
        expected: (u32, u16, u16),
    },
    #[error("unknown fragment codec {0}, or fragments of mixed codecs")]
    Codec(u8),
    #[error("fragment cipher {got}, expected {expected}")]
    Cipher { got: u8, expected: u8 },
    #[error("an encrypted frame does not authenticate: tampered, or the wrong key")]
    Tampered,
    #[error("an encrypted segment without its frame index")]
    NoFrameIndex,
    #[error("segment decompressed to {got} bytes, expected {expected}")]
    PlainLength { got: usize, expected: usize },
    #[error("zstd: {0}")]
    Zstd(String),
}

impl FragmentHeader {
    /// Writes the header.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.codec);
        out.put_u8(self.cipher);
        out.put_u8(0);
        out.put_u32_le(self.segment);
        out.put_u16_le(self.index);
        out.put_u16_le(self.count);
        out.put_u32_le(self.segment_plain_len);
        out.put_u32_le(self.payload_len);
    }

    /// Reads a header from the start of a stored fragment (in the chunks
    /// it arrived in) and checks that the payload that follows has the
    /// declared length.
    ///
    /// # Errors
    /// A [`FragmentError`] for anything that is not a whole fragment.
    pub fn decode(stored: &Chunks) -> Result<Self, FragmentError> {
        let mut h = [0u8; HEADER_LEN];
        let mut filled = 0;
        for chunk in stored.chunks() {
            let take = (HEADER_LEN - filled).min(chunk.len());
            h[filled..filled + take].copy_from_slice(&chunk[..take]);
            filled += take;
            if filled == HEADER_LEN {
                break;
            }
        }
        if filled < HEADER_LEN {
            return Err(FragmentError::Truncated);
        }
        if &h[..4] != MAGIC {
            return Err(FragmentError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(FragmentError::Version(h[4]));
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let header = Self {
            codec: h[5],
            cipher: h[6],
            segment: u32_at(8),
            index: u16_at(12),
            count: u16_at(14),
            segment_plain_len: u32_at(16),
            payload_len: u32_at(20),
        };
        let actual = stored.len() - HEADER_LEN;
        if header.payload_len as usize != actual {
            return Err(FragmentError::Length {
                declared: header.payload_len,
                actual,
            });
        }
        Ok(header)
    }
}

/// One fragment ready to be placed.
#[derive(Debug, Clone)]
pub struct EncodedFragment {
    pub index: u16,
    /// Header and payload, as stored on the nodes.
    pub bytes: Bytes,
    /// MD5 of `bytes`: checked by the nodes on write and by the gateway on read.
    pub md5: [u8; 16],
}

/// Where a segment's zstd frames are: each frame holds `plain` plaintext
/// bytes (the last one fewer) and ends at `ends[i]` in the segment's
/// compressed bytes. With it a range read fetches and decodes only the
/// fragments holding the frames it needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameIndex {
    pub plain: u64,
    pub ends: Vec<u64>,
}

/// What to fetch and decode for a plaintext range of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramePlan {
    /// The frames (by number).
    pub frames: Range<usize>,
    /// Fragments (by index) holding the frames.
    pub fragments: Range<usize>,
    /// Compressed bytes to skip at the start of the first fragment's payload.
    pub skip: usize,
    /// Compressed bytes of the frames.
    pub take: usize,
    /// Offset in the segment of the frames' first plaintext byte.
    pub plain_start: u64,
    /// Plaintext bytes the frames decode to.
    pub plain_len: usize,
}

impl FrameIndex {
    /// The frames covering `range` (plaintext offsets within a segment of
    /// `segment_plain` bytes) and the fragments holding them, given the
    /// fragments' payload sizes in index order. `None` when the index does
    /// not describe these fragments (then read the whole segment).
    pub fn plan(
        &self,
        range: Range<u64>,
        segment_plain: u64,
        payloads: &[u64],
    ) -> Option<FramePlan> {
        if self.plain == 0 || range.start >= range.end || range.end > segment_plain {
            return None;
        }
        let first = usize::try_from(range.start / self.plain).ok()?;
        let last = usize::try_from((range.end - 1) / self.plain).ok()?;
        // The index is read back from storage: trust no number in it.
        let total = payloads
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(*p))?;
        if *self.ends.last()? != total
            || last >= self.ends.len()
            || self.ends.windows(2).any(|w| w[0] > w[1])
        {
            return None;
        }
        let c_start = if first == 0 { 0 } else { self.ends[first - 1] };
        let c_end = self.ends[last];
        // Payload offsets of the fragments, to find which hold the span.
        let mut offset = 0;
        let (mut from, mut to, mut skip) = (None, 0, 0);
        for (i, len) in payloads.iter().enumerate() {
            let end = offset + len;
            if from.is_none() && c_start < end {
                from = Some(i);
                skip = c_start - offset;
            }
            if c_end > offset {
                to = i + 1;
            }
            offset = end;
        }
        let from = from.filter(|f| *f < to)?;
        let plain_start = first as u64 * self.plain;
        let plain_end = (last as u64 + 1)
            .checked_mul(self.plain)
            .map_or(segment_plain, |end| end.min(segment_plain));
        Some(FramePlan {
            frames: first..last + 1,
            fragments: from..to,
            skip: usize::try_from(skip).ok()?,
            take: usize::try_from(c_end - c_start).ok()?,
            plain_start,
            plain_len: usize::try_from(plain_end - plain_start).ok()?,
        })
    }
}

thread_local! {
    /// This thread's zstd contexts, kept from one segment to the next:
    /// making one allocates and zeroes its tables, which costs as much as
    /// compressing or decompressing a small object.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Runs `work` with this thread's context in `slot`, made by `make` when
/// there is none. It is taken out while in use, so that a panic in `work`
/// leaves none behind in an unknown state; each zstd call begins a new
/// frame, so one that failed can be used again.
fn with_kept<C: 'static, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    make: impl FnOnce() -> std::io::Result<C>,
    work: impl FnOnce(&mut C) -> Result<T, FragmentError>,
) -> Result<T, FragmentError> {
    let kept = slot.with(|slot| slot.borrow_mut().take());
    let mut context = match kept {
        Some(context) => context,
        None => make().map_err(zstd_error)?,
    };
    let result = work(&mut context);
    slot.with(|slot| *slot.borrow_mut() = Some(context));
    result
}

/// How segments are cut and compressed.
#[derive(Debug, Clone, Copy)]
pub struct SegmentCodec {
    /// Fragments per segment (10 in the seed).
    pub fragments: u16,
    /// Fragments smaller than this are merged: a tiny segment gets fewer.
    pub min_fragment_size: usize,
    /// Plaintext bytes per zstd frame.
    pub frame_size: usize,
    /// zstd level.
    pub level: i32,
}

impl SegmentCodec {
    /// Compresses one segment, seals each frame with `key` if given, and
    /// cuts the result into fragments (CPU-bound: run it on a blocking
    /// thread).
    ///
    /// # Errors
    /// [`FragmentError::Zstd`] when compression fails.
    pub fn encode(
        &self,
        segment: u32,
        plain: &[u8],
        key: Option<&DataKey>,
    ) -> Result<(Vec<EncodedFragment>, FrameIndex), FragmentError> {
        let plain_len = u32::try_from(plain.len())
            .map_err(|_| FragmentError::Zstd("segment over 4 GiB".into()))?;
        let frame_size = self.frame_size.max(1);
        // The frames are compressed and sealed one after another into one
        // buffer, which then becomes the fragments in place: no copy of
        // the compressed segment is made.
        let bound: usize = plain
            .chunks(frame_size)
            .map(|f| zstd::zstd_safe::compress_bound(f.len()) + TAG_LEN)
            .sum();
        let mut compressed =
            Vec::with_capacity(bound + usize::from(self.fragments.max(1)) * HEADER_LEN);
        let mut frames = FrameIndex {
            plain: frame_size as u64,
            ends: Vec::new(),
        };
        with_kept(
            &COMPRESSOR,
            || zstd::bulk::Compressor::new(self.level),
            |zstd| {
                zstd.set_compression_level(self.level).map_err(zstd_error)?;
                for (number, frame) in plain.chunks(frame_size).enumerate() {
                    let start = compressed.len();
                    compressed.reserve(zstd::zstd_safe::compress_bound(frame.len()) + TAG_LEN);
                    let mut out = std::io::Cursor::new(&mut compressed);
                    out.set_position(start as u64);
                    zstd.compress_to_buffer(frame, &mut out)
                        .map_err(zstd_error)?;
                    if key.is_some() && compressed.len() - start >= frame.len() {
                        // zstd could not shrink it: kept raw (CODEC_ZSTD_OR_RAW).
                        compressed.truncate(start);
                        compressed.extend_from_slice(frame);
                    }
                    if let Some(key) = key {
                        let number = u32::try_from(number).unwrap_or(u32::MAX);
                        key.seal_frame(segment, number, &mut compressed, start);
                    }
                    frames.ends.push(compressed.len() as u64);
                }
                Ok(())
            },
        )?;
        let len = compressed.len();
        let count = self.fragment_count(len);
        let piece = len.div_ceil(usize::from(count)).max(1);
        let pieces: Vec<(usize, usize)> = (0..usize::from(count))
            .map(|i| ((i * piece).min(len), ((i + 1) * piece).min(len)))
            .collect();
        // Make room for a header before every piece: move the pieces up,
        // the last first, and write each header in the gap.
        compressed.resize(len + usize::from(count) * HEADER_LEN, 0);
        let mut header = BytesMut::with_capacity(HEADER_LEN);
        for (index, &(start, end)) in pieces.iter().enumerate().rev() {
            let at = start + index * HEADER_LEN;
            compressed.copy_within(start..end, at + HEADER_LEN);
            header.clear();
            FragmentHeader {
                codec: codec_of(key),
                cipher: cipher_of(key),
                segment,
                index: u16::try_from(index).unwrap_or(u16::MAX),
                count,
                segment_plain_len: plain_len,
                payload_len: u32::try_from(end - start).unwrap_or(u32::MAX),
            }
            .encode(&mut header);
            compressed[at..at + HEADER_LEN].copy_from_slice(&header);
        }
        let stored = Bytes::from(compressed);
        let out = pieces
            .iter()
            .enumerate()
            .map(|(index, &(start, end))| {
                let at = start + index * HEADER_LEN;
                let bytes = stored.slice(at..end + (index + 1) * HEADER_LEN);
                let md5: [u8; 16] = Md5::digest(&bytes).into();
                EncodedFragment {
                    index: u16::try_from(index).unwrap_or(u16::MAX),
                    bytes,
                    md5,
                }
            })
            .collect();
        Ok((out, frames))
    }

    /// How many fragments a segment of `compressed_len` bytes is cut into.
    pub fn fragment_count(&self, compressed_len: usize) -> u16 {
        let by_size = compressed_len
            .div_ceil(self.min_fragment_size.max(1))
            .max(1);
        u16::try_from(by_size)
            .unwrap_or(u16::MAX)
            .min(self.fragments.max(1))
    }
}

/// The payloads of some fragments of a segment, header-less.
struct Payloads<'a> {
    /// The fragments' codec, one for all.
    codec: u8,
    /// Every payload's bytes, in order, as the slices they arrived in.
    slices: Vec<&'a [u8]>,
    /// Each fragment's payload length.
    sizes: Vec<u64>,
}

/// The payloads of `stored`, fragments `first..` of segment `segment` cut
/// into `count`, after checking that each header is the one expected (all
/// of one codec, one that goes with `cipher`).
fn checked_payloads(
    segment: u32,
    count: u16,
    first: usize,
    stored: &[Chunks],
    cipher: u8,
) -> Result<Payloads<'_>, FragmentError> {
    let mut payloads = Payloads {
        codec: CODEC_ZSTD,
        slices: Vec::new(),
        sizes: Vec::with_capacity(stored.len()),
    };
    for (i, frag) in (first..).zip(stored) {
        let h = FragmentHeader::decode(frag)?;
        let expected = (segment, u16::try_from(i).unwrap_or(u16::MAX), count);
        let got = (h.segment, h.index, h.count);
        if got != expected {
            return Err(FragmentError::Mismatch { got, expected });
        }
        if h.cipher != cipher {
            return Err(FragmentError::Cipher {
                got: h.cipher,
                expected: cipher,
            });
        }
        let known = match h.codec {
            CODEC_ZSTD => true,
            CODEC_ZSTD_OR_RAW => cipher != CIPHER_NONE,
            _ => false,
        };
        if !known || (i > first && payloads.codec != h.codec) {
            return Err(FragmentError::Codec(h.codec));
        }
        payloads.codec = h.codec;
        payloads.sizes.push(u64::from(h.payload_len));
        let mut header = HEADER_LEN;
        for chunk in frag.chunks() {
            let skip = header.min(chunk.len());
            header -= skip;
            if skip < chunk.len() {
                payloads.slices.push(&chunk[skip..]);
            }
        }
    }
    Ok(payloads)
}

/// Decompresses `compressed` zstd frames, never past `plain_len` bytes, and
/// checks that they hold exactly that many.
fn decompress(compressed: impl Read, plain_len: usize) -> Result<Vec<u8>, FragmentError> {
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(zstd_error)?;
    let mut plain = Vec::with_capacity(plain_len.min(MAX_RESERVE));
    std::io::copy(&mut decoder.take(plain_len as u64 + 1), &mut plain).map_err(zstd_error)?;
    check_len(plain, plain_len)
}

/// Reassembles a segment from its fragments (in index order), opens its
/// frames with `key` (encrypted segments need their `frames` index) and
/// decompresses it (CPU-bound: run it on a blocking thread).
///
/// # Errors
/// A [`FragmentError`] when a fragment is not the one expected, a frame does
/// not authenticate, or the plaintext does not have the recorded length.
pub fn decode_segment(
    segment: u32,
    stored: &[Chunks],
    plain_len: usize,
    frames: Option<&FrameIndex>,
    key: Option<&DataKey>,
) -> Result<Vec<u8>, FragmentError> {
    let count = u16::try_from(stored.len()).unwrap_or(u16::MAX);
    let payloads = checked_payloads(segment, count, 0, stored, cipher_of(key))?;
    if payloads.slices.is_empty() {
        // An empty segment has no zstd frame at all.
        return check_len(Vec::new(), plain_len);
    }
    let Some(key) = key else {
        return decompress(Span::new(&payloads.slices, 0)?, plain_len);
    };
    let plan = frames
        .and_then(|f| f.plan(0..plain_len as u64, plain_len as u64, &payloads.sizes))
        .ok_or(FragmentError::NoFrameIndex)?;
    open_and_decompress(
        (segment, payloads.codec),
        &payloads.slices,
        &plan,
        frames.ok_or(FragmentError::NoFrameIndex)?,
        key,
    )
}

/// Decodes the frames a [`FramePlan`] names from `stored`, the fragments
/// `plan.fragments` of a segment cut into `count`, opening them with `key`
/// when the segment is encrypted (CPU-bound: run it on a blocking thread).
///
/// # Errors
/// A [`FragmentError`] when a fragment is not the one expected, a frame
/// does not authenticate, or the frames do not decode to the planned length.
pub fn decode_frames(
    segment: u32,
    count: u16,
    stored: &[Chunks],
    plan: &FramePlan,
    frames: &FrameIndex,
    key: Option<&DataKey>,
) -> Result<Vec<u8>, FragmentError> {
    let payloads = checked_payloads(segment, count, plan.fragments.start, stored, cipher_of(key))?;
    let slices = &payloads.slices;
    match key {
        Some(key) => open_and_decompress((segment, payloads.codec), slices, plan, frames, key),
        None => decompress(
            Span::new(slices, plan.skip)?.take(plan.take as u64),
            plan.plain_len,
        ),
    }
}

/// Opens each planned frame with `key` and decompresses it straight into
/// the plaintext, reserved up front: a raw frame is copied once out of the
/// fragments, into the plaintext, and opened there; a zstd frame is copied
/// once into a scratch buffer, opened there and decompressed.
fn open_and_decompress(
    (segment, codec): (u32, u8),
    payloads: &[&[u8]],
    plan: &FramePlan,
    frames: &FrameIndex,
    key: &DataKey,
) -> Result<Vec<u8>, FragmentError> {
    if plan.plain_len > MAX_RESERVE {
        return Err(FragmentError::PlainLength {
            got: MAX_RESERVE,
            expected: plan.plain_len,
        });
    }
    let mut span = Span::new(payloads, plan.skip)?;
    let base = match plan.frames.start {
        0 => 0,
        first => *frames.ends.get(first - 1).ok_or(FragmentError::Truncated)?,
    };
    // A raw frame is opened in place, its tag still after it.
    let mut plain = Vec::with_capacity(plan.plain_len + TAG_LEN);
    let mut sealed = Vec::new();
    let mut from = 0usize;
    let plain_end = plan.plain_start + plan.plain_len as u64;
    for number in plan.frames.clone() {
        let end = frames
            .ends
            .get(number)
            .and_then(|e| e.checked_sub(base))
            .and_then(|e| usize::try_from(e).ok())
            .ok_or(FragmentError::Truncated)?;
        let len = end.checked_sub(from).ok_or(FragmentError::Truncated)?;
        from = end;
        let frame = u32::try_from(number).unwrap_or(u32::MAX);
        // The frame's plaintext length: `frames.plain`, the segment's last
        // frame (or the range's) fewer.
        let frame_start = (number as u64).saturating_mul(frames.plain);
        let frame_plain = frame_start
            .saturating_add(frames.plain)
            .min(plain_end)
            .saturating_sub(frame_start);
        if codec == CODEC_ZSTD_OR_RAW && len as u64 == frame_plain + TAG_LEN as u64 {
            let filled = plain.len();
            span.copy_to(len, &mut plain)?;
            let opened = key
                .open_frame(segment, frame, &mut plain[filled..])
                .ok_or(FragmentError::Tampered)?;
            plain.truncate(filled + opened);
            continue;
        }
        sealed.clear();
        span.copy_to(len, &mut sealed)?;
        let opened = key
            .open_frame(segment, frame, &mut sealed)
            .ok_or(FragmentError::Tampered)?;
        // Decompressed after what is already there, never past the
        // capacity reserved for the planned length.
        let filled = plain.len() as u64;
        with_kept(&DECOMPRESSOR, zstd::bulk::Decompressor::new, |zstd| {
            let mut out = std::io::Cursor::new(&mut plain);
            out.set_position(filled);
            zstd.decompress_to_buffer(&sealed[..opened], &mut out)
                .map_err(zstd_error)
        })?;
    }
    check_len(plain, plan.plain_len)
}

/// The fragments' payloads read in order from an offset, without first
/// copying them into one buffer: copied out slice by slice (appended, so
/// the destination is never zeroed first), or read as a stream by zstd.
struct Span<'a> {
    rest: std::slice::Iter<'a, &'a [u8]>,
    current: &'a [u8],
}

impl<'a> Span<'a> {
    /// The payloads from `skip` bytes into them.
    fn new(payloads: &'a [&'a [u8]], skip: usize) -> Result<Self, FragmentError> {
        let mut span = Self {
            rest: payloads.iter(),
            current: &[],
        };
        span.advance(skip, |_| {})?;
        Ok(span)
    }

    /// Appends the next `len` bytes to `out`.
    fn copy_to(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), FragmentError> {
        out.reserve(len);
        self.advance(len, |piece| out.extend_from_slice(piece))
    }

    /// Passes the next `len` bytes to `visit`, piece by piece.
    fn advance(
        &mut self,
        mut len: usize,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<(), FragmentError> {
        while len > 0 {
            if self.current.is_empty() {
                self.current = self.rest.next().ok_or(FragmentError::Truncated)?;
                continue;
            }
            let (piece, rest) = self.current.split_at(len.min(self.current.len()));
            visit(piece);
            self.current = rest;
            len -= piece.len();
        }
        Ok(())
    }
}

impl Read for Span<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rest.next() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

/// A zstd failure, as a fragment error.
fn zstd_error(e: std::io::Error) -> FragmentError {
    FragmentError::Zstd(e.to_string())
}

fn check_len(plain: Vec<u8>, plain_len: usize) -> Result<Vec<u8>, FragmentError> {
    if plain.len() != plain_len {
        return Err(FragmentError::PlainLength {
            got: plain.len(),
            expected: plain_len,
        });
    }
    Ok(plain)
}

/// The key a fragment is stored under on its nodes.
pub fn node_key(object_id: &str, segment: u32, index: u16) -> String {
    format!("{object_id}/{segment}/{index}")
}

/// Whether `id` has the shape of a data id: 32 lowercase hex digits, as
/// [`crate::object_store::new_object_id`] makes them.
pub fn is_data_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The data id, segment and fragment a [`node_key`] names; `None` for a
/// key of any other shape (not a Tenfold fragment's).
pub fn parse_node_key(key: &str) -> Option<(&str, u32, u16)> {
    let mut parts = key.split('/');
    let (data_id, segment, index) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_data_id(data_id) {
        return None;
    }
    let parsed = (data_id, segment.parse().ok()?, index.parse().ok()?);
    // Only the one spelling `node_key` writes ("7", not "07" or "+7").
    (node_key(parsed.0, parsed.1, parsed.2) == key).then_some(parsed)
}

/// The data id a [`node_key`] names a fragment of.
pub fn data_id_of(node_key: &str) -> &str {
    node_key.split('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_parse_back_and_other_keys_do_not() {
        let id = "0af3000000000000000000000000beef";
        let key = node_key(id, 12, 7);
        assert_eq!(parse_node_key(&key), Some((id, 12, 7)));
        assert_eq!(data_id_of(&key), id);
        for other in [
            "",
            "0af3/1/2",
            "0AF3000000000000000000000000BEEF/1/2",
            "a",
            "a/1",
            "a/1/2/3",
            "/1/2",
            "a/x/2",
            "a/1/70000",
            "a/01/2",
            "a/+1/2",
        ] {
            assert_eq!(parse_node_key(other), None, "{other:?}");
        }
        for tail in ["1", "1/2/3", "x/2", "1/70000", "01/2", "+1/2"] {
            let other = format!("{id}/{tail}");
            assert_eq!(parse_node_key(&other), None, "{other:?}");
        }
    }

    #[test]
    fn a_node_key_names_its_data() {
        let key = node_key("0123abcd", 7, 3);
        assert_eq!(key, "0123abcd/7/3");
        assert_eq!(data_id_of(&key), "0123abcd");
    }

    fn codec() -> SegmentCodec {
        SegmentCodec {
            fragments: 10,
            min_fragment_size: 1024,
            frame_size: 64 * 1024,
            level: 3,
        }
    }

    fn random(n: usize) -> Vec<u8> {
        (0..n).map(|_| rand::random::<u8>()).collect()
    }

    /// The fragments as a node's answers bring them: in chunks cut at odd
    /// places (the first inside the header), as hyper hands a body over.
    fn chunked(frags: &[EncodedFragment]) -> Vec<Chunks> {
        frags.iter().map(|f| cut(&f.bytes)).collect()
    }

    fn cut(bytes: &Bytes) -> Chunks {
        let mut chunks = Chunks::new();
        let (mut at, mut step) = (0, 7);
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            chunks.push(bytes.slice(at..end));
            at = end;
            step = step * 3 + 1;
        }
        chunks
    }

    /// No key (data stored before encryption), and a fresh data key.
    fn keys() -> [Option<DataKey>; 2] {
        let ring = crate::crypto::Keyring::new(
            crate::crypto::MasterKey::parse(&crate::crypto::MasterKey::generate()).unwrap(),
            Vec::new(),
        );
        [None, Some(ring.new_data_key().unwrap().0)]
    }

    #[test]
    fn round_trip_random_and_compressible() {
        for key in keys() {
            for data in [
                random(300_000),
                b"tenfold ".repeat(40_000),
                vec![],
                vec![42],
            ] {
                let (frags, frames) = codec().encode(7, &data, key.as_ref()).unwrap();
                let stored = chunked(&frags);
                for f in &frags {
                    assert_eq!(f.md5, <[u8; 16]>::from(Md5::digest(&f.bytes)));
                }
                let plain =
                    decode_segment(7, &stored, data.len(), Some(&frames), key.as_ref()).unwrap();
                assert_eq!(plain, data);
            }
        }
    }

    #[test]
    fn ranges_decode_from_only_the_fragments_holding_their_frames() {
        for (data, key) in [random(600_000), b"tenfold ".repeat(80_000)]
            .into_iter()
            .flat_map(|d| keys().map(move |k| (d.clone(), k)))
        {
            let len = data.len() as u64;
            let (frags, frames) = codec().encode(3, &data, key.as_ref()).unwrap();
            let count = u16::try_from(frags.len()).unwrap();
            let payloads: Vec<u64> = frags
                .iter()
                .map(|f| (f.bytes.len() - HEADER_LEN) as u64)
                .collect();
            for range in [
                0..1,
                0..len,
                70_000..70_001,
                65_535..65_537,
                100_000..400_000,
                len - 1..len,
            ] {
                let plan = frames.plan(range.clone(), len, &payloads).unwrap();
                assert!(plan.plain_start <= range.start);
                assert!(plan.plain_start + plan.plain_len as u64 >= range.end);
                let stored = chunked(&frags[plan.fragments.clone()]);
                let plain = decode_frames(3, count, &stored, &plan, &frames, key.as_ref()).unwrap();
                let from = usize::try_from(range.start - plan.plain_start).unwrap();
                let to = from + usize::try_from(range.end - range.start).unwrap();
                assert_eq!(
                    plain[from..to],
                    data[usize::try_from(range.start).unwrap()
                        ..usize::try_from(range.end).unwrap()]
                );
            }
            // One small range of random data needs fewer than all fragments.
            let plan = frames.plan(0..1000, len, &payloads).unwrap();
            if frags.len() > 2 && data[0] != data[1] {
                assert!(plan.fragments.len() < frags.len(), "{plan:?}");
            }
            assert!(frames.plan(0..len + 1, len, &payloads).is_none());
            assert!(frames.plan(5..5, len, &payloads).is_none());
        }
    }

    #[test]
    fn fragment_counts() {
        let c = codec();
        assert_eq!(c.fragment_count(0), 1);
        assert_eq!(c.fragment_count(1024), 1);
        assert_eq!(c.fragment_count(3000), 3);
        assert_eq!(c.fragment_count(1 << 20), 10);
        assert_eq!(
            codec().encode(0, &random(200_000), None).unwrap().0.len(),
            10
        );
    }

    #[test]
    fn wrong_or_damaged_fragments_are_refused() {
        let data = random(50_000);
        let (frags, _) = codec().encode(1, &data, None).unwrap();
        let mut stored = chunked(&frags);
        stored.swap(0, 1);
        assert!(matches!(
            decode_segment(1, &stored, data.len(), None, None),
            Err(FragmentError::Mismatch { .. })
        ));
        stored.swap(0, 1);
        assert!(matches!(
            decode_segment(2, &stored, data.len(), None, None),
            Err(FragmentError::Mismatch { .. })
        ));
        assert!(matches!(
            decode_segment(1, &stored, data.len() + 1, None, None),
            Err(FragmentError::PlainLength { .. })
        ));
        assert_eq!(
            FragmentHeader::decode(&Bytes::from_static(b"TFF1").into()),
            Err(FragmentError::Truncated)
        );
        let whole = frags[0].bytes.clone();
        let mut bad = whole.to_vec();
        bad[0] = b'X';
        assert_eq!(
            FragmentHeader::decode(&cut(&bad.into())),
            Err(FragmentError::BadMagic)
        );
        let short = whole.slice(..whole.len() - 1);
        assert!(matches!(
            FragmentHeader::decode(&cut(&short)),
            Err(FragmentError::Length { .. })
        ));
    }

    #[test]
    fn encrypted_fragments_hide_the_plaintext_and_refuse_tampering() {
        let [_, key] = keys();
        let key = key.unwrap();
        let mut data = b"TENFOLD-PLAINTEXT-MARKER ".repeat(20_000);
        data.extend(random(200_000));
        let (frags, frames) = codec().encode(4, &data, Some(&key)).unwrap();
        assert!(frags.len() > 3);
        for f in &frags {
            assert!(
                !f.bytes.windows(24).any(|w| w == &data[..24]),
                "plaintext in fragment {}",
                f.index
            );
        }
        let stored = chunked(&frags);
        // Without the key, or with another one: refused, never garbage.
        assert!(matches!(
            decode_segment(4, &stored, data.len(), Some(&frames), None),
            Err(FragmentError::Cipher { .. })
        ));
        let [_, other] = keys();
        assert_eq!(
            decode_segment(4, &stored, data.len(), Some(&frames), other.as_ref()),
            Err(FragmentError::Tampered)
        );
        assert_eq!(
            decode_segment(4, &stored, data.len(), None, Some(&key)),
            Err(FragmentError::NoFrameIndex)
        );
        // One flipped payload bit (with a consistent header) is caught.
        let mut bad = stored.clone();
        let mut one = frags[3].bytes.to_vec();
        one[HEADER_LEN + 5] ^= 0x10;
        bad[3] = cut(&one.into());
        assert_eq!(
            decode_segment(4, &bad, data.len(), Some(&frames), Some(&key)),
            Err(FragmentError::Tampered)
        );
    }

    /// Sealed frames zstd cannot shrink are stored raw (codec 2), the others
    /// as zstd frames; both open back, alone or mixed in one segment, and
    /// whole or by range. Sealed fragments of codec 1 (every frame zstd, as
    /// stored before codec 2) still decode; unknown or mixed codecs do not.
    #[test]
    fn incompressible_sealed_frames_are_stored_raw() {
        let [_, key] = keys();
        let key = key.unwrap();
        let header = |f: &Chunks| FragmentHeader::decode(f).unwrap();
        let with_codec = |frags: &[Chunks], codec: u8| -> Vec<Chunks> {
            frags
                .iter()
                .map(|f| {
                    let mut f = f.clone().into_bytes().to_vec();
                    f[5] = codec;
                    cut(&f.into())
                })
                .collect()
        };
        let noise = random(3 * 64 * 1024 + 100);
        let (frags, frames) = codec().encode(5, &noise, Some(&key)).unwrap();
        let stored = chunked(&frags);
        assert!(stored.iter().all(|f| header(f).codec == CODEC_ZSTD_OR_RAW));
        let payload: usize = stored.iter().map(|f| f.len() - HEADER_LEN).sum();
        assert_eq!(payload, noise.len() + 4 * TAG_LEN, "four raw frames");
        assert_eq!(
            decode_segment(5, &stored, noise.len(), Some(&frames), Some(&key)).unwrap(),
            noise
        );
        // Read as codec 1, a raw frame is not zstd: refused, never garbage.
        assert!(matches!(
            decode_segment(
                5,
                &with_codec(&stored, CODEC_ZSTD),
                noise.len(),
                Some(&frames),
                Some(&key)
            ),
            Err(FragmentError::Zstd(_))
        ));

        let mut mixed = b"tenfold ".repeat(2 * 64 * 1024 / 8);
        mixed.extend(random(64 * 1024));
        mixed.extend(b"tenfold ".repeat(10_000));
        let (frags, frames) = codec().encode(6, &mixed, Some(&key)).unwrap();
        let stored = chunked(&frags);
        let payload: usize = stored.iter().map(|f| f.len() - HEADER_LEN).sum();
        assert!(payload < mixed.len() / 2, "the repeated frames compress");
        assert_eq!(
            decode_segment(6, &stored, mixed.len(), Some(&frames), Some(&key)).unwrap(),
            mixed
        );
        let len = mixed.len() as u64;
        let sizes: Vec<u64> = stored
            .iter()
            .map(|f| (f.len() - HEADER_LEN) as u64)
            .collect();
        for range in [0..10, 130_000..140_000, 140_000..200_000, len - 5..len] {
            let plan = frames.plan(range.clone(), len, &sizes).unwrap();
            let count = u16::try_from(stored.len()).unwrap();
            let plain = decode_frames(
                6,
                count,
                &stored[plan.fragments.clone()],
                &plan,
                &frames,
                Some(&key),
            )
            .unwrap();
            let from = usize::try_from(range.start - plan.plain_start).unwrap();
            let to = from + usize::try_from(range.end - range.start).unwrap();
            let at = usize::try_from(range.start).unwrap()..usize::try_from(range.end).unwrap();
            assert_eq!(plain[from..to], mixed[at]);
        }

        // Every frame compressible: codec 1's reading gives the same bytes.
        let text: Vec<u8> = (0..30_000)
            .flat_map(|i| format!("line {i} of tenfold\n").into_bytes())
            .collect();
        let (frags, frames) = codec().encode(7, &text, Some(&key)).unwrap();
        let stored = chunked(&frags);
        assert!(stored.len() > 1);
        let old = with_codec(&stored, CODEC_ZSTD);
        assert_eq!(
            decode_segment(7, &old, text.len(), Some(&frames), Some(&key)).unwrap(),
            text
        );
        let mut mixed_codecs = stored.clone();
        mixed_codecs[0] = old[0].clone();
        assert_eq!(
            decode_segment(7, &mixed_codecs, text.len(), Some(&frames), Some(&key)),
            Err(FragmentError::Codec(CODEC_ZSTD_OR_RAW))
        );
        assert_eq!(
            decode_segment(
                7,
                &with_codec(&stored, 9),
                text.len(),
                Some(&frames),
                Some(&key)
            ),
            Err(FragmentError::Codec(9))
        );
    }

    /// Frame indexes come back from the index: nonsense in them gives no
    /// plan (the segment is then read whole), never a panic.
    #[test]
    fn nonsense_frame_indexes_give_no_plan() {
        let decreasing = FrameIndex {
            plain: 10,
            ends: vec![50, 20, 60],
        };
        assert_eq!(decreasing.plan(10..20, 30, &[30, 30]), None);
        assert_eq!(decreasing.plan(15..25, 30, &[30, 30]), None);
        let overflowing = FrameIndex {
            plain: 10,
            ends: vec![5, u64::MAX],
        };
        assert_eq!(overflowing.plan(0..20, 20, &[u64::MAX, 5]), None);
        let huge_frames = FrameIndex {
            plain: u64::MAX / 2,
            ends: vec![10, 20],
        };
        assert!(huge_frames.plan(0..5, u64::MAX, &[10, 10]).is_some());
    }
}
