//! A JSON-RPC node that answers what the gateway asks, without a chain: admission applies the
//! ledger's own fee rule (`executor::fee_for`) and checks the fee before the balance and the
//! nonce, as the node does; one funded account; one embedding model served by one provider;
//! jobs settle (3 units, a 4-dimension vector) once the test lets them.

#![allow(dead_code)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use piazza_api::{
    AccountInfo, EventInfo, JobInfo, JobParamsInfo, JobReceiptInfo, JobResultInfo, ModelInfo,
    ProviderInfo, ReceiptInfo, RpcError, Status, Submitted,
};
use piazza_ledger::compute;
use piazza_ledger::executor::fee_for;
use piazza_ledger::genesis::FeeParams;
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::ErrorCode;
use piazza_primitives::{Address, Amount};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const MOCK_CHAIN_ID: &str = "piazza-mock";
pub const MOCK_MODEL: &str = "mock-embedder";
/// Units every mock job settles with.
pub const MOCK_WORK_UNITS: u64 = 3;

fn provider() -> String {
    piazza_primitives::SecretKey::from_seed([77; 32])
        .public_key()
        .address()
        .to_string()
}

struct Job {
    input: Vec<u8>,
    max_units: u64,
    max_price: Amount,
}

#[derive(Default)]
struct Ledger {
    nonces: BTreeMap<Address, u64>,
    /// Receipts by transaction hash.
    receipts: BTreeMap<String, ReceiptInfo>,
    jobs: Vec<Job>,
}

pub struct MockState {
    pub fees: FeeParams,
    pub funded: Address,
    pub price_per_unit: Amount,
    /// While true, jobs stay `assigned`.
    pub hold: AtomicBool,
    /// Job submissions admitted.
    pub submitted: AtomicUsize,
    ledger: Mutex<Ledger>,
}

pub struct MockNode {
    pub url: String,
    pub state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn mock_node(fees: FeeParams, funded: Address, price_per_unit: Amount) -> MockNode {
    let state = Arc::new(MockState {
        fees,
        funded,
        price_per_unit,
        hold: AtomicBool::new(false),
        submitted: AtomicUsize::new(0),
        ledger: Mutex::new(Ledger::default()),
    });
    let app = Router::new()
        .route("/", post(rpc))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockNode { url, state, task }
}

fn tx_error(code: ErrorCode, message: &str) -> RpcError {
    RpcError {
        code: code.code() as i64,
        message: format!("{}: {message}", code.name()),
        data: Some(json!({"name": code.name(), "code": code.code()})),
    }
}

fn hex64(byte: u8) -> String {
    hex::encode([byte; 32])
}

async fn rpc(State(state): State<Arc<MockState>>, Json(call): Json<Value>) -> Json<Value> {
    let params = call["params"].as_array().cloned().unwrap_or_default();
    let answer = match call["method"].as_str().unwrap_or("") {
        "piazza_status" => Ok(json!(Status {
            chain_id: MOCK_CHAIN_ID.into(),
            height: 1,
            block_hash: hex64(1),
            state_root: hex64(2),
            time_ms: 0,
            mempool_size: 0,
            validator: provider(),
        })),
        "piazza_submitTransaction" => submit(&state, params[0].as_str().unwrap_or("")),
        "piazza_getReceipt" => {
            let ledger = state.ledger.lock().unwrap();
            Ok(json!(ledger.receipts.get(params[0].as_str().unwrap_or(""))))
        }
        "piazza_getAccount" => {
            let address: Address = params[0]
                .as_str()
                .unwrap_or("")
                .parse()
                .expect("an address");
            let nonce = state
                .ledger
                .lock()
                .unwrap()
                .nonces
                .get(&address)
                .copied()
                .unwrap_or(0);
            Ok(json!(AccountInfo {
                address: address.to_string(),
                balance: "0".into(),
                nonce,
                height: 1,
                state_root: hex64(2),
                key: String::new(),
                value: None,
                proof: String::new(),
            }))
        }
        "piazza_getModels" => Ok(json!([ModelInfo {
            name: MOCK_MODEL.into(),
            kind: "embedding".into(),
            architecture: "bert".into(),
            config_hash: hex64(3),
            weights_commitment: hex64(4),
            tokenizer_hash: hex64(5),
            owner: provider(),
            license: "apache-2.0".into(),
            price_floor: "0".into(),
            providers: vec![provider()],
        }])),
        "piazza_getProvider" => Ok(json!(ProviderInfo {
            address: provider(),
            models: vec![MOCK_MODEL.into()],
            price_per_unit: state.price_per_unit.base_units().to_string(),
            capacity: 64,
            endpoint: String::new(),
            active_jobs: 0,
            jobs_completed: 0,
            deadlines_missed: 0,
            frauds: 0,
            stake: "0".into(),
        })),
        "piazza_getJob" => Ok(job(&state, params[0].as_u64().unwrap_or(0))),
        other => Err(RpcError {
            code: -32601,
            message: format!("no method {other}"),
            data: None,
        }),
    };
    Json(match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": call["id"], "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": call["id"], "error": error}),
    })
}

