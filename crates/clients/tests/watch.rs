//! The dependency watcher: readiness follows whether each watched dependency
//! answers, names the one that does not, and comes back without a restart.

use std::sync::Arc;
use std::time::Duration;

use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_clients::{Clients, WATCH_INTERVAL, Watched, watch_dependencies};
use fxtriage_objstore::{LocalDirStore, ObjectStore};
use fxtriage_proto::Namespace;
use fxtriage_telemetry::health::Readiness;
use tokio_util::sync::CancellationToken;

/// Waits (a few watch intervals at most) until `readiness` is `ready`.
async fn until_ready_is(readiness: &Readiness, ready: bool) {
    let deadline = tokio::time::Instant::now() + WATCH_INTERVAL * 10;
    while readiness.is_ready() != ready {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness did not become {ready}: {:?}",
            readiness.unavailable()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_follows_the_object_store_and_recovers_without_a_restart() {
    let directory = tempfile::tempdir().expect("tempdir");
    let root = directory.path().join("objects");
    // A file where the store's root should be: the store cannot work.
    std::fs::write(&root, b"in the way").expect("write");
    let clients = Clients {
        bus: Arc::new(InProcessBus::default()) as Arc<dyn Bus>,
        namespace: Namespace::none(),
        store: Some(Arc::new(LocalDirStore::new(root.clone())) as Arc<dyn ObjectStore>),
        database: None,
    };
    let readiness = Readiness::new();
    readiness.set_ready(true);
    let stop = CancellationToken::new();
    let watcher = watch_dependencies(
        &clients,
        Watched {
            bus: true,
            store: true,
            database: false,
        },
        readiness.clone(),
        stop.clone(),
    );
    until_ready_is(&readiness, false).await;
    let unavailable = readiness.unavailable();
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    assert_eq!(unavailable[0].0, "object-store");
    assert!(
        unavailable[0].1.contains(&root.display().to_string()),
        "{unavailable:?}"
    );

    // The obstacle removed: ready again at the next check, nothing restarted.
    std::fs::remove_file(&root).expect("remove");
    until_ready_is(&readiness, true).await;
    assert!(readiness.unavailable().is_empty());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the watcher stops when told")
        .expect("the watcher does not panic");
}
