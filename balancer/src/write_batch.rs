//! Small replicas bound for one node, gathered while a write to it is in
//! flight and sent together in one request
//! ([`tenfold_common::replica_batch`]).
//!
//! A replica write costs a node, and the gateway, about the same whatever
//! its size up to tens of KiB: a request to parse and sign, wake-ups on
//! both sides. When no write to a node is in flight, a small replica goes
//! at once, alone, as a plain PUT: one writer at a time waits for nothing.
//! When one is, the next small replicas queue, and the first write to end
//! sends the queue as one batch, and so on while replicas keep coming.
//! Each replica still counts only once the node answers it stored, after
//! its fsync.
//!
//! A node that refuses batches (any S3 server but `tenfold-node`) is sent
//! each replica of the refused batch alone, and no batch for
//! [`REFUSED_FOR`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tenfold_common::replica_batch::{MAX_RECORD_DATA, MAX_RECORDS, Record};
use tokio::sync::oneshot;

use crate::node_client::{BatchAnswer, NodeFailure};
use crate::registry::NodeHandle;

/// Writes in flight to one node before small replicas queue for a batch.
const IN_FLIGHT: usize = 1;
/// Most data bytes in one batch.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long a node that refused a batch is sent none.
pub const REFUSED_FOR: Duration = Duration::from_secs(600);

/// The small replicas waiting for one node.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue(Mutex<QueueState>);

#[derive(Debug, Default)]
struct QueueState {
    /// Writes in flight: plain PUTs counted against [`IN_FLIGHT`], and the
    /// task sending batches.
    in_flight: usize,
    queued: VecDeque<Queued>,
    /// Until when the node is sent no batches.
    refused_until: Option<Instant>,
}

#[derive(Debug)]
struct Queued {
    record: Record,
    done: oneshot::Sender<Result<(), NodeFailure>>,
}

impl WriteQueue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a replica of `len` bytes may go in a batch.
pub(crate) fn batchable(len: usize) -> bool {
    len <= MAX_RECORD_DATA
}

/// Writes one small replica to `node`: alone at once when no write to it
/// is in flight (or it takes no batches), else in the next batch.
pub(crate) async fn put_small(node: &Arc<NodeHandle>, record: Record) -> Result<(), NodeFailure> {
    /// What a replica does, decided under the queue's lock.
    enum Way {
        Alone(Record),
        First(Record),
        Queued(oneshot::Receiver<Result<(), NodeFailure>>),
    }
    let way = {
        let mut st = node.load.writes.state();
        if st.refused_until.is_some_and(|until| Instant::now() < until) {
            Way::Alone(record)
        } else if st.in_flight < IN_FLIGHT {
            st.in_flight += 1;
            Way::First(record)
        } else {
            let (done, answer) = oneshot::channel();
            st.queued.push_back(Queued { record, done });
            Way::Queued(answer)
        }
    };
    match way {
        Way::Alone(record) => put_one(node, record).await,
        Way::First(record) => {
            let mut turn = Turn {
                node: Arc::clone(node),
                failed: None,
            };
            let result = put_one(node, record).await;
            turn.failed = unreachable(&result);
            result
        }
        Way::Queued(answer) => answer
            .await
            .unwrap_or_else(|_| Err(NodeFailure::Other("the batch was dropped".into()))),
    }
}

/// A plain PUT of one replica, within one of the node's request slots.
pub(crate) async fn put_one(node: &NodeHandle, record: Record) -> Result<(), NodeFailure> {
    let _slot = node
        .load
        .slots
        .acquire()
        .await
        .map_err(|e| NodeFailure::Other(e.to_string()))?;
    let started = Instant::now();
    node.client
        .put(
            &node.spec.bucket,
            &record.key,
            record.data,
            record.md5,
            record.crc32c,
        )
        .await?;
    node.record_success(started);
    Ok(())
}

/// The failure of a write that found the node unreachable (not full, not
/// refusing one record), which what queued behind it shares.
fn unreachable(result: &Result<(), NodeFailure>) -> Option<NodeFailure> {
    match result {
        Err(failure @ NodeFailure::Other(_)) => Some(failure.clone()),
        _ => None,
    }
}

