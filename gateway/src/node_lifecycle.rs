//! The node registry over time: every `refresh` the gateway re-reads the
//! registry (nodes added, drained or removed at run time, usage recorded by
//! other gateways), probes every node, records in the index which nodes it
//! reached, and marks lost the active nodes nobody has reached for
//! `node_lost_after` — their replicas then no longer count, and repair
//! ([`crate::repair`]) copies them elsewhere. A lost node that answers
//! again is active again, holding nothing the index names.

use std::sync::Arc;
use std::time::Duration;

use tenfold_balancer::{Balancer, NodeState};

use crate::index::{Index, now_ms};

/// Records what this probe round saw; `true` when a node changed state.
async fn record_round(index: &Index, balancer: &Balancer, lost_after: Duration) -> bool {
    let status = balancer.status();
    let reached: Vec<i64> = status
        .iter()
        .filter(|n| n.unreachable_for.is_none())
        .map(|n| n.id)
        .collect();
    let mut changed = false;
    match index.record_seen(&reached).await {
        Ok(back) => {
            for id in back {
                tracing::warn!(
                    node = id,
                    "a lost node answers again: active, and what it held is garbage"
                );
                changed = true;
            }
        }
        Err(e) => tracing::warn!(error = %e, "recording which nodes answered"),
    }
    let lost_ms = i64::try_from(lost_after.as_millis()).unwrap_or(i64::MAX);
    for node in &status {
        // Lost only once this gateway has itself seen it unreachable that
        // long, and no other gateway reached it meanwhile.
        let unreachable_long = node.unreachable_for.is_some_and(|d| d >= lost_after);
        if node.state != NodeState::Active || !unreachable_long {
            continue;
        }
        match index
            .mark_lost(node.id, now_ms().saturating_sub(lost_ms))
            .await
        {
            Ok(true) => {
                tracing::warn!(node = node.id, name = %node.name, ?lost_after, "node lost: its replicas are repaired elsewhere");
                changed = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(node = node.id, error = %e, "marking a node lost"),
        }
    }
    changed
}

/// Re-reads the registry and probes every node every `interval`, and
/// follows the node lifecycle (see the module documentation).
pub fn spawn_registry_refresh(
    index: Index,
    balancer: Arc<Balancer>,
    interval: Duration,
    lost_after: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = index.fold_node_usage().await {
                tracing::warn!(error = %e, "folding the node usage log into its counters");
            }
            match index.nodes().await {
                Ok(nodes) => balancer.set_nodes(nodes),
                Err(e) => tracing::warn!(error = %e, "reading the node registry"),
            }
            balancer.probe_all().await;
            if record_round(&index, &balancer, lost_after).await {
                match index.nodes().await {
                    Ok(nodes) => balancer.set_nodes(nodes),
                    Err(e) => tracing::warn!(error = %e, "reading the node registry"),
                }
            }
        }
    });
}
