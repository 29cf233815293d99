//! Clients that send their request head slowly (or never finish it) against a real node in
//! this process. A test binary of its own: it lowers the process's file-descriptor limit so
//! that an unbounded server would run out of descriptors, as a public node would.

mod common;

use piazza_node::rpc::RpcLimits;
use piazza_node::{NodeConfig, NodeHandle};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any wait in these tests (a failure, not a speed measurement).
const WAIT: Duration = Duration::from_secs(30);
/// The process's descriptor limit during these tests.
const FILES_MAX: u64 = 1024;
/// Slow connections opened: more than the limit leaves for an unbounded server (one descriptor
/// each on the client and the server side), fewer than it leaves the clients alone.
const SLOW_CONNECTIONS: usize = 700;

struct Node {
    handle: NodeHandle,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start(limits: RpcLimits) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(100);
    config.rpc = limits;
    let handle = piazza_node::start(config, Some(common::genesis(&[])), common::validator_key())
        .await
        .unwrap();
    Node {
        url: format!("http://{}", handle.rpc_addr),
        handle,
        _dir: dir,
    }
}

fn lower_file_limit(files_max: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer only.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_cur.min(files_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

async fn metric(url: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_connections_do_not_keep_health_or_calls_out() {
    lower_file_limit(FILES_MAX);
    let limits = RpcLimits {
        connections_max: 128,
        connections_per_address_max: 128,
        ..RpcLimits::default()
    };
    let node = start(limits).await;
    let mut slow = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        let mut stream = TcpStream::connect(node.handle.rpc_addr)
            .await
            .expect("a slow connection could not even connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: node\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        loop {
            for stream in &slow {
                let _ = stream.try_write(b"a");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // A new client (no pooled connection) is served while the slow ones keep trickling.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(WAIT)
        .build()
        .unwrap();
    for _ in 0..3 {
        let health = client
            .get(format!("{}/health", node.url))
            .send()
            .await
            .expect("/health unreachable");
        assert_eq!(health.text().await.unwrap(), "ok");
        let status = client
            .post(format!("{}/", node.url))
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#)
            .send()
            .await
            .expect("JSON-RPC unreachable");
        assert_eq!(status.status().as_u16(), 200);
    }
    let evicted = metric(&node.url, "piazza_rpc_connections_evicted_total").await;
    assert!(
        evicted >= (SLOW_CONNECTIONS - 128) as u64,
        "{evicted} evicted"
    );
    assert!(metric(&node.url, "piazza_rpc_connections_open").await <= 128);
    trickle.abort();
    node.handle.shutdown().await;
}

/// Reads until the node closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the node kept the connection open")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_head_and_an_idle_keep_alive_are_closed_at_the_header_timeout() {
    let node = start(RpcLimits {
        header_read_timeout_ms: 300,
        ..RpcLimits::default()
    })
    .await;
    let mut unfinished = TcpStream::connect(node.handle.rpc_addr).await.unwrap();
    unfinished
        .write_all(b"GET /health HTTP/1.1\r\nhost: node\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut unfinished).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    let mut idle = TcpStream::connect(node.handle.rpc_addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    node.handle.shutdown().await;
}
