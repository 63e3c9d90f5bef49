//! The `nats-server` harness of `tests/common/nats.rs` itself: a server and a cluster
//! start, survive a SIGKILL of a node and come back, as the NATS tests rely on.

mod common;

use std::time::Instant;

use common::nats::{NatsCluster, NatsServer};

#[test]
fn single_server_starts_is_killed_and_restarts() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    assert_ne!(server.port(), 4222, "never the system's server");
    assert!(server.is_ready());
    let (status, body) = server.monitor("/jsz").expect("/jsz answers");
    assert_eq!(status, 200, "{body}");
    assert!(
        server.meta_leader().is_none(),
        "a single server has no meta group"
    );

    server.kill();
    assert!(!server.is_running());
    assert!(!server.is_ready());
    assert!(server.monitor("/jsz").is_none(), "the monitor died with it");

    server.restart();
    assert!(server.is_running());
    assert!(server.is_ready());
    assert!(server.is_healthy());
    assert!(
        server.store_dir().join("jetstream").is_dir(),
        "the same store"
    );
    let log = std::fs::read_to_string(server.log_path()).expect("the server log");
    assert_eq!(
        log.matches("Server is ready").count(),
        2,
        "both runs logged:\n{log}"
    );
}

#[test]
fn cluster_elects_a_new_meta_leader_when_its_leader_is_killed() {
    let started = Instant::now();
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    eprintln!("cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.urls().split(',').count(), 3);

    // The leader, so that the survivors must hold an election.
    let old = cluster.wait_for_meta_leader();
    let old_name = cluster.node(old).name().to_string();
    cluster.node(old).kill();
    let killed = Instant::now();
    let new = cluster.wait_for_meta_leader();
    eprintln!("new meta leader after {:?}", killed.elapsed());
    assert_ne!(new, old);
    for i in (0..3).filter(|&i| i != old) {
        let node = cluster.node(i);
        assert!(node.is_ready(), "{} survived", node.name());
        let seen = node.meta_leader().expect("a leader");
        assert_ne!(
            seen,
            old_name,
            "{} still follows the dead leader",
            node.name()
        );
    }

    let restarted = Instant::now();
    cluster.node(old).restart();
    assert!(cluster.node(old).is_ready());
    // The node back is counted again: it agrees on the leader with the others.
    let leader = cluster.wait_for_meta_leader();
    eprintln!("node back in the cluster after {:?}", restarted.elapsed());
    assert_eq!(
        cluster.node(old).meta_leader().as_deref(),
        Some(cluster.node(leader).name())
    );
    assert!(cluster.node(old).is_healthy());
}
