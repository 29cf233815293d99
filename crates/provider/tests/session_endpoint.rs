//! The provider's session endpoint against hostile and honest clients, on 127.0.0.1, with the
//! session's terms given directly (the chain's part is in `session_chain.rs`).

use piazza_client::session::{SessionClient, SessionError};
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{Request, SignedRequest, Voucher};
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_provider::models::{self, LoadedModel};
use piazza_provider::server::{self, ServerHandle, ServerLimits};
use piazza_provider::session::{self, Assigned, EndpointConfig, SessionSource};
use piazza_provider::session_store::SessionStore;
use piazza_session::wire::{RequestBody, SessionView, VoucherBody};
use piazza_session::{ClientChannel, Terms};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSION: u64 = 3;
const PRICE: Amount = Amount::new(1_000);

fn owner() -> SecretKey {
    SecretKey::from_seed([11; 32])
}
fn provider() -> SecretKey {
    SecretKey::from_seed([12; 32])
}

fn terms() -> Terms {
    Terms {
        session: SESSION,
        owner_key: owner().public_key(),
        authorised: None,
        provider: provider().public_key().address(),
        deposit: Amount::new(10_000_000),
        max_price_per_unit: Amount::new(2_000),
        committed_seq: 0,
        committed_total: Amount::ZERO,
        open: true,
    }
}

/// Sessions [`SESSION`] and the ones in `more`, open and assigned to this provider for the
/// model, except those listed in `closed`.
struct Fixed {
    model: String,
    more: Vec<u64>,
    closed: std::sync::Mutex<Vec<u64>>,
}

impl SessionSource for Fixed {
    fn session(
        &self,
        id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Assigned>, String>> + Send + '_>> {
        let open = !self.closed.lock().unwrap().contains(&id);
        let found = (id == SESSION || self.more.contains(&id)).then(|| Assigned {
            terms: Terms {
                session: id,
                open,
                ..terms()
            },
            model: self.model.clone(),
        });
        Box::pin(async move { Ok(found) })
    }
}

fn model(generation: bool) -> (String, LoadedModel) {
    let dir = piazza_engine::models_dir();
    let record = if generation {
        models::smollm2_record(&dir, Address([1; 20])).unwrap()
    } else {
        models::minilm_record(&dir, Address([1; 20])).unwrap()
    };
    let info = piazza_api::ModelInfo {
        name: record.name.clone(),
        kind: String::new(),
        architecture: record.architecture.clone(),
        config_hash: record.config_hash.to_hex(),
        weights_commitment: record.weights_commitment.to_hex(),
        tokenizer_hash: record.tokenizer_hash.to_hex(),
        owner: record.owner.to_string(),
        license: record.license.clone(),
        price_floor: String::new(),
        providers: Vec::new(),
        numeric: "f32".into(),
        files: None,
    };
    (record.name, models::load(&dir, &info).unwrap())
}

async fn start(generation: bool, limits: ServerLimits, store: &std::path::Path) -> ServerHandle {
    start_with(generation, limits, store, Vec::new()).await.0
}

async fn start_with(
    generation: bool,
    limits: ServerLimits,
    store: &std::path::Path,
    more: Vec<u64>,
) -> (ServerHandle, Arc<session::Endpoint>, Arc<Fixed>) {
    let (name, loaded) = model(generation);
    let source = Arc::new(Fixed {
        model: name.clone(),
        more,
        closed: Default::default(),
    });
    let (router, endpoint) = session::router(EndpointConfig {
        key: provider(),
        price_per_unit: PRICE,
        models: Arc::new(BTreeMap::from([(name, loaded)])),
        threads: 2,
        limits: limits.clone(),
        store: SessionStore::open(store).unwrap(),
        source: source.clone(),
    });
    let server = server::start("127.0.0.1:0".parse().unwrap(), router, limits)
        .await
        .unwrap();
    (server, endpoint, source)
}

/// Posts `body` to `path` and returns the status and the error code (if any).
async fn post(url: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    (status, code)
}

fn request_body(
    request: &SignedRequest,
    voucher: Option<&piazza_ledger::sessions::SignedVoucher>,
) -> Vec<u8> {
    serde_json::to_vec(&RequestBody::new(request, voucher)).unwrap()
}

