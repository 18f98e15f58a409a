//! `tenfold status` and `tenfold inspect`: what the index records of the
//! nodes, the overflow store and one object, as text or JSON.

use std::collections::BTreeSet;

use clap::Args;
use serde::Serialize;
use tenfold_balancer::{Network, NodeSpec, NodeState, OVERFLOW, Placement};

use super::IndexArgs;
use super::nodes::seen_ago;
use crate::error::GatewayError;
use crate::fragment::node_key;
use crate::index::{NodeRecord, Redundancy, Repaired};

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    index: IndexArgs,
}

#[derive(Debug, Args)]
pub(super) struct InspectArgs {
    bucket: String,
    key: String,
    /// Print JSON (the only format for now).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    index: IndexArgs,
}

/// A registered node as `status` and `nodes list` show it: its
/// registration, and what the index records of it (its fields inline in
/// the JSON).
#[derive(Debug, Serialize)]
pub(super) struct NodeReport {
    pub id: i64,
    pub name: String,
    pub endpoint: String,
    pub network: Network,
    pub capacity: u64,
    /// Bytes the index records on it.
    pub stored: u64,
    /// Its place in the node lifecycle.
    pub state: NodeState,
    #[serde(flatten)]
    pub record: NodeRecord,
}

impl NodeReport {
    /// The report of `n`, with what the index records of it.
    pub fn new(n: &NodeSpec, record: NodeRecord) -> Self {
        Self {
            id: n.id,
            name: n.name.clone(),
            endpoint: n.endpoint.clone(),
            network: n.network,
            capacity: n.capacity,
            stored: n.stored_bytes,
            state: n.state,
            record,
        }
    }
}

/// Every registered node's report.
pub(super) async fn node_reports(
    index: &crate::index::Index,
) -> Result<Vec<NodeReport>, GatewayError> {
    let nodes = index.nodes().await?;
    let records = index.node_records().await?;
    Ok(nodes
        .iter()
        .map(|n| NodeReport::new(n, records.get(&n.id).copied().unwrap_or_default()))
        .collect())
}

/// Fragments held by the overflow store, and their bytes.
#[derive(Debug, Serialize)]
struct OverflowReport {
    fragments: u64,
    bytes: u64,
}

/// The scrub over every node: how far the current passes are, and what
/// the last complete ones found.
#[derive(Debug, Default, Serialize)]
struct ScrubReport {
    /// Replicas audited in the current passes, of all the replicas.
    pass_audits: u64,
    replicas: u64,
    /// Audits in the current passes that failed.
    pass_failures: u64,
    /// Complete passes over a node, all nodes together.
    passes: u64,
    /// Audits, and failed ones, in each node's last complete pass.
    last_pass_audits: u64,
    last_pass_failures: u64,
}

impl ScrubReport {
    fn of(nodes: &[NodeReport]) -> Self {
        nodes.iter().fold(Self::default(), |mut r, n| {
            let n = &n.record;
            r.pass_audits += n.pass_audits;
            r.replicas += n.replicas;
            r.pass_failures += n.pass_failures;
            r.passes += n.scrub_passes;
            r.last_pass_audits += n.last_pass_audits;
            r.last_pass_failures += n.last_pass_failures;
            r
        })
    }
}

/// `tenfold status --json`.
#[derive(Debug, Serialize)]
struct StatusReport {
    nodes: Vec<NodeReport>,
    overflow: OverflowReport,
    /// Replicas queued for removal.
    garbage: i64,
    /// `fragments_below_target`, `fragments_by_node_copies` (as of the
    /// last walk over the segments, `redundancy_as_of`), `repair_queue`.
    #[serde(flatten)]
    redundancy: Redundancy,
    /// Copies and bytes repair wrote so far.
    repaired: Repaired,
    /// Replicas the orphan sweep removed so far.
    swept_orphans: u64,
    /// Overflow pins the orphan sweep undid so far.
    swept_pins: u64,
    scrub: ScrubReport,
}

/// One fragment of `tenfold inspect --json`.
#[derive(Debug, Serialize)]
struct FragmentReport {
    segment: usize,
    index: u16,
    /// Its key on nodes.
    key: String,
    size: u64,
    placements: Vec<Placement>,
}

/// `tenfold inspect --json`.
#[derive(Debug, Serialize)]
struct InspectReport {
    bucket: String,
    key: String,
    size: u64,
    etag: String,
    /// The master keys its data keys are wrapped with.
    master_keys: BTreeSet<String>,
    overflow: OverflowReport,
    fragments: Vec<FragmentReport>,
}

