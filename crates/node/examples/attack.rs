//! Hostile clients against a node in this process, with figures: the process's resident memory
//! (`/proc/self/status` VmRSS and VmHWM, the peak reset before each scenario) and `/health`
//! latency. The clients run in the same process and hold little memory of their own (bodies are
//! streamed from one small buffer), so the memory figures are the node's, give or take a few MB.
//!
//! ```text
//! cargo run --release -p piazza-node --example attack -- [sockets|bodies|slow|all]
//!     [--sockets 200] [--bodies 200] [--body-mb 20] [--attempts 20000]
//! ```
//!
//! - `sockets`: `--sockets` WebSockets subscribed to `events` that never read, one that reads,
//!   and one block of 201 × 64 = 12,864 transfers.
//! - `bodies`: `--bodies` concurrent `piazza_submitTransaction` bodies of `--body-mb` MB each.
//! - `slow`: `--attempts` connections that send a request head one byte a second, while a
//!   prober times `/health` and `piazza_status` on fresh connections.

use futures_util::{SinkExt, StreamExt};
use piazza_ledger::bank;
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_node::rpc::RpcLimits;
use piazza_node::{NodeConfig, NodeHandle};
use piazza_primitives::{Address, Amount, SecretKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const SENDERS: u16 = 201;
const TXS_PER_SENDER: u64 = 64;

struct Options {
    scenario: String,
    sockets: usize,
    bodies: usize,
    body_mb: usize,
    attempts: usize,
}

fn options() -> Options {
    let mut options = Options {
        scenario: "all".into(),
        sockets: 200,
        bodies: 200,
        body_mb: 20,
        attempts: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match arg.as_str() {
            "--sockets" => options.sockets = number(),
            "--bodies" => options.bodies = number(),
            "--body-mb" => options.body_mb = number(),
            "--attempts" => options.attempts = number(),
            scenario => options.scenario = scenario.to_string(),
        }
    }
    options
}

/// (VmRSS, VmHWM) in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn key(i: u16) -> SecretKey {
    let mut seed = [1u8; 32];
    seed[..2].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(seed)
}

