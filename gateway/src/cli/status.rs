//! `tenfold status` and `tenfold inspect`: what the index records of the
//! nodes, the overflow store and one object, as text or JSON.

use std::collections::BTreeSet;

use clap::Args;
use serde::Serialize;
use tenfold_balancer::{Network, NodeSpec, OVERFLOW, Placement};

use super::IndexArgs;
use crate::error::GatewayError;

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

/// A registered node as `status` and `nodes list` show it.
#[derive(Debug, Serialize)]
pub(super) struct NodeReport {
    pub id: i64,
    pub name: String,
    pub endpoint: String,
    pub network: Network,
    pub capacity: u64,
    /// Bytes the index records on it.
    pub stored: u64,
}

impl From<&NodeSpec> for NodeReport {
    fn from(n: &NodeSpec) -> Self {
        Self {
            id: n.id,
            name: n.name.clone(),
            endpoint: n.endpoint.clone(),
            network: n.network,
            capacity: n.capacity,
            stored: n.stored_bytes,
        }
    }
}

/// Fragments held by the overflow store, and their bytes.
#[derive(Debug, Serialize)]
struct OverflowReport {
    fragments: u64,
    bytes: u64,
}

/// `tenfold status --json`.
#[derive(Debug, Serialize)]
struct StatusReport {
    nodes: Vec<NodeReport>,
    overflow: OverflowReport,
    /// Replicas queued for removal.
    garbage: i64,
}

/// One fragment of `tenfold inspect --json`.
#[derive(Debug, Serialize)]
struct FragmentReport {
    segment: usize,
    index: u16,
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
    if args.json {
        print_json(&StatusReport {
            nodes: nodes.iter().map(NodeReport::from).collect(),
            overflow: OverflowReport { fragments, bytes },
            garbage,
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
    println!("awaiting removal: {garbage} replicas");
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