/// Prints `value` as indented JSON (a reader that went away, as `| head`
/// does, is no error).
pub(super) fn print_json(value: &impl Serialize) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

pub(super) async fn status(args: StatusArgs) -> Result<(), GatewayError> {
    let index = args.index.open().await?;
    let nodes = index.nodes().await?;
    let (fragments, bytes) = index.overflow_usage().await?;
    let garbage = index.garbage_len().await?;
    let redundancy = index.redundancy().await?;
    let counters = index.counters().await?;
    let repaired = counters.repaired;
    let reports = node_reports(&index).await?;
    let scrub = ScrubReport::of(&reports);
    if args.json {
        print_json(&StatusReport {
            nodes: reports,
            overflow: OverflowReport { fragments, bytes },
            garbage,
            redundancy,
            repaired,
            swept_orphans: counters.orphans_swept,
            swept_pins: counters.orphan_pins_swept,
            scrub,
        });
        return Ok(());
    }
    for network in [Network::Mainnet, Network::Testnet] {
        let of: Vec<_> = nodes.iter().filter(|n| n.network == network).collect();
        let capacity: u64 = of.iter().map(|n| n.capacity).sum();
        let stored: u64 = of.iter().map(|n| n.stored_bytes).sum();
        println!(
            "{network}: {} nodes, {} stored of {}",
            of.len(),
            bytesize::ByteSize(stored),
            bytesize::ByteSize(capacity)
        );
    }
    println!(
        "overflow (IPFS): {fragments} fragments, {}",
        bytesize::ByteSize(bytes)
    );
    let not_active: Vec<String> = nodes
        .iter()
        .filter(|n| n.state != NodeState::Active)
        .map(|n| format!("{} ({})", n.name, n.state))
        .collect();
    if !not_active.is_empty() {
        println!("nodes not active: {}", not_active.join(", "));
    }
    let by_copies: Vec<String> = redundancy
        .fragments_by_node_copies
        .iter()
        .map(|(copies, count)| format!("{count} with {copies}"))
        .collect();
    println!(
        "fragments below target: {} (copies on active nodes: {}; {}); repair queue: {}",
        redundancy.fragments_below_target,
        if by_copies.is_empty() {
            "none stored".to_owned()
        } else {
            by_copies.join(", ")
        },
        redundancy.as_of.map_or_else(
            || "no walk over the segments yet".to_owned(),
            |t| format!("as of the walk that ended {}", seen_ago(t))
        ),
        redundancy.repair_queue
    );
    println!(
        "repaired so far: {} copies, {}",
        repaired.copies,
        bytesize::ByteSize(repaired.bytes)
    );
    println!(
        "scrub: {} of {} replicas audited in the current passes ({} failed); last passes: {} audits, {} failed",
        scrub.pass_audits,
        scrub.replicas,
        scrub.pass_failures,
        scrub.last_pass_audits,
        scrub.last_pass_failures
    );
    println!(
        "awaiting removal: {garbage} replicas; swept so far: {} orphan replicas, {} orphan pins",
        counters.orphans_swept, counters.orphan_pins_swept
    );
    Ok(())
}

pub(super) async fn inspect(args: InspectArgs) -> Result<(), GatewayError> {
    let index = args.index.open().await?;
    let (bucket, key) = (args.bucket, args.key);
    let row = index
        .get_object(&bucket, &key)
        .await?
        .ok_or_else(|| GatewayError::NoSuchKey(format!("{bucket}/{key}")))?;
    let layout = index.layout(&row.id, 0..u64::MAX).await?;
    let master_keys = layout
        .iter()
        .filter_map(|s| s.key.as_ref().map(|k| k.key_id.clone()))
        .collect();
    let fragments: Vec<FragmentReport> = layout
        .iter()
        .enumerate()
        .flat_map(|(segment, s)| {
            s.fragments.iter().map(move |f| FragmentReport {
                segment,
                index: f.index,
                key: node_key(&s.data_id, s.seq, f.index),
                size: f.size,
                placements: f.placements.clone(),
            })
        })
        .collect();
    let overflowed: Vec<u64> = fragments
        .iter()
        .filter(|f| f.placements.iter().any(|p| p.network_name() == OVERFLOW))
        .map(|f| f.size)
        .collect();
    print_json(&InspectReport {
        bucket: row.bucket,
        key: row.key,
        size: row.size,
        etag: row.etag,
        master_keys,
        overflow: OverflowReport {
            fragments: overflowed.len() as u64,
            bytes: overflowed.iter().sum(),
        },
        fragments,
    });
    Ok(())
}