fn genesis(validator: &SecretKey) -> Genesis {
    let validator = validator.public_key().address();
    let mut accounts = vec![GenesisAccount {
        address: validator,
        balance: Amount::pza(10_000),
    }];
    accounts.extend((0..SENDERS).map(|i| GenesisAccount {
        address: key(i).public_key().address(),
        balance: Amount::pza(1_000),
    }));
    Genesis {
        chain_id: "piazza-attack".into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: staking::Params {
            unbonding_delay_blocks: 3,
            min_bond: [
                Amount::pza(1_000),
                Amount::pza(100),
                Amount::pza(100),
                Amount::pza(100),
            ],
        },
        accounts,
        bonds: vec![GenesisBond {
            address: validator,
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }],
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

async fn start(limits: RpcLimits, block_interval_ms: u64) -> (NodeHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = SecretKey::from_seed([42; 32]);
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(block_interval_ms);
    config.rpc = limits;
    let node = piazza_node::start(config, Some(genesis(&validator)), validator)
        .await
        .expect("node starts");
    (node, dir)
}

async fn metrics(node: &NodeHandle) -> BTreeMap<String, u64> {
    let text = reqwest::get(format!("http://{}/metrics", node.rpc_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn print_memory(label: &str, idle: u64) {
    let (rss, peak) = memory_mib();
    println!(
        "  {label}: RSS {rss} MiB, peak {peak} MiB, peak above idle {} MiB",
        peak.saturating_sub(idle)
    );
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn subscribe(url: &str) -> (Socket, Value) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{url}/ws"))
        .await
        .expect("socket");
    let call =
        json!({"jsonrpc": "2.0", "id": 1, "method": "piazza_subscribe", "params": ["events"]});
    socket
        .send(WsMessage::Text(call.to_string().into()))
        .await
        .expect("subscribe");
    loop {
        let message = socket.next().await.expect("answer").expect("answer");
        let answer: Value =
            serde_json::from_str(message.to_text().unwrap_or("")).unwrap_or_default();
        if answer["id"] == 1 {
            return (socket, answer["result"].clone());
        }
    }
}

async fn sockets(options: &Options) {
    println!(
        "sockets: {} subscribers to `events` that never read, one reader, one block of {} transfers",
        options.sockets,
        SENDERS as u64 * TXS_PER_SENDER
    );
    let limits = RpcLimits {
        // The default admits 64 sockets per address; all of these come from 127.0.0.1.
        sockets_per_address_max: options.sockets + 8,
        sockets_max: options.sockets + 8,
        ..RpcLimits::default()
    };
    let (node, _dir) = start(limits, 3_000).await;
    let url = node.rpc_addr.to_string();
    let txs: Vec<SignedTransaction> = (0..SENDERS)
        .flat_map(|i| {
            let key = key(i);
            (0..TXS_PER_SENDER).map(move |nonce| {
                Transaction {
                    chain_id: "piazza-attack".into(),
                    sender: key.public_key(),
                    nonce,
                    max_fee: Amount::pza(1),
                    messages: vec![Message::Bank(bank::Msg::Send {
                        to: Address([7; 20]),
                        amount: Amount::new(1),
                    })],
                }
                .sign(&key)
            })
        })
        .collect();
    let mut silent = Vec::new();
    for _ in 0..options.sockets {
        silent.push(subscribe(&url).await.0);
    }
    let (mut reader, id) = subscribe(&url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory_mib();
    reset_peak();
    println!(
        "  idle (node, {} sockets open, txs signed): RSS {idle} MiB",
        options.sockets + 1
    );

    let expected = txs.len();
    let height = node.app.head().expect("head").height;
    while node.app.head().expect("head").height == height {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let admitted = node
        .app
        .submit_many(txs)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    println!("  admitted {admitted} in {:?}", started.elapsed());
    let reading = tokio::spawn(async move {
        let mut seen = 0;
        while seen < expected {
            let Some(Ok(message)) = reader.next().await else {
                break;
            };
            let note: Value =
                serde_json::from_str(message.to_text().unwrap_or("")).unwrap_or_default();
            if note["params"]["subscription"] == id
                && note["params"]["result"]["kind"] == "bank.transfer"
            {
                seen += 1;
            }
        }
        seen
    });
    let seen = tokio::time::timeout(Duration::from_secs(300), reading)
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    println!(
        "  reader got {seen}/{expected} transfer events {:?} after submission",
        started.elapsed()
    );
    // Give the send timeout time to close the silent ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = 0;
    while Instant::now() < deadline {
        closed = metrics(&node).await["piazza_ws_sockets_closed_slow_total"];
        if closed as usize >= options.sockets {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  silent sockets closed as too slow: {closed}/{}",
        options.sockets
    );
    print_memory("after", idle);
    drop(silent);
    node.shutdown().await;
}

/// Sends a `length`-byte `piazza_submitTransaction` body from one 64 KiB buffer; returns the
/// status code (0 when the node closed the connection first).
async fn send_body(addr: std::net::SocketAddr, length: usize) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let prefix = br#"{"jsonrpc":"2.0","id":1,"method":"piazza_submitTransaction","params":[""#;
    let suffix = br#""]}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    let chunk = vec![b'a'; 64 * 1024];
    let (mut read, mut write) = stream.split();
    let writing = async {
        write.write_all(head.as_bytes()).await?;
        write.write_all(prefix).await?;
        let mut left = length - prefix.len() - suffix.len();
        while left > 0 {
            let n = left.min(chunk.len());
            write.write_all(&chunk[..n]).await?;
            left -= n;
        }
        write.write_all(suffix).await?;
        std::io::Result::Ok(())
    };
    let reading = async {
        let mut answer = vec![0u8; 4096];
        let n = read.read(&mut answer).await.unwrap_or(0);
        String::from_utf8_lossy(&answer[..n])
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0u16)
    };
    tokio::pin!(writing, reading);
    let mut written = false;
    loop {
        tokio::select! {
            code = &mut reading => return code,
            result = &mut writing, if !written => {
                written = true;
                if result.is_err() {
                    return tokio::time::timeout(Duration::from_secs(5), reading).await.unwrap_or(0);
                }
            }
        }
    }
}

async fn bodies(options: &Options) {
    let length = options.body_mb * 1_000_000;
    println!(
        "bodies: {} concurrent piazza_submitTransaction bodies of {} MB",
        options.bodies, options.body_mb
    );
    let (node, _dir) = start(RpcLimits::default(), 1_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = memory_mib();
    reset_peak();
    println!("  idle: RSS {idle} MiB");
    let started = Instant::now();
    let sends: Vec<_> = (0..options.bodies)
        .map(|_| tokio::spawn(send_body(node.rpc_addr, length)))
        .collect();
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    for send in sends {
        *codes.entry(send.await.unwrap_or(0)).or_default() += 1;
    }
    println!(
        "  answers by status (0 = closed without one): {codes:?} in {:?}",
        started.elapsed()
    );
    let m = metrics(&node).await;
    println!(
        "  refused busy {}, too large {}, timed out {}",
        m["piazza_rpc_bodies_busy_total"],
        m["piazza_rpc_bodies_too_large_total"],
        m["piazza_rpc_bodies_timed_out_total"]
    );
    print_memory("after", idle);
    node.shutdown().await;
}

/// Times one request on a fresh connection; `None` if it failed.
async fn probe(addr: std::net::SocketAddr, request: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .ok()
        .flatten()
        .map(|()| started.elapsed())
}

async fn slow(options: &Options) {
    let (files_max, _) = libc_rlimit();
    // Client sockets held open at once: the rest of the descriptor limit minus the server's cap.
    let limits = RpcLimits::default();
    let held_max = (files_max as usize)
        .saturating_sub(limits.connections_max + 1_000)
        .min(options.attempts);
    println!(
        "slow: {} connection attempts trickling a request head (at most {held_max} held open by the clients; fd limit {files_max})",
        options.attempts
    );
    let (node, _dir) = start(limits, 1_000).await;
    let addr = node.rpc_addr;
    let (idle, _) = memory_mib();
    reset_peak();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober_stop = stop.clone();
    let prober = tokio::spawn(async move {
        let mut health = Vec::new();
        let mut status = Vec::new();
        let mut failures = 0;
        while !prober_stop.load(std::sync::atomic::Ordering::Relaxed) {
            match probe(
                addr,
                b"GET /health HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n",
            )
            .await
            {
                Some(took) => health.push(took),
                None => failures += 1,
            }
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#;
            let request = format!(
                "POST / HTTP/1.1\r\nhost: node\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            match probe(addr, request.as_bytes()).await {
                Some(took) => status.push(took),
                None => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (health, status, failures)
    });
    let started = Instant::now();
    let mut held: std::collections::VecDeque<TcpStream> = std::collections::VecDeque::new();
    let mut connect_failures = 0;
    let mut last_trickle = Instant::now();
    for _ in 0..options.attempts {
        if held.len() >= held_max {
            held.pop_front();
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.try_write(b"GET /health HTTP/1.1\r\nhost: node\r\nx-slow: ");
                held.push_back(stream);
            }
            Err(_) => connect_failures += 1,
        }
        if last_trickle.elapsed() > Duration::from_secs(1) {
            for stream in &held {
                let _ = stream.try_write(b"a");
            }
            last_trickle = Instant::now();
        }
    }
    let opened = started.elapsed();
    // Keep trickling a while with everything held.
    for _ in 0..5 {
        for stream in &held {
            let _ = stream.try_write(b"a");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut health, mut status, failures) = prober.await.unwrap_or_default();
    let m = metrics(&node).await;
    println!(
        "  {} attempts in {opened:?}, {connect_failures} failed to connect; node: evicted {}, refused {}, open {}",
        options.attempts,
        m["piazza_rpc_connections_evicted_total"],
        m["piazza_rpc_connections_refused_total"],
        m["piazza_rpc_connections_open"]
    );
    for (name, samples) in [("/health", &mut health), ("piazza_status", &mut status)] {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "  {name} on fresh connections during the attack: {} answered, p50 {:?}, p99 {:?}, max {:?}",
            samples.len(),
            at(0.5),
            at(0.99),
            samples.last().copied().unwrap_or_default()
        );
    }
    println!("  probes that failed: {failures}");
    print_memory("after", idle);
    drop(held);
    node.shutdown().await;
}

/// (soft, hard) descriptor limit, the soft one raised to the hard one.
fn libc_rlimit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (1024, 1024);
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    (limit.rlim_cur, limit.rlim_max)
}

#[tokio::main]
async fn main() {
    let options = options();
    let all = options.scenario == "all";
    if all || options.scenario == "sockets" {
        sockets(&options).await;
    }
    if all || options.scenario == "bodies" {
        bodies(&options).await;
    }
    if all || options.scenario == "slow" {
        slow(&options).await;
    }
}
