//! `fleet-broker status`: the active/standby cluster as its PostgreSQL database knows it:
//! who leads, with which epoch, since when and for how much longer, and every engine that
//! ever registered, with its role and when it was last heard from.

use std::time::Duration;

use crate::store::lease::{Cluster, NodeRow};

/// An engine that has not renewed or tried the lease for this long is shown as gone.
const GONE_AFTER_MS: u64 = 10_000;

/// Reads the cluster over `url`; the text to print and whether a live engine leads.
pub async fn status(url: &str) -> Result<(String, bool), String> {
    let cluster = crate::store::lease::cluster(url, Duration::from_secs(5))
        .await
        .map_err(|e| match e {
            crate::store::lease::LeaseError::Database(db)
                if db.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                format!(
                    "no active/standby engine has run on {} yet (no fleet_leader table)",
                    crate::store::lease::describe(url)
                )
            }
            e => e.to_string(),
        })?;
    let leads = cluster.lease.is_live();
    Ok((render(&cluster), leads))
}

fn ago(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        format!("{} ago", super::render::age(ms))
    }
}

fn role(lease_holder: Option<&str>, n: &NodeRow) -> &'static str {
    if n.seen_ms > GONE_AFTER_MS {
        "gone"
    } else if lease_holder == Some(n.node.as_str()) {
        "leader"
    } else if n.leading {
        "stepping down"
    } else {
        "standby"
    }
}

/// The cluster as a summary line and a table.
pub fn render(c: &Cluster) -> String {
    let l = &c.lease;
    let holder = l.is_live().then_some(l.holder.as_str());
    let mut out = match holder {
        Some(holder) => format!(
            "leader: {holder} at {} (epoch {}), lease {:.1} s left{}\n",
            l.address,
            l.epoch,
            l.remaining_ms as f64 / 1000.0,
            c.term_ms.map_or(String::new(), |ms| format!(
                ", leading for {}",
                super::render::age(ms)
            )),
        ),
        None => format!(
            "leader: none: the lease is free (last epoch {}); a standby takes it at its next try\n",
            l.epoch
        ),
    };
    let rows: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                role(holder, n).to_owned(),
                n.address.clone(),
                ago(n.seen_ms),
            ]
        })
        .collect();
    let mut table = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = super::render::table(&mut table, &["NODE", "ROLE", "ADDRESS", "LAST SEEN"], &rows);
    out.push_str(&String::from_utf8_lossy(&table));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lease::LeaseRow;

    fn node(name: &str, leading: bool, seen_ms: u64) -> NodeRow {
        NodeRow {
            node: name.into(),
            address: format!("http://{name}:8080"),
            leading,
            seen_ms,
        }
    }

    #[test]
    fn shows_who_leads_and_each_engine_with_its_role() {
        let c = Cluster {
            lease: LeaseRow {
                holder: "engine-a".into(),
                address: "http://engine-a:8080".into(),
                epoch: 7,
                remaining_ms: 2_700,
            },
            term_ms: Some(725_000),
            nodes: vec![
                node("engine-a", true, 300),
                node("engine-b", false, 900),
                node("engine-c", false, 4 * 3_600_000),
            ],
        };
        let text = render(&c);
        assert_eq!(
            text,
            "leader: engine-a at http://engine-a:8080 (epoch 7), lease 2.7 s left, leading for 12m\n\
             NODE      ROLE     ADDRESS               LAST SEEN\n\
             engine-a  leader   http://engine-a:8080  0.3 s ago\n\
             engine-b  standby  http://engine-b:8080  0.9 s ago\n\
             engine-c  gone     http://engine-c:8080  4h 0m ago\n"
        );
    }

    #[test]
    fn a_free_lease_says_nobody_leads() {
        let c = Cluster {
            lease: LeaseRow {
                holder: "engine-a".into(),
                address: "http://engine-a:8080".into(),
                epoch: 3,
                remaining_ms: 0,
            },
            term_ms: None,
            nodes: vec![node("engine-a", true, 1_500)],
        };
        let text = render(&c);
        assert!(text.starts_with("leader: none"), "{text}");
        assert!(text.contains("engine-a  stepping down"), "{text}");
    }
}
