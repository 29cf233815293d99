//! Hostile clients against a real node in this process (loopback only): sockets that never read,
//! oversized and trickled bodies, huge parameters, too many sockets. Each test shrinks the
//! server's limits so that it hits them quickly, and checks the node refused, closed or cut what
//! it had to while it kept serving well-behaved clients.

mod common;

use futures_util::{SinkExt, StreamExt};
use piazza_ledger::bank;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_node::rpc::{RpcLimits, RPC_BODY_BYTES_MAX, SERVER_BUSY};
use piazza_node::{NodeConfig, NodeHandle};
use piazza_primitives::{Address, Amount, SecretKey};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Bound on any wait in these tests (a failure, not a speed measurement).
const WAIT: Duration = Duration::from_secs(30);
/// The longest error message the node may send (its limit plus the ellipsis).
const ERROR_BYTES_MAX: usize = piazza_node::rpc::framing::ERROR_MESSAGE_BYTES_MAX + 4;

struct Node {
    handle: NodeHandle,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start(limits: RpcLimits, users: &[SecretKey]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(100);
    config.mempool.nonce_window = 10_000;
    config.rpc = limits;
    let handle = piazza_node::start(
        config,
        Some(common::genesis(users)),
        common::validator_key(),
    )
    .await
    .unwrap();
    Node {
        url: format!("http://{}", handle.rpc_addr),
        handle,
        _dir: dir,
    }
}

async fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
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

/// Polls `name` until it reaches `at_least`.
async fn wait_for_metric(url: &str, name: &str, at_least: u64) -> u64 {
    tokio::time::timeout(WAIT, async {
        loop {
            let value = metric(url, name).await;
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} stayed below {at_least}"))
}

/// `per_sender` transfers from each of `senders`, nonces from `first_nonce`.
fn transfers(senders: &[SecretKey], per_sender: u64, first_nonce: u64) -> Vec<SignedTransaction> {
    senders
        .iter()
        .flat_map(|key| {
            (first_nonce..first_nonce + per_sender).map(move |nonce| {
                Transaction {
                    chain_id: "piazza-test".into(),
                    sender: key.public_key(),
                    nonce,
                    max_fee: Amount::pza(1),
                    messages: vec![Message::Bank(bank::Msg::Send {
                        to: Address([7; 20]),
                        amount: Amount::new(1),
                    })],
                }
                .sign(key)
            })
        })
        .collect()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a socket and subscribes `times` to `topic`; returns the socket and the ids.
async fn subscribed(url: &str, topic: &str, times: usize) -> (Socket, Vec<String>) {
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut ids = Vec::new();
    for call in 0..times {
        let request =
            json!({"jsonrpc": "2.0", "id": call, "method": "piazza_subscribe", "params": [topic]});
        socket
            .send(WsMessage::Text(request.to_string().into()))
            .await
            .unwrap();
        let id = tokio::time::timeout(WAIT, async {
            loop {
                let message = socket.next().await.unwrap().unwrap();
                let answer: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
                if answer["id"] == json!(call) {
                    return answer["result"].as_str().unwrap().to_string();
                }
            }
        })
        .await
        .expect("no answer to a subscribe call");
        ids.push(id);
    }
    (socket, ids)
}

/// Reads notifications until `transfers` `bank.transfer` events arrived for subscription `id`,
/// counting them in `seen`.
async fn read_transfers(
    mut socket: Socket,
    id: String,
    transfers: usize,
    seen: Arc<AtomicUsize>,
) -> Socket {
    while seen.load(Relaxed) < transfers {
        let WsMessage::Text(text) = socket.next().await.unwrap().unwrap() else {
            continue;
        };
        let note: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(note["params"]["subscription"], json!(id), "{note}");
        if note["params"]["result"]["kind"] == "bank.transfer" {
            seen.fetch_add(1, Relaxed);
        }
    }
    socket
}

/// Reads a socket that stopped reading until its close frame; returns the reason.
async fn close_reason(mut socket: Socket) -> String {
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let WsMessage::Close(frame) = message {
                return frame.map(|f| f.reason.to_string()).unwrap_or_default();
            }
        }
        String::from("(closed without a frame)")
    })
    .await
    .expect("the node never closed the socket")
}

/// Sockets subscribed 16 times to `events` that never read, a reader, and `batches` blocks of
/// `per_sender` transfers from each of 25 senders: the reader gets every event, the silent
/// sockets are closed; returns the close reasons.
async fn silent_subscribers(limits: RpcLimits, batches: u64, per_sender: u64) -> Vec<String> {
    const SILENT: usize = 6;
    let senders: Vec<SecretKey> = (1..=25).map(common::user_key).collect();
    let node = start(limits, &senders).await;
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(subscribed(&node.url, "events", 16).await.0);
    }
    let (reader, ids) = subscribed(&node.url, "events", 1).await;
    let total = (batches * per_sender) as usize * senders.len();
    let seen = Arc::new(AtomicUsize::new(0));
    let reading = tokio::spawn(read_transfers(reader, ids[0].clone(), total, seen.clone()));
    for batch in 0..batches {
        // The reader has read every earlier batch, so only the silent sockets fall behind.
        let earlier = (batch * per_sender) as usize * senders.len();
        tokio::time::timeout(WAIT, async {
            while seen.load(Relaxed) < earlier {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the reader missed events");
        let txs = transfers(&senders, per_sender, batch * per_sender);
        let results = node.handle.app.submit_many(txs);
        assert!(results.iter().all(Result::is_ok), "{:?}", results.first());
        // The next batch lands in a later block.
        let height = node.handle.app.head().unwrap().height;
        tokio::time::timeout(WAIT, async {
            while node.handle.app.head().unwrap().height < height + 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the node stopped making blocks");
    }
    let reader = tokio::time::timeout(WAIT, reading)
        .await
        .expect("the reading socket missed events")
        .unwrap();
    let closed = wait_for_metric(
        &node.url,
        "piazza_ws_sockets_closed_slow_total",
        SILENT as u64,
    )
    .await;
    assert_eq!(closed, SILENT as u64, "only the silent sockets are closed");
    let mut reasons = Vec::new();
    for socket in silent {
        reasons.push(close_reason(socket).await);
    }
    // The node still serves: a call over HTTP and the reader's socket.
    let (status, answer) = post(
        &node.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    drop(reader);
    node.handle.shutdown().await;
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_read_are_closed_at_the_send_timeout_and_a_reader_gets_every_event() {
    let limits = RpcLimits {
        socket_send_timeout_ms: 500,
        ..RpcLimits::default()
    };
    for reason in silent_subscribers(limits, 1, 60).await {
        assert!(reason.contains("not taken within 500 ms"), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_fall_behind_are_closed_at_the_queue_limit() {
    let limits = RpcLimits {
        socket_send_timeout_ms: 60_000,
        socket_queue_bytes_max: 64 * 1024,
        ..RpcLimits::default()
    };
    for reason in silent_subscribers(limits, 3, 24).await {
        assert!(
            reason.contains("bytes of later notifications waiting"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_past_the_per_address_cap_are_refused() {
    let limits = RpcLimits {
        sockets_per_address_max: 3,
        ..RpcLimits::default()
    };
    let node = start(limits, &[]).await;
    let ws_url = format!("{}/ws", node.url.replacen("http", "ws", 1));
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio_tungstenite::connect_async(&ws_url).await.unwrap().0);
    }
    let refused = tokio_tungstenite::connect_async(&ws_url).await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");
    assert_eq!(
        metric(&node.url, "piazza_ws_sockets_refused_total").await,
        1
    );
    // A place frees when a socket closes.
    open.pop().unwrap().close(None).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while metric(&node.url, "piazza_ws_sockets_open").await > 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    node.handle.shutdown().await;
}

fn error_of(answer: &str) -> (i64, String) {
    let answer: Value = serde_json::from_str(answer).unwrap();
    (
        answer["error"]["code"].as_i64().unwrap(),
        answer["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_are_refused_before_parsing() {
    let limits = RpcLimits {
        small_body_bytes_max: 64 * 1024,
        large_bodies_bytes_max: 0,
        ..RpcLimits::default()
    };
    let node = start(limits, &[]).await;

    // 1,000 calls: refused by the pre-scan with a short error.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#;
    let batch = format!("[{}]", vec![call; 1_000].join(","));
    let (status, answer) = post(&node.url, batch.into_bytes()).await;
    let (code, message) = error_of(&answer);
    assert_eq!((status, code), (200, -32600), "{answer}");
    assert!(message.contains("at most 100 calls"), "{message}");
    assert!(answer.len() < 256, "{answer}");

    // Many values in one call's params, under the body limit: refused before parsing.
    let values = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"piazza_status","params":[{}1]}}"#,
        "1,".repeat(25_000)
    );
    let (_, answer) = post(&node.url, values.into_bytes()).await;
    assert!(error_of(&answer).1.contains("JSON values"), "{answer}");
    assert_eq!(
        metric(&node.url, "piazza_rpc_bodies_refused_shape_total").await,
        2
    );

    // Over the small limit with no large-body budget: refused, whatever the method.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"piazza_submitTransaction","params":["{}"]}}"#,
        "ab".repeat(64 * 1024)
    );
    let (status, answer) = post(&node.url, big.into_bytes()).await;
    assert_eq!(
        (status, error_of(&answer).0),
        (503, SERVER_BUSY),
        "{answer}"
    );

    // A declared length over the hard limit: answered at once, without reading the body.
    let mut stream = TcpStream::connect(node.handle.rpc_addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        RPC_BODY_BYTES_MAX + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("-32001"), "{answer}");

    // Still serving.
    let (status, _) = post(&node.url, call.as_bytes().to_vec()).await;
    assert_eq!(status, 200);
    node.handle.shutdown().await;
}

/// Reads one HTTP response (headers and a `content-length` body) from a raw stream.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0usize);
                if received.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await
    .expect("no answer");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_share_a_budget_and_trickled_bodies_are_cut() {
    let limits = RpcLimits {
        small_body_bytes_max: 16 * 1024,
        large_bodies_bytes_max: 200 * 1024,
        large_body_wait_ms: 300,
        body_read_timeout_ms: 500,
        large_body_read_timeout_ms: 1_500,
        ..RpcLimits::default()
    };
    let node = start(limits, &[]).await;
    let large = |hex_bytes: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"piazza_submitTransaction","params":["{}"]}}"#,
            "a".repeat(hex_bytes)
        )
        .into_bytes()
    };

    // A large body that stalls half way holds 150 KiB of the 200 KiB budget...
    let body = large(150 * 1024);
    let mut holder = TcpStream::connect(node.handle.rpc_addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&body[..body.len() / 2]).await.unwrap();
    wait_for_metric(&node.url, "piazza_rpc_connections_open", 1).await;

    // ...so a second one waits, then is refused; a small call is served meanwhile. The hold
    // starts once the server has read the holder's head, which shows only as this refusal: a
    // second body sent before that is served (and refused as a transaction), so send again
    // until the budget refuses it, within WAIT.
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            let (status, answer) = post(&node.url, large(100 * 1024)).await;
            if status == 503 {
                return answer;
            }
            assert_eq!(status, 200, "served before the hold: {answer}");
        }
    })
    .await
    .expect("a second large body was never refused while the first held the budget");
    assert_eq!(error_of(&answer).0, SERVER_BUSY, "{answer}");
    let (status, _) = post(
        &node.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);

    // The stalled body is cut at its read timeout and the budget comes back.
    let answer = read_response(&mut holder).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, answer) = post(&node.url, large(100 * 1024)).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["error"]["data"]["name"], "malformed_bytes",
        "{answer}"
    );

    // A small body that trickles is cut at the small timeout.
    let mut slow = TcpStream::connect(node.handle.rpc_addr).await.unwrap();
    slow.write_all(
        b"POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"json",
    )
    .await
    .unwrap();
    let answer = read_response(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        metric(&node.url, "piazza_rpc_bodies_timed_out_total").await,
        2
    );
    node.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quote_at_most_a_short_prefix_of_the_input() {
    let node = start(RpcLimits::default(), &[]).await;
    let huge = "z".repeat(500_000);
    let calls = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "piazza_getAccount", "params": [huge]}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "piazza_getReceipt", "params": [huge]}),
        json!({"jsonrpc": "2.0", "id": 1, "method": huge, "params": []}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "piazza_submitTransaction", "params": [huge]}),
        json!({"jsonrpc": "2.0", "id": huge, "method": "piazza_status"}),
    ];
    for call in calls {
        let (status, answer) = post(&node.url, call.to_string().into_bytes()).await;
        let (code, message) = error_of(&answer);
        assert_eq!(status, 200);
        assert!(code != 0);
        assert!(message.len() <= ERROR_BYTES_MAX, "{} bytes", message.len());
        assert!(
            answer.len() < 1_024,
            "{} bytes: {}",
            answer.len(),
            &answer[..200]
        );
    }
    // Invalid JSON with a long string: the parse error names a position, not the text.
    let (_, answer) = post(&node.url, format!("{{\"a\":\"{huge}\"").into_bytes()).await;
    assert!(answer.len() < 1_024, "{} bytes", answer.len());
    node.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_need_the_large_body_budget() {
    let limits = RpcLimits {
        small_body_bytes_max: 2 * 1024,
        large_bodies_bytes_max: 0,
        ..RpcLimits::default()
    };
    let senders: Vec<SecretKey> = (1..=4).map(common::user_key).collect();
    let node = start(limits, &senders).await;
    let client = piazza_client::Client::new(&node.url);
    let mut per_height: std::collections::BTreeMap<u64, usize> = Default::default();
    for result in node.handle.app.submit_many(transfers(&senders, 30, 0)) {
        let receipt = client
            .wait_for_receipt(&result.unwrap(), WAIT)
            .await
            .unwrap();
        *per_height.entry(receipt.height).or_default() += 1;
    }
    let (height, txs) = per_height.into_iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(txs >= 30, "{txs} transactions in the fullest block");

    // The block's raw bytes (~10 KiB of hex) need the budget, which is zero here.
    let call =
        json!({"jsonrpc": "2.0", "id": 1, "method": "piazza_getBlock", "params": [height, true]});
    let (status, answer) = post(&node.url, call.to_string().into_bytes()).await;
    assert_eq!(
        (status, error_of(&answer).0),
        (503, SERVER_BUSY),
        "{answer}"
    );
    let ws_url = format!("{}/ws", node.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    socket
        .send(WsMessage::Text(call.to_string().into()))
        .await
        .unwrap();
    let answer = socket.next().await.unwrap().unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(
        (answer["id"].as_i64(), answer["error"]["code"].as_i64()),
        (Some(1), Some(SERVER_BUSY)),
        "{answer}"
    );
    // Small answers are served as before.
    let (status, answer) = post(
        &node.url,
        br#"{"jsonrpc":"2.0","id":1,"method":"piazza_status"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(metric(&node.url, "piazza_rpc_bodies_busy_total").await, 2);
    node.handle.shutdown().await;
}
