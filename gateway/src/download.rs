//! The download path: fetch each needed segment's fragments concurrently
//! from the best replicas, verify, reassemble, decompress, and stream the
//! plaintext in order with a bounded prefetch window.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryFutureExt};
use tracing::Instrument;

use crate::error::GatewayError;
use crate::fragment::{decode_segment, node_key};
use crate::index::{ObjectRow, SegmentRow};
use crate::object_store::{DOWNLOAD_BUDGET_BYTES, ObjectStore, budget_units};
use crate::upload::BodyStream;

/// Segments fetched ahead of the one being sent: bounds memory per download.
const PREFETCH: usize = 2;

impl ObjectStore {
    /// Streams bytes `range` of an object whose layout is `segments`,
    /// fetching only the segments that overlap the range.
    pub fn object_stream(
        self: &Arc<Self>,
        segments: Vec<SegmentRow>,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, GatewayError>> + Send + 'static {
        let this = Arc::clone(self);
        let span = tracing::Span::current();
        let needed: Vec<SegmentRow> = segments
            .into_iter()
            .filter(|s| s.plain_offset < range.end && s.plain_offset + s.plain_size > range.start)
            .collect();
        futures::stream::iter(needed)
            .map(move |segment| {
                let this = Arc::clone(&this);
                let range = range.clone();
                async move {
                    let offset = segment.plain_offset;
                    let units = budget_units(segment.plain_size, DOWNLOAD_BUDGET_BYTES);
                    let slot = Arc::clone(&this.fetch_budget)
                        .acquire_many_owned(units)
                        .await
                        .map_err(|e| GatewayError::Internal(e.to_string()))?;
                    let plain = this.fetch_segment(segment).await?;
                    drop(slot);
                    let start = usize::try_from(range.start.saturating_sub(offset)).unwrap_or(0);
                    let end =
                        usize::try_from((range.end - offset).min(plain.len() as u64)).unwrap_or(0);
                    Ok(plain.slice(start.min(end)..end))
                }
                .instrument(span.clone())
            })
            .buffered(PREFETCH)
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
        let segments = self.index.layout(&source.id).await?;
        Ok(Box::pin(
            self.object_stream(segments, range)
                .map(|r| r.map_err(|e| e.to_string())),
        ))
    }

    /// Fetches and decodes one segment.
    ///
    /// # Errors
    /// [`GatewayError::Unavailable`] when a fragment has no readable replica.
    #[tracing::instrument(skip_all, fields(data = %segment.data_id, segment = segment.seq))]
    pub async fn fetch_segment(&self, segment: SegmentRow) -> Result<Bytes, GatewayError> {
        let reads = segment.fragments.iter().map(|f| {
            let key = node_key(&segment.data_id, segment.seq, f.index);
            let nodes: Vec<i64> = f.placements.iter().filter_map(|p| p.node).collect();
            async move { self.balancer.read(&key, f.size, &nodes, f.md5).await }
                .map_err(|e| GatewayError::Unavailable(e.to_string()))
        });
        let stored = futures::future::try_join_all(reads).await?;
        let seq = segment.seq;
        let plain_len = usize::try_from(segment.plain_size).unwrap_or(usize::MAX);
        let plain =
            tokio::task::spawn_blocking(move || decode_segment(seq, &stored, plain_len)).await??;
        Ok(Bytes::from(plain))
    }
}
