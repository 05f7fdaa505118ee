//! The HL7 listener's bounds against a hostile or broken peer, on a real
//! PostgreSQL: at most `MAX_CONNECTIONS` connections at once (one more is
//! closed at once, and a slot freed is usable again), a message that never
//! ends is cut at `MAX_MESSAGE_BYTES`, and bytes that never start a message
//! are skipped only up to the same bound. Each ends that connection alone: the
//! others are still answered.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use fxtriage_dispatch::hl7_in::{self, MAX_CONNECTIONS, MAX_MESSAGE_BYTES};
use fxtriage_sites::SiteRegistry;
use fxtriage_testkit::FreshDatabase;
use tokio_util::sync::CancellationToken;

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream
}

/// Sends a message that is not HL7 and reads the acknowledgement (an AR):
/// the connection is served.
fn answered(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(&fxtriage_hl7::mllp::frame(b"not an HL7 message"))
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let mut byte = [0_u8; 1];
    while !answer.ends_with(&fxtriage_hl7::mllp::END) {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => return false,
        }
    }
    String::from_utf8_lossy(&answer).contains("MSA|AR")
}

/// Whether the listener closed `stream` (a read ends without data).
fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0_u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Writes `prefix`, then filler until more than `MAX_MESSAGE_BYTES` went out
/// or the listener stopped reading.
fn flood(stream: &mut TcpStream, prefix: &[u8]) {
    let _ = stream.write_all(prefix);
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0;
    while sent <= MAX_MESSAGE_BYTES && stream.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_is_bounded_and_the_others_are_served() {
    let Some(database) = FreshDatabase::create("fxt_dispatch_hl7_bounds").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let shutdown = CancellationToken::new();
    let (address, task) = hl7_in::serve(
        "127.0.0.1:0".parse().expect("address"),
        pool,
        registry,
        shutdown.clone(),
    )
    .await
    .expect("listen");

    tokio::task::spawn_blocking(move || {
        // Every slot taken, each one served.
        let mut open: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(address)).collect();
        for stream in &mut open {
            assert!(answered(stream), "a connection within the limit is served");
        }
        // One more is closed at once.
        let mut extra = connect(address);
        assert!(
            closed(&mut extra),
            "the connection over the limit is closed"
        );
        // A slot freed is usable again (the listener notices the close first).
        drop(open.pop());
        let mut again = loop {
            let mut stream = connect(address);
            if answered(&mut stream) {
                break stream;
            }
        };
        drop(open.pop());

        // A message that never ends: cut once it passes the bound.
        let mut endless = connect(address);
        flood(&mut endless, &[fxtriage_hl7::mllp::START]);
        assert!(
            closed(&mut endless),
            "the endless message ends its connection"
        );
        // Bytes that never start a message: the same.
        let mut junk = connect(address);
        flood(&mut junk, &[]);
        assert!(
            closed(&mut junk),
            "endless bytes before a start end their connection"
        );

        // The others are still served.
        assert!(answered(&mut again));
        assert!(answered(&mut open[0]));
    })
    .await
    .expect("the peer's side");
    shutdown.cancel();
    task.await.expect("listener");
    database.drop_database().await;
}
