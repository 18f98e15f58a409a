//! The download path: fetch each needed segment's fragments concurrently
//! from the best replicas, verify, reassemble, decompress, and stream the
//! plaintext in order with a bounded prefetch window.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryFutureExt};
use tenfold_balancer::{Check, Chunks};
use tracing::Instrument;

use crate::crypto::DataKey;
use crate::error::GatewayError;
use crate::fragment::{FragmentError, HEADER_LEN, decode_frames, decode_segment, node_key};
use crate::index::{FragmentRow, ObjectRow, SegmentRow};
use crate::object_store::{DOWNLOAD_BUDGET_BYTES, ObjectStore, budget_units, run_codec};
use crate::upload::BodyStream;

/// Segments fetched at once by one download (the one being sent and those
/// ahead of it), when the download budget has room for them.
const PREFETCH: usize = 4;

impl ObjectStore {
    /// Streams bytes `range` of an object whose layout is `segments`,
    /// fetching only the segments that overlap the range.
    ///
    /// When the range spans several segments, the fetching runs in a task
    /// of its own, up to [`PREFETCH`] segments at once as the download
    /// budget allows, plus one decoded and waiting: the HTTP server polls a
    /// response body only when it has room to write, so fetches driven by
    /// its polls would stall while each segment is flushed to the client.
    /// The task ends when the stream is dropped (the client hung up). A
    /// range within one segment has nothing to fetch ahead and is fetched
    /// by the stream itself, sparing a small GET the hand-off.
    pub fn object_stream(
        self: &Arc<Self>,
        segments: Vec<SegmentRow>,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, GatewayError>> + Send + 'static {
        let needed: Vec<SegmentRow> = segments
            .into_iter()
            .filter(|s| s.plain_offset < range.end && s.plain_offset + s.plain_size > range.start)
            .collect();
        let single = needed.len() <= 1;
        // Until the stream is dropped, the garbage collector leaves this
        // data's replicas alone, whatever commits meanwhile.
        let lease = self
            .read_leases
            .hold(needed.iter().map(|s| s.data_id.clone()));
        let mut fetched = Box::pin(self.fetched_segments(needed, range));
        if single {
            return futures::future::Either::Left(fetched.map(move |item| {
                let _held = &lease;
                item
            }));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(
            async move {
                while let Some(item) = fetched.next().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            }
            .in_current_span(),
        );
        futures::future::Either::Right(futures::stream::unfold(
            (rx, lease),
            |(mut rx, lease)| async move { rx.recv().await.map(|item| (item, (rx, lease))) },
        ))
    }

    /// The plaintext of `range` out of the `needed` segments (those that
    /// overlap it, in order), segment by segment, up to [`PREFETCH`]
    /// fetched at once.
    ///
    /// Every segment's bytes hold their share of the download budget until
    /// the client has taken them (they are dropped once written), so
    /// that readers who stop reading cannot pile decoded segments up
    /// outside it. The next segment to send waits for its share; those
    /// after it are fetched ahead only from what the budget has free at
    /// that moment. A segment starts only with its share in hand, so no
    /// download holds budget while it waits for more.
    fn fetched_segments(
        self: &Arc<Self>,
        needed: Vec<SegmentRow>,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, GatewayError>> + Send + 'static {
        let this = Arc::clone(self);
        let span = tracing::Span::current();
        let wanted_of = move |segment: &SegmentRow| {
            let offset = segment.plain_offset;
            range.start.saturating_sub(offset)..(range.end - offset).min(segment.plain_size)
        };
        let state = (
            needed.into_iter().peekable(),
            futures::stream::FuturesOrdered::new(),
        );
        futures::stream::unfold(state, move |(mut pending, mut running)| {
            let (this, span, wanted_of) = (Arc::clone(&this), span.clone(), wanted_of);
            async move {
                let units = |segment: &SegmentRow| {
                    let wanted = wanted_of(segment);
                    budget_units(wanted.end - wanted.start, DOWNLOAD_BUDGET_BYTES)
                };
                if running.is_empty() {
                    let segment = pending.next()?;
                    let share = Arc::clone(&this.fetch_budget)
                        .acquire_many_owned(units(&segment))
                        .await;
                    let wanted = wanted_of(&segment);
                    running.push_back(
                        Self::fetch_held(Arc::clone(&this), segment, wanted, share.ok())
                            .instrument(span.clone()),
                    );
                }
                while running.len() < PREFETCH {
                    let Some(next) = pending.peek() else { break };
                    let Ok(share) =
                        Arc::clone(&this.fetch_budget).try_acquire_many_owned(units(next))
                    else {
                        break;
                    };
                    let segment = pending.next()?;
                    let wanted = wanted_of(&segment);
                    running.push_back(
                        Self::fetch_held(Arc::clone(&this), segment, wanted, Some(share))
                            .instrument(span.clone()),
                    );
                }
                let item = running.next().await?;
                Some((item, (pending, running)))
            }
        })
    }

    /// Plaintext `wanted` (offsets within the segment) of `segment`, its
    /// budget `share` released when the bytes are dropped.
    async fn fetch_held(
        this: Arc<Self>,
        segment: SegmentRow,
        wanted: Range<u64>,
        share: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Bytes, GatewayError> {
        /// Bytes with the budget they take.
        struct Held {
            bytes: Bytes,
            _share: Option<tokio::sync::OwnedSemaphorePermit>,
        }
        impl AsRef<[u8]> for Held {
            fn as_ref(&self) -> &[u8] {
                &self.bytes
            }
        }
        let (plain_start, plain) = this.fetch_segment_part(segment, wanted.clone()).await?;
        let start = usize::try_from(wanted.start - plain_start).unwrap_or(0);
        let end = usize::try_from(wanted.end - plain_start)
            .unwrap_or(0)
            .min(plain.len());
        Ok(Bytes::from_owner(Held {
            bytes: plain.slice(start.min(end)..end),
            _share: share,
        }))
    }

    /// Bytes `range` of a stored object as an upload body: the source of a
    /// copy.
    ///
    /// # Errors
    /// [`GatewayError::Index`] when the layout cannot be read.
    pub async fn source_body(
        self: &Arc<Self>,
        source: &ObjectRow,
        range: Range<u64>,
    ) -> Result<BodyStream, GatewayError> {
        let segments = self.index.layout(&source.id, range.clone()).await?;
        Ok(Box::pin(self.object_stream(segments, range)))
    }

    /// Fetches and decodes the part of one segment that holds plaintext
    /// `wanted` (offsets within the segment): only the fragments holding
    /// the zstd frames that cover it, when the index knows where they are,
    /// else the whole segment. Returns the offset in the segment of the
    /// first byte decoded, and the bytes.
    ///
    /// # Errors
    /// [`GatewayError::Storage`] when a fragment has no readable replica.
    #[tracing::instrument(skip_all, fields(data = %segment.data_id, segment = segment.seq, ?wanted))]
    pub async fn fetch_segment_part(
        &self,
        segment: SegmentRow,
        wanted: Range<u64>,
    ) -> Result<(u64, Bytes), GatewayError> {
        // Only a part of the segment is worth planning (a whole GET reads
        // every fragment anyway).
        let plan = segment
            .frames
            .as_ref()
            .filter(|_| wanted.end - wanted.start < segment.plain_size)
            .and_then(|frames| {
                let payloads: Vec<u64> = segment
                    .fragments
                    .iter()
                    .map(|f| f.size.saturating_sub(HEADER_LEN as u64))
                    .collect();
                frames.plan(wanted, segment.plain_size, &payloads)
            });
        let (Some(plan), Some(frames)) = (plan, segment.frames.clone()) else {
            return Ok((0, self.fetch_segment(segment).await?));
        };
        let count = u16::try_from(segment.fragments.len()).unwrap_or(u16::MAX);
        let key = self.data_key(&segment)?;
        let seq = segment.seq;
        let plain_start = plan.plain_start;
        let (fragments, plain_len) = (plan.fragments.clone(), plan.plain_len);
        let plain = self
            .read_and_decode(
                &segment,
                &segment.fragments[fragments],
                plain_len,
                move |stored| decode_frames(seq, count, stored, &plan, &frames, key.as_ref()),
            )
            .await?;
        Ok((plain_start, Bytes::from(plain)))
    }

    /// The data key a segment was sealed with (none for data stored before
    /// encryption).
    fn data_key(&self, segment: &SegmentRow) -> Result<Option<DataKey>, GatewayError> {
        segment
            .key
            .as_ref()
            .map(|wrapped| self.keyring.unwrap(wrapped))
            .transpose()
    }

    /// Reads `fragments` of `segment` and decodes them with `decode` into
    /// `plain_len` bytes (on a blocking thread unless they are few: the
    /// work is about the plaintext's size, and the stored bytes are that
    /// or fewer, bar a few bytes of framing per frame).
    ///
    /// The fragments of a sealed segment are read with [`Check::Sealed`]:
    /// opening a frame checks its AEAD tag, so from nodes in good standing
    /// only their length is checked (a replica's MD5 costs more than the
    /// rest of the read). When they do not decode, they are read again with
    /// every fragment's MD5 checked, which skips (and demotes) the replica
    /// that lied. Fragments stored before encryption are always checked by
    /// MD5.
    async fn read_and_decode<D>(
        &self,
        segment: &SegmentRow,
        fragments: &[FragmentRow],
        plain_len: usize,
        decode: D,
    ) -> Result<Vec<u8>, GatewayError>
    where
        D: Fn(&[Chunks]) -> Result<Vec<u8>, FragmentError> + Send + Sync + 'static,
    {
        let decode = Arc::new(decode);
        if segment.key.is_some() {
            let stored = self
                .read_fragments(segment, fragments, Check::Sealed)
                .await?;
            let first = Arc::clone(&decode);
            match run_codec(plain_len, move || first(&stored)).await? {
                Ok(plain) => return Ok(plain),
                Err(e) => tracing::warn!(
                    error = %e,
                    "segment did not decode, reading it again with every fragment's MD5 checked"
                ),
            }
        }
        let stored = self.read_fragments(segment, fragments, Check::Md5).await?;
        Ok(run_codec(plain_len, move || decode(&stored)).await??)
    }

    /// Reads fragments of a segment concurrently, each from its best
    /// replica, checked with `check` made from its MD5.
    async fn read_fragments(
        &self,
        segment: &SegmentRow,
        fragments: &[FragmentRow],
        check: fn([u8; 16]) -> Check,
    ) -> Result<Vec<Chunks>, GatewayError> {
        let reads = fragments.iter().map(|f| {
            let key = node_key(&segment.data_id, segment.seq, f.index);
            async move {
                self.balancer
                    .read(&key, f.size, &f.placements, check(f.md5))
                    .await
            }
            .map_err(GatewayError::Storage)
        });
        futures::future::try_join_all(reads).await
    }

    /// Fetches and decodes one whole segment.
    ///
    /// # Errors
    /// [`GatewayError::Storage`] when a fragment has no readable replica.
    #[tracing::instrument(skip_all, fields(data = %segment.data_id, segment = segment.seq))]
    pub async fn fetch_segment(&self, segment: SegmentRow) -> Result<Bytes, GatewayError> {
        let key = self.data_key(&segment)?;
        let seq = segment.seq;
        let plain_len = usize::try_from(segment.plain_size).unwrap_or(usize::MAX);
        let frames = segment.frames.clone();
        let plain = self
            .read_and_decode(&segment, &segment.fragments, plain_len, move |stored| {
                decode_segment(seq, stored, plain_len, frames.as_ref(), key.as_ref())
            })
            .await?;
        Ok(Bytes::from(plain))
    }
}