fn submit(state: &MockState, text: &str) -> Result<Value, RpcError> {
    let bytes = hex::decode(text).map_err(|_| tx_error(ErrorCode::MalformedBytes, "hex"))?;
    let tx =
        SignedTransaction::decode_bytes(&bytes).map_err(|e| tx_error(e.code, &e.to_string()))?;
    let mut ledger = state.ledger.lock().unwrap();
    let expected = ledger.nonces.get(&tx.sender()).copied().unwrap_or(0);
    if tx.tx.nonce < expected {
        return Err(tx_error(ErrorCode::NonceReplayed, "used"));
    }
    let fee = fee_for(&tx, &state.fees).map_err(|e| tx_error(e.code, &e.to_string()))?;
    if fee > tx.tx.max_fee {
        return Err(tx_error(
            ErrorCode::FeeTooLow,
            &format!("the fee is {fee} PZA"),
        ));
    }
    if tx.sender() != state.funded {
        return Err(tx_error(ErrorCode::InsufficientFunds, "holds nothing"));
    }
    if tx.tx.nonce != expected {
        return Err(tx_error(ErrorCode::NonceGap, "ahead"));
    }
    tx.verify_signature()
        .map_err(|e| tx_error(e.code, &e.to_string()))?;
    let [Message::Compute(compute::Msg::SubmitJob {
        input,
        max_units,
        max_price,
        ..
    })] = tx.tx.messages.as_slice()
    else {
        return Err(tx_error(
            ErrorCode::InvalidMessage,
            "the mock takes only job submissions",
        ));
    };
    ledger.nonces.insert(tx.sender(), expected + 1);
    ledger.jobs.push(Job {
        input: input.clone(),
        max_units: *max_units,
        max_price: *max_price,
    });
    let id = ledger.jobs.len() as u64;
    let hash = tx.hash().to_hex();
    ledger.receipts.insert(
        hash.clone(),
        ReceiptInfo {
            tx_hash: hash.clone(),
            height: 2,
            index: 0,
            status: "ok".into(),
            error: None,
            fee_paid: fee.base_units().to_string(),
            events: vec![EventInfo {
                kind: "compute.job_submitted".into(),
                attributes: [("job".to_string(), id.to_string())].into(),
                tx_hash: Some(hash.clone()),
                height: 2,
            }],
        },
    );
    state.submitted.fetch_add(1, Ordering::SeqCst);
    Ok(json!(Submitted { hash }))
}

fn job(state: &MockState, id: u64) -> Value {
    let ledger = state.ledger.lock().unwrap();
    let Some(job) = id.checked_sub(1).and_then(|i| ledger.jobs.get(i as usize)) else {
        return Value::Null;
    };
    let held = state.hold.load(Ordering::SeqCst);
    let output: Vec<u8> = [0.5f32, -0.25, 1.0, 0.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let price = state
        .price_per_unit
        .checked_mul(u128::from(MOCK_WORK_UNITS))
        .expect("a small price");
    json!(JobInfo {
        id,
        client: String::new(),
        model: MOCK_MODEL.into(),
        input: hex::encode(&job.input),
        params: JobParamsInfo::default(),
        max_units: job.max_units,
        max_price: job.max_price.base_units().to_string(),
        submitted_height: 2,
        status: if held { "assigned" } else { "settled" }.into(),
        group: id,
        hold: None,
        provider: Some(provider()),
        deadline_height: None,
        settle_height: None,
        missed: vec![],
        result: (!held).then(|| JobResultInfo {
            output: hex::encode(&output),
            output_hash: hex64(6),
            trace_root: hex64(7),
            work_units: MOCK_WORK_UNITS,
            posted_height: 3,
        }),
        receipt: (!held).then(|| JobReceiptInfo {
            job: id,
            model: MOCK_MODEL.into(),
            input_hash: hex64(8),
            output_hash: hex64(6),
            trace_root: hex64(7),
            provider: provider(),
            price: price.base_units().to_string(),
            refund: "0".into(),
            height: 4,
        }),
    })
}