fn embedding_request(seq: u64) -> Request {
    Request {
        session: SESSION,
        seq,
        input: b"a sentence to embed".to_vec(),
        params: JobParams::default(),
        max_units: 64,
    }
}

/// Checks that each hostile body gets `(status, code)`.
async fn check(url: &str, path: &str, cases: Vec<(&str, Vec<u8>, u16, &str)>) {
    for (what, body, status, code) in cases {
        assert_eq!(
            post(url, path, body).await,
            (status, code.to_string()),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_and_vouchers_get_errors() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        body_read_timeout_ms: 500,
        ..ServerLimits::default()
    };
    let server = start(false, limits.clone(), dir.path()).await;
    let url = server.url();
    let requests = format!("/v1/sessions/{SESSION}/requests");
    let first = embedding_request(1).sign(&owner());
    let mut forged = first.clone();
    forged.request.input = b"another sentence".to_vec();
    let mut other_session = embedding_request(1);
    other_session.session = SESSION + 1;
    check(
        &url,
        &requests,
        vec![
            ("not JSON", b"{".to_vec(), 400, "malformed"),
            (
                "not hex",
                br#"{"request":"xyz"}"#.to_vec(),
                400,
                "malformed",
            ),
            (
                "truncated",
                format!(r#"{{"request":"{}"}}"#, "00".repeat(40)).into_bytes(),
                400,
                "malformed",
            ),
            (
                "oversized",
                vec![b' '; limits.body_bytes_max + 1],
                413,
                "too_large",
            ),
            ("forged", request_body(&forged, None), 403, "bad_signature"),
            (
                "wrong signer",
                request_body(&embedding_request(1).sign(&provider()), None),
                403,
                "wrong_signer",
            ),
            (
                "wrong session",
                request_body(&other_session.clone().sign(&owner()), None),
                403,
                "wrong_session",
            ),
            (
                "out of order",
                request_body(&embedding_request(2).sign(&owner()), None),
                400,
                "out_of_order",
            ),
        ],
    )
    .await;
    let unknown = format!("/v1/sessions/{}/requests", SESSION + 1);
    check(
        &url,
        &unknown,
        vec![(
            "unknown session",
            request_body(&other_session.clone().sign(&owner()), None),
            404,
            "unknown_session",
        )],
    )
    .await;

    // An honest first request, through the client: one embedding event, then the receipt.
    let mut client = SessionClient::new(&url, ClientChannel::new(terms(), owner()).unwrap());
    let answer = client
        .request(
            b"a sentence to embed".to_vec(),
            JobParams::default(),
            64,
            |_| {},
        )
        .await
        .unwrap();
    let vector = answer.embedding.clone().unwrap();
    assert_eq!(vector.len(), 384);
    assert_eq!(models::embedding_bytes(&vector), answer.output);
    let units = answer.receipt.receipt.units;
    assert!(units > 0 && units <= 64);
    assert_eq!(
        answer.voucher.voucher.total,
        PRICE.checked_mul(units.into()).unwrap()
    );

    // Replayed; and a second request before paying the first.
    let second = embedding_request(2).sign(&owner());
    let short = Voucher {
        session: SESSION,
        seq: 1,
        total: Amount::new(1),
    }
    .sign(&owner());
    check(
        &url,
        &requests,
        vec![
            ("replayed", request_body(&first, None), 400, "replayed"),
            ("unpaid", request_body(&second, None), 402, "unpaid"),
            (
                "under-paying voucher",
                request_body(&second, Some(&short)),
                400,
                "under_paid",
            ),
        ],
    )
    .await;
    let vouchers = format!("/v1/sessions/{SESSION}/vouchers");
    let stranger = answer.voucher.voucher.clone().sign(&provider());
    check(
        &url,
        &vouchers,
        vec![
            ("voucher not JSON", b"[]".to_vec(), 400, "malformed"),
            (
                "under-paying voucher",
                serde_json::to_vec(&VoucherBody::new(&short)).unwrap(),
                400,
                "under_paid",
            ),
            (
                "voucher by a stranger",
                serde_json::to_vec(&VoucherBody::new(&stranger)).unwrap(),
                403,
                "wrong_signer",
            ),
        ],
    )
    .await;

    // Paid: the provider's view says so, and the next request is served.
    let view = client.pay().await.unwrap().unwrap();
    assert_eq!(
        (
            view.channel.paid_seq,
            view.channel.paid,
            view.channel.next_seq
        ),
        (1, answer.voucher.voucher.total, 2)
    );
    let replayed_voucher = serde_json::to_vec(&VoucherBody::new(&answer.voucher)).unwrap();
    assert_eq!(
        post(&url, &vouchers, replayed_voucher).await.0,
        200,
        "the held voucher again is a no-op"
    );
    client
        .request(b"another".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap();
    let view: SessionView = client.view().await.unwrap();
    assert_eq!((view.channel.served_seq, view.channel.paid_seq), (2, 1));
    assert!(view.last_receipt.is_some());

    // A body that never finishes is cut off after the read timeout.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(
        format!("POST {requests} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        connections_per_address_max: 2,
        ..ServerLimits::default()
    };
    let server = start(false, limits, dir.path()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Two connections the server has accepted and answered once (kept alive): both count.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /v1/sessions/0 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0; 12];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(head.starts_with(b"HTTP/1.1 "), "{head:?}");
        held.push(stream);
    }
    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection is closed at once"
    );
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_streams_and_a_hang_up_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(true, ServerLimits::default(), dir.path()).await;
    let url = server.url();
    let mut client = SessionClient::new(&url, ClientChannel::new(terms(), owner()).unwrap());
    let params = JobParams {
        max_tokens: 24,
        chat: true,
        ..JobParams::default()
    };
    let started = Instant::now();
    let mut first_delta = None;
    let mut deltas = Vec::new();
    let answer = client
        .request(
            b"Name three colours.".to_vec(),
            params.clone(),
            24,
            |text| {
                first_delta.get_or_insert_with(|| started.elapsed());
                deltas.push(text.to_string());
            },
        )
        .await
        .unwrap();
    let total = started.elapsed();
    println!(
        "time to first delta {:?}, total {total:?}, {} deltas, {} units",
        first_delta.unwrap(),
        deltas.len(),
        answer.receipt.receipt.units
    );
    assert!(deltas.len() > 1, "text arrives in pieces: {deltas:?}");
    assert_eq!(deltas.concat().into_bytes(), answer.output);
    // The streamed output is the arbiter's (what an auditor recomputes), bit for bit.
    let (_, loaded) = model(true);
    let info = piazza_api::JobParamsInfo {
        max_tokens: 24,
        temperature_milli: 0,
        top_k: 0,
        top_p_milli: 0,
        repetition_penalty_milli: 0,
        seed: 0,
        chat: true,
        stop: Vec::new(),
        deadline_blocks: 0,
        redundancy: 0,
    };
    let job = piazza_arbiter::execute(&loaded, &models::job_spec(b"Name three colours.", &info), 2)
        .unwrap();
    let job_root = piazza_primitives::Hash(job.trace_root);
    assert_eq!(job.output, answer.output);
    assert_eq!(job_root, answer.receipt.receipt.trace_root);
    assert_eq!(job.work_units, answer.receipt.receipt.units);
    let paid = client.paid();

    // The client hangs up after the first delta of request 2: no receipt, nothing owed.
    let request = Request {
        session: SESSION,
        seq: 2,
        input: b"Count to twenty.".to_vec(),
        params: params.clone(),
        max_units: 24,
    }
    .sign(&owner());
    let mut response = reqwest::Client::new()
        .post(format!("{url}/v1/sessions/{SESSION}/requests"))
        .json(&RequestBody::new(&request, Some(&answer.voucher)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.chunk().await.unwrap().unwrap();
    drop(response);
    let view = wait_idle(&client).await;
    assert_eq!(
        (view.channel.served_seq, view.channel.next_seq),
        (1, 2),
        "no receipt for the abandoned request"
    );
    assert_eq!(view.channel.paid, paid);
    // The same seq is served afresh.
    let again = client
        .request(b"Count to twenty.".to_vec(), params, 24, |_| {})
        .await
        .unwrap();
    assert_eq!(again.receipt.receipt.seq, 2);
    server.shutdown().await;
}

/// The provider's view once no request is in flight.
async fn wait_idle(client: &SessionClient) -> SessionView {
    for _ in 0..600 {
        let view = client.view().await.unwrap();
        if view.channel.in_flight.is_none() {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the request stayed in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_gone_mid_stream_costs_the_client_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(true, ServerLimits::default(), dir.path()).await;
    let url = server.url();
    let mut client = SessionClient::new(&url, ClientChannel::new(terms(), owner()).unwrap());
    let params = JobParams {
        max_tokens: 48,
        ..JobParams::default()
    };
    let stop = tokio::sync::Notify::new();
    let stopper = async {
        stop.notified().await;
        server.abort();
    };
    let request = client.request(b"Once upon a time".to_vec(), params, 48, |_| {
        stop.notify_one()
    });
    let (result, ()) = tokio::join!(request, stopper);
    let error = result.unwrap_err();
    assert!(
        matches!(error, SessionError::NoReceipt | SessionError::Http(_)),
        "{error}"
    );
    assert_eq!(client.paid(), Amount::ZERO, "no voucher was signed");
    assert!(client.channel().pending().is_none());
    assert_eq!(client.channel().next_seq(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_closed_ones_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        sessions_max: 1,
        ..ServerLimits::default()
    };
    let (server, endpoint, source) = start_with(false, limits, dir.path(), vec![SESSION + 1]).await;
    let url = server.url();
    let mut first = SessionClient::new(&url, ClientChannel::new(terms(), owner()).unwrap());
    first
        .request(b"one".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap();
    let second_terms = Terms {
        session: SESSION + 1,
        ..terms()
    };
    let mut second = SessionClient::new(&url, ClientChannel::new(second_terms, owner()).unwrap());
    let full = second
        .request(b"two".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap_err();
    assert_eq!(full.code(), Some("queue_full"), "{full}");
    // Still open: pruning keeps it.
    endpoint.prune().await;
    assert_eq!(endpoint.sessions(), vec![SESSION]);
    source.closed.lock().unwrap().push(SESSION);
    endpoint.prune().await;
    assert!(endpoint.sessions().is_empty());
    second
        .request(b"two".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_keeps_its_receipts_and_vouchers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(false, ServerLimits::default(), dir.path()).await;
    let mut client =
        SessionClient::new(&server.url(), ClientChannel::new(terms(), owner()).unwrap());
    let first = client
        .request(b"one".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap();
    let held = client
        .request(b"two".to_vec(), JobParams::default(), 64, |_| {})
        .await
        .unwrap()
        .voucher;
    let before = client.view().await.unwrap();
    server.shutdown().await;

    // A new process on the same store: same view, and request 2 is still owed.
    let server = start(false, ServerLimits::default(), dir.path()).await;
    let replayed = RequestBody::new(&embedding_request(3).sign(&owner()), Some(&first.voucher));
    let after = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{SESSION}", server.url()))
        .send()
        .await
        .unwrap()
        .json::<SessionView>()
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!((after.channel.served_seq, after.channel.paid_seq), (2, 1));
    let requests = format!("/v1/sessions/{SESSION}/requests");
    assert_eq!(
        post(
            &server.url(),
            &requests,
            serde_json::to_vec(&replayed).unwrap()
        )
        .await,
        (402, "unpaid".to_string()),
        "the voucher for request 1 is stale; request 2 is unpaid"
    );
    // The client pays request 2 (its voucher was kept for the next request) and goes on.
    let client = SessionClient::new(
        &server.url(),
        ClientChannel::resume(terms(), owner(), 2, first.voucher.voucher.total).unwrap(),
    );
    let view = client.view().await.unwrap();
    assert!(
        view.last_receipt.is_some(),
        "the receipt of request 2 is kept"
    );
    drop(client);
    let third = RequestBody::new(&embedding_request(3).sign(&owner()), Some(&held));
    assert_eq!(
        reqwest::Client::new()
            .post(format!("{}{requests}", server.url()))
            .json(&third)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    server.shutdown().await;
}