/// A plain PUT's turn in flight. Ending, it hands what queued meanwhile to
/// a task that sends it, or fails it at once when the PUT found the node
/// unreachable.
struct Turn {
    node: Arc<NodeHandle>,
    failed: Option<NodeFailure>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut st = self.node.load.writes.state();
        let Some(batch) = next_batch(&mut st, self.failed.as_ref()) else {
            return;
        };
        drop(st);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(Arc::clone(&self.node), batch));
        } else {
            // No runtime left to send it: the replicas fail.
            let mut st = self.node.load.writes.state();
            st.in_flight -= 1;
            fail_all(&mut st.queued, &NodeFailure::Other("shutting down".into()));
        }
    }
}

/// Sends batches while replicas keep queueing.
async fn drain(node: Arc<NodeHandle>, mut batch: Vec<Queued>) {
    loop {
        let failed = send(&node, batch).await;
        let mut st = node.load.writes.state();
        match next_batch(&mut st, failed.as_ref()) {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// What a write in flight hands on as it ends: the next batch, or `None`
/// when nothing queued (its turn in flight then ends). When the write
/// found the node unreachable (`failed`), what queued behind it fails with
/// it, for each replica to go to another node.
fn next_batch(st: &mut QueueState, failed: Option<&NodeFailure>) -> Option<Vec<Queued>> {
    if let Some(failure) = failed {
        fail_all(&mut st.queued, failure);
    }
    if st.queued.is_empty() {
        st.in_flight -= 1;
        return None;
    }
    Some(take_batch(&mut st.queued))
}

/// The first queued replicas, up to [`MAX_RECORDS`] and [`MAX_BATCH_BYTES`].
fn take_batch(queued: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queued.front() {
        let len = next.record.data.len();
        if !batch.is_empty() && (batch.len() == MAX_RECORDS || bytes + len > MAX_BATCH_BYTES) {
            break;
        }
        bytes += len;
        batch.extend(queued.pop_front());
    }
    batch
}

fn fail_all(queued: &mut VecDeque<Queued>, failure: &NodeFailure) {
    for q in queued.drain(..) {
        let _ = q.done.send(Err(failure.clone()));
    }
}

/// Sends one batch and answers each of its replicas; returns the failure
/// when the node did not answer at all.
async fn send(node: &NodeHandle, mut batch: Vec<Queued>) -> Option<NodeFailure> {
    if batch.len() == 1 {
        let Queued { record, done } = batch.pop()?;
        let result = put_one(node, record).await;
        let failed = unreachable(&result);
        let _ = done.send(result);
        return failed;
    }
    let (records, waiting): (Vec<Record>, Vec<_>) =
        batch.into_iter().map(|q| (q.record, q.done)).unzip();
    let answer = {
        let _slot = node.load.slots.acquire().await;
        let started = Instant::now();
        let answer = node.client.put_batch(&node.spec.bucket, &records).await;
        if answer.is_ok() {
            node.record_success(started);
        }
        answer
    };
    match answer {
        Ok(BatchAnswer::Stored(outcomes)) => {
            node.record_batch(outcomes.len());
            for (done, outcome) in waiting.into_iter().zip(outcomes) {
                let _ = done.send(outcome);
            }
            None
        }
        Ok(BatchAnswer::Refused(reason)) => {
            tracing::info!(
                node = node.spec.id,
                %reason,
                "the node takes no batches: its replicas go one by one"
            );
            node.load.writes.state().refused_until = Some(Instant::now() + REFUSED_FOR);
            let results = join_all(records.into_iter().map(|r| put_one(node, r))).await;
            for (done, result) in waiting.into_iter().zip(results) {
                let _ = done.send(result);
            }
            None
        }
        Err(failure) => {
            for done in waiting {
                let _ = done.send(Err(failure.clone()));
            }
            Some(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use md5::{Digest, Md5};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::node_client::crc32c;
    use crate::placement::ReplicaPolicy;
    use crate::registry::Balancer;
    use crate::testing::{start_node, start_small_node};

    fn queued(len: usize) -> Queued {
        Queued {
            record: record("k", len, 0),
            done: oneshot::channel().0,
        }
    }

    fn record(key: &str, len: usize, fill: u8) -> Record {
        let data = Bytes::from(vec![fill; len]);
        Record {
            key: key.into(),
            md5: Md5::digest(&data).into(),
            crc32c: crc32c(&data),
            data,
        }
    }

    /// One node of its own, ready to write to.
    async fn one_node(name: &str) -> (Arc<NodeHandle>, Balancer) {
        let dir = std::env::temp_dir().join(format!("tenfold-{name}-{}", std::process::id()));
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![start_node(&dir, 1, Duration::ZERO).await]);
        let node = balancer.node(1).unwrap();
        node.ensure_bucket().await.unwrap();
        (node, balancer)
    }

    /// Sends `records` to `node` in one batch: each record's outcome
    /// (a `tenfold-node` never refuses a batch).
    async fn stored_batch(node: &NodeHandle, records: &[Record]) -> Vec<Result<(), NodeFailure>> {
        let answer = node
            .client
            .put_batch(&node.spec.bucket, records)
            .await
            .unwrap();
        let BatchAnswer::Stored(outcomes) = answer else {
            panic!("a tenfold-node refused a batch: {answer:?}");
        };
        outcomes
    }

    /// A plain HTTP/1.0 request to `endpoint`: the status and the body.
    async fn raw(endpoint: &str, request: &str) -> (u16, String) {
        let addr = endpoint.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    /// Requests of `method` the node answered with a 2xx, from its metrics.
    async fn answered(endpoint: &str, method: &str) -> u64 {
        let (_, metrics) = raw(endpoint, "GET /metrics HTTP/1.0\r\n\r\n").await;
        let series =
            format!("tenfold_node_http_requests_total{{method=\"{method}\",status=\"2xx\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    #[test]
    fn a_batch_stops_at_its_record_and_byte_limits() {
        let mut queue: VecDeque<Queued> = (0..100).map(|_| queued(10)).collect();
        assert_eq!(take_batch(&mut queue).len(), MAX_RECORDS);
        assert_eq!(queue.len(), 100 - MAX_RECORDS);

        let mut queue: VecDeque<Queued> = (0..20).map(|_| queued(100 << 10)).collect();
        assert_eq!(take_batch(&mut queue).len(), 10);
        assert_eq!(take_batch(&mut queue).len(), 10);
        assert!(take_batch(&mut queue).is_empty());

        let mut queue: VecDeque<Queued> = [queued(MAX_BATCH_BYTES + 1), queued(1)].into();
        assert_eq!(take_batch(&mut queue).len(), 1, "a record alone may pass");
    }

    /// Replicas written to a node while one is in flight go in batches,
    /// and every one lands with its own bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_that_meet_a_busy_node_go_in_batches_and_all_land() {
        let (node, balancer) = one_node("batches").await;
        let records: Vec<Record> = (0..48u8)
            .map(|i| record(&format!("frag/{i}"), 3000 + usize::from(i) * 100, i))
            .collect();
        let written = join_all(records.iter().map(|r| put_small(&node, r.clone()))).await;
        for (r, result) in records.iter().zip(&written) {
            assert!(result.is_ok(), "{}: {result:?}", r.key);
        }
        for r in &records {
            let got = node
                .client
                .get(&node.spec.bucket, &r.key, 1 << 20)
                .await
                .unwrap();
            assert_eq!(got.data.into_bytes(), r.data, "{}", r.key);
        }
        let (puts, posts) = (
            answered(&node.spec.endpoint, "PUT").await,
            answered(&node.spec.endpoint, "POST").await,
        );
        assert!(posts >= 1, "no batch was sent");
        // (One PUT made the bucket.)
        assert!(
            puts + posts < 20,
            "{puts} PUTs and {posts} batches for 48 replicas"
        );
        let status = &balancer.status()[0];
        assert_eq!(status.batches, posts);
        assert_eq!(status.batched_replicas + (puts - 1), 48);
        let st = node.load.writes.state();
        assert_eq!((st.in_flight, st.queued.len()), (0, 0));
    }

    /// A record the node finds damaged fails alone; the rest of its batch
    /// is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_record_fails_alone() {
        let (node, _balancer) = one_node("batch-damaged").await;
        let mut records: Vec<Record> = (0..3u8)
            .map(|i| record(&format!("r{i}"), 5000, i))
            .collect();
        records[1].crc32c ^= 1;
        let outcomes = stored_batch(&node, &records).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Err(NodeFailure::Other(m)) if m.contains("BadDigest")),
            "{outcomes:?}"
        );
        let bucket = &node.spec.bucket;
        assert!(node.client.get(bucket, "r0", 1 << 20).await.is_ok());
        assert!(matches!(
            node.client.get(bucket, "r1", 1 << 20).await,
            Err(NodeFailure::Missing)
        ));
    }

    /// A node with room for some records of a batch stores those and
    /// refuses the others as full, each on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_fills_up_refuses_the_records_it_has_no_room_for() {
        let dir = std::env::temp_dir().join(format!("tenfold-batch-full-{}", std::process::id()));
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![start_small_node(&dir, 1, 20_000).await]);
        let node = balancer.node(1).unwrap();
        node.ensure_bucket().await.unwrap();
        let records: Vec<Record> = (0..4u8)
            .map(|i| record(&format!("f{i}"), 8000, i))
            .collect();
        let outcomes = stored_batch(&node, &records).await;
        let stored = outcomes.iter().filter(|o| o.is_ok()).count();
        let full = outcomes
            .iter()
            .filter(|o| matches!(o, Err(NodeFailure::Full(_))))
            .count();
        assert!(
            stored >= 1 && full >= 1 && stored + full == 4,
            "{outcomes:?}"
        );
        for (r, outcome) in records.iter().zip(&outcomes) {
            let read = node.client.get(&node.spec.bucket, &r.key, 1 << 20).await;
            match outcome {
                Ok(()) => assert_eq!(read.unwrap().data.into_bytes(), r.data),
                Err(_) => assert!(matches!(read, Err(NodeFailure::Missing)), "{}", r.key),
            }
        }
    }

    /// A batch without a valid signature is refused before its body is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsigned_batch_is_refused() {
        let (node, _balancer) = one_node("batch-unsigned").await;
        let body = tenfold_common::replica_batch::encode(&[record("x", 10, 1)]);
        let request = format!(
            "POST /tenfold?tenfold-batch HTTP/1.0\r\nx-tenfold-batch: 1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let (status, answer) = raw(&node.spec.endpoint, &request).await;
        assert_eq!(status, 403, "{answer}");
        assert!(matches!(
            node.client.get(&node.spec.bucket, "x", 1 << 20).await,
            Err(NodeFailure::Missing)
        ));
    }

    /// When the node does not answer, the replicas queued behind the write
    /// that found it so fail with it at once, to go to other nodes, rather
    /// than being tried on it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_queued_for_a_dead_node_fail_with_the_first() {
        let dir = std::env::temp_dir().join(format!("tenfold-batch-dead-{}", std::process::id()));
        let mut spec = start_node(&dir, 1, Duration::ZERO).await;
        // A "node" that hangs up on every connection once it has read the
        // request, counting those that carry this test's keys (a client
        // of another test may still knock on a port this one reuses).
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        spec.endpoint = format!("http://{}", dead.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = dead.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0; 4096];
                    while let Ok(Ok(n @ 1..)) =
                        tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf))
                            .await
                    {
                        seen.extend_from_slice(&buf[..n]);
                    }
                    if seen.windows(6).any(|w| w == b"dead-k") {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![spec]);
        let node = balancer.node(1).unwrap();
        let written =
            join_all((0..10u8).map(|i| put_small(&node, record(&format!("dead-k{i}"), 100, i))))
                .await;
        assert!(
            written
                .iter()
                .all(|r| matches!(r, Err(NodeFailure::Other(_)))),
            "{written:?}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{written:?}"
        );
        let st = node.load.writes.state();
        assert_eq!((st.in_flight, st.queued.len()), (0, 0));
    }
}
