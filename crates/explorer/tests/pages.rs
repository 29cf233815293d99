//! The explorer's router over a small in-memory chain that answers like the node's methods:
//! each page shows the chain's values (escaped), search dispatches on the query's shape, and
//! hostile input (unknown ids, malformed hashes, long queries, markup) answers a clear 400/404
//! page, never a 500.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use piazza_api::*;
use piazza_explorer::{router, Source, SourceError, QUERY_BYTES_MAX};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

const ALICE: &str = "pz1alice0000000000000000000000000000000000";
const PROVIDER: &str = "pz1provider00000000000000000000000000000000";
const BLOCK_HASH: &str = "aa00000000000000000000000000000000000000000000000000000000000002";
const TX_HASH: &str = "bb00000000000000000000000000000000000000000000000000000000000001";
const HOSTILE_MODEL: &str = "<script>alert(1)</script>";

struct Chain {
    /// Whether every method fails as a node with a broken store would.
    broken: bool,
}

fn invalid(message: &str) -> SourceError {
    SourceError {
        code: error_code::INVALID_PARAMS,
        message: message.into(),
    }
}

fn block(height: u64) -> BlockInfo {
    BlockInfo {
        hash: if height == 2 {
            BLOCK_HASH.into()
        } else {
            format!("{height:064x}")
        },
        height,
        parent_hash: format!("{:064x}", height.saturating_sub(1)),
        time_ms: 1_000 * height,
        proposer: ALICE.into(),
        tx_root: "00".repeat(32),
        state_root: "11".repeat(32),
        randomness: "22".repeat(32),
        tx_hashes: match height {
            2 => vec![TX_HASH.into()],
            // A full block: more transactions than a page lists.
            3 => (0..150u64).map(|i| format!("{i:064x}")).collect(),
            _ => vec![],
        },
        raw: None,
    }
}

fn model(name: &str) -> ModelInfo {
    ModelInfo {
        name: name.into(),
        kind: "embedding".into(),
        architecture: "bert".into(),
        config_hash: "33".repeat(32),
        weights_commitment: "44".repeat(32),
        tokenizer_hash: "55".repeat(32),
        owner: ALICE.into(),
        license: "apache-2.0".into(),
        price_floor: "1000".into(),
        providers: vec![PROVIDER.into()],
        numeric: "f32".into(),
        files: None,
    }
}

fn job(id: u64) -> JobInfo {
    JobInfo {
        id,
        client: ALICE.into(),
        model: "minilm".into(),
        input: hex_of("it's a test"),
        params: JobParamsInfo::default(),
        max_units: 256,
        max_price: "5000".into(),
        submitted_height: 2,
        status: if id == 7 {
            JobState::Failed
        } else {
            JobState::Settled
        },
        group: id,
        hold: None,
        provider: Some(PROVIDER.into()),
        deadline_height: None,
        settle_height: None,
        missed: vec![],
        result: Some(JobResultInfo {
            output: "00".into(),
            output_hash: "66".repeat(32),
            trace_root: "77".repeat(32),
            work_units: 9,
            posted_height: 2,
            input_units: 0,
        }),
        receipt: None,
    }
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn party(address: &str, is_provider: bool) -> PartyInfo {
    PartyInfo {
        address: address.into(),
        job: 5,
        root: "88".repeat(32),
        step_count: 12,
        ids: String::new(),
        bond: "100".into(),
        is_provider,
    }
}

fn to(value: impl serde::Serialize) -> Result<Value, SourceError> {
    Ok(serde_json::to_value(value).unwrap())
}

impl Source for Chain {
    fn call(&self, name: &str, params: &[Value]) -> Result<Value, SourceError> {
        if self.broken {
            return Err(SourceError {
                code: error_code::INTERNAL_ERROR,
                message: "store unavailable".into(),
            });
        }
        let first = params.first().cloned().unwrap_or(Value::Null);
        let address = || -> Result<String, SourceError> {
            let a = first.as_str().ok_or_else(|| invalid("not a string"))?;
            if a.len() < 10 {
                return Err(invalid("bad checksum"));
            }
            Ok(a.to_string())
        };
        match name {
            method::STATUS => to(Status {
                chain_id: "piazza-test".into(),
                height: 3,
                block_hash: format!("{:064x}", 3),
                state_root: "11".repeat(32),
                time_ms: 3_000,
                mempool_size: 0,
                validator: ALICE.into(),
                fees: None,
            }),
            method::GET_BLOCK => match &first {
                Value::Number(n) => match n.as_u64() {
                    Some(h @ 1..=3) => to(block(h)),
                    _ => Ok(Value::Null),
                },
                Value::String(s) if s == BLOCK_HASH => to(block(2)),
                _ => Ok(Value::Null),
            },
            method::GET_TRANSACTION => match first.as_str() {
                Some(TX_HASH) => to(TxInfo {
                    hash: TX_HASH.into(),
                    height: 2,
                    index: 0,
                    sender: ALICE.into(),
                    nonce: 4,
                    max_fee: "2500000000".into(),
                    messages: vec![json!({"bank.transfer": {"to": PROVIDER, "amount": "1"}})],
                    raw: String::new(),
                }),
                _ => Ok(Value::Null),
            },
            method::GET_RECEIPT => match first.as_str() {
                Some(TX_HASH) => to(ReceiptInfo {
                    tx_hash: TX_HASH.into(),
                    height: 2,
                    index: 0,
                    status: "ok".into(),
                    error: None,
                    fee_paid: "1500000000".into(),
                    events: vec![EventInfo {
                        kind: "compute.job_submitted".into(),
                        attributes: [("job".to_string(), "5".to_string())].into(),
                        tx_hash: Some(TX_HASH.into()),
                        height: 2,
                    }],
                }),
                _ => Ok(Value::Null),
            },
            method::GET_ACCOUNT => to(AccountInfo {
                address: address()?,
                balance: "42000000000".into(),
                nonce: 5,
                proof: StateProofInfo {
                    height: 3,
                    state_root: "11".repeat(32),
                    key: String::new(),
                    value: None,
                    proof: String::new(),
                },
            }),
            method::GET_STAKE => to(StakeInfo {
                address: address()?,
                bonds: [("provider".to_string(), "7000000000".to_string())].into(),
                unbonding: "0".into(),
            }),
            compute_method::GET_PROVIDER if address()? == PROVIDER => to(ProviderInfo {
                address: PROVIDER.into(),
                models: vec!["minilm".into()],
                price_per_unit: "10".into(),
                capacity: 4,
                endpoint: String::new(),
                active_jobs: 0,
                jobs_completed: 31,
                deadlines_missed: 0,
                frauds: 1,
                stake: "7000000000".into(),
                units_per_block: 100,
            }),
            compute_method::GET_PROVIDER_JOBS => Ok(json!([])),
            compute_method::GET_MODELS => to(vec![model("minilm"), model(HOSTILE_MODEL)]),
            compute_method::GET_JOB_PROOF => match first.as_u64() {
                Some(id) => to(JobProofInfo {
                    id,
                    proof: StateProofInfo {
                        height: 3,
                        state_root: "11".repeat(32),
                        key: format!(
                            "{}{}",
                            hex_of("compute/job/"),
                            hex::encode(id.to_be_bytes())
                        ),
                        value: None,
                        proof: "66".repeat(8),
                    },
                }),
                None => Err(invalid("job id must be a non-negative integer")),
            },
            compute_method::GET_JOB => match first.as_u64() {
                Some(id @ (2 | 5 | 7)) => to(job(id)),
                Some(_) => Ok(Value::Null),
                None => Err(invalid("job id must be a non-negative integer")),
            },
            verify_method::GET_DISPUTE => match first.as_u64() {
                Some(5) => to(DisputeInfo {
                    job: 5,
                    defendant: party(PROVIDER, true),
                    claimant: party(ALICE, false),
                    round: 3,
                    node_level: 1,
                    node_index: 2,
                    phase: DisputePhase::Bisect,
                    step: None,
                    leaves: vec![],
                    revealed: vec![true, false],
                    deadline_height: 9,
                    opened_height: 3,
                }),
                _ => Ok(Value::Null),
            },
            "piazza_getStorageParams" => Ok(json!({"epoch_blocks": 10, "answer_blocks": 3,
                "price_per_byte_epoch": "2", "min_provider_stake": "100000000000"})),
            "piazza_getStorageProviders" => Ok(json!([storage_provider(false)])),
            "piazza_getStorageProvider" if address()? == PROVIDER => Ok(storage_provider(true)),
            "piazza_getStorageChallenges" => Ok(json!([{"deal": 4, "shard": 1,
                "blob": BLOB_ID, "shard_root": "cc".repeat(32), "shard_len": 64,
                "kind": "proof", "chunk_index": 0, "issued_height": 2, "deadline_height": 5}])),
            "piazza_getStorageDeal" if first.as_u64() == Some(4) => Ok(deal()),
            "piazza_getStorageDeals" => Ok(json!([4])),
            "piazza_getBlob" if first.as_str() == Some(BLOB_ID) => {
                Ok(json!({"blob": deal()["blob"].clone(), "deal": deal()}))
            }
            "piazza_getDataset" if first.as_u64() == Some(6) => Ok(json!({"id": 6,
                "owner": ALICE, "blob": BLOB_ID, "schema": "text/plain", "license": "cc-by-4.0",
                "price": "3000000000", "encrypted": false, "pool": 8, "access": null})),
            "piazza_getPool" if first.as_u64() == Some(8) => Ok(json!({"id": 8, "owner": ALICE,
                "dataset": 6, "validation": {"embedding": {"model": "minilm", "dims": 4,
                "min_distance_sq": 10}}, "items": [{"contributor": PROVIDER,
                "hash": "dd".repeat(32), "job": 2}],
                "weights": asset("pool:8")})),
            "piazza_getAsset" => Ok(match first.as_str() {
                Some(a @ ("model:minilm" | "dataset:6" | "agent:summarizer")) => asset(a),
                _ => Value::Null,
            }),
            "piazza_getLineage" if first.as_str() == Some("minilm") => Ok(json!({
                "model": "minilm", "owner": ALICE, "royalty_bps": 2500,
                "parents": [{"source": {"model": "bert-base"}, "weight_bps": 6000,
                    "lineage": {"model": "bert-base", "owner": ALICE, "royalty_bps": 0,
                        "parents": []}},
                    {"source": {"dataset": 6}, "weight_bps": 4000, "lineage": null}]})),
            "piazza_getAgent" if first.as_u64() == Some(11) => Ok(agent()),
            "piazza_findAgents" if first.as_str() == Some("summarize") => Ok(json!([agent()])),
            "piazza_findAgents" => Ok(json!([])),
            "piazza_getAgentCall" if first.as_u64() == Some(12) => Ok(json!({"id": 12,
                "agent": 11, "payer": ALICE, "amount": "4000000000",
                "request_hash": "ee".repeat(32), "result_hash": null, "status": "open",
                "deadline": 30, "release_at": null, "rating": null})),
            _ => Ok(Value::Null),
        }
    }
}

const BLOB_ID: &str = "ab00000000000000000000000000000000000000000000000000000000000009";

fn storage_provider(with_shards: bool) -> Value {
    json!({"address": PROVIDER, "capacity_bytes": 1_000_000, "used_bytes": 4_096,
        "endpoint": "http://127.0.0.1:1", "proofs": 17, "failures": 2, "stake": "250000000000",
        "shards": with_shards.then(|| json!([{"deal": 4, "shard": 1}]))})
}

fn deal() -> Value {
    json!({"id": 4, "owner": ALICE, "epochs": 3, "price_per_byte_epoch": "2",
        "escrow": "9000000000", "paid": "0", "refunded": "0", "opened_height": 2,
        "epochs_done": 0, "next_epoch_height": 12, "end_requested": false, "status": "active",
        "blob": {"id": BLOB_ID, "len_bytes": 100, "k": 2, "m": 1, "shard_len": 64,
            "shard_roots": ["c1".repeat(32), "c2".repeat(32), "c3".repeat(32)]},
        "shards": [{"index": 1, "provider": PROVIDER, "endpoint": null, "root": "c2".repeat(32),
            "proven": true, "challenge": {"kind": "proof", "chunk_index": 0,
            "issued_height": 2, "deadline_height": 5}, "bounty": "1500000000",
            "assignments": 1, "waiting": false}]})
}

fn asset(id: &str) -> Value {
    json!({"asset": id, "owner": ALICE, "supply": "1000", "revenue": "7500000000",
        "carry_scaled": "0", "forward": null, "holders": [{"address": PROVIDER,
        "units": "250", "locked": "0", "claimable": "1250000000"}]})
}

fn agent() -> Value {
    json!({"id": 11, "owner": ALICE, "name": "summarizer", "description": "<b>sums</b>",
        "endpoints": [{"protocol": "mcp", "url": "http://127.0.0.1:2/mcp"}],
        "tags": ["summarize"], "price": "4000000000", "stake": "100000000000",
        "share_asset": "summarizer", "active": true, "registered_height": 2,
        "history": {"completed": 9, "timeouts": 1, "paid": "36000000000",
            "rated_paid": "36000000000", "rating_points": "45"},
        "reputation_bps": "8100", "score": "123"})
}

struct Answer {
    status: StatusCode,
    body: String,
    location: Option<String>,
}

async fn get_from(broken: bool, path: &str) -> Answer {
    let app = router(Arc::new(Chain { broken }));
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
        location,
    }
}

async fn get(path: &str) -> Answer {
    get_from(false, path).await
}

/// The page at `path` answers 200 and shows every one of `expected`.
async fn check(path: &str, expected: &[&str]) {
    let answer = get(path).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    for text in expected {
        assert!(answer.body.contains(text), "{path} lacks {text}");
    }
}

#[tokio::test]
async fn each_page_shows_the_chains_values() {
    check("/", &["piazza-test", "<span id=\"height\">3</span>"]).await;
    check("/", &["Blocks per minute", "60.000", "#3", "#1"]).await;
    check("/block/2", &[BLOCK_HASH, "1.5 PZA", "/explorer/tx/bb00"]).await;
    check(&format!("/block/{BLOCK_HASH}"), &["Block 2"]).await;
    let full = get("/block/3").await;
    assert!(full.body.contains("150 transactions, the first 100 shown"));
    assert_eq!(full.body.matches("/explorer/tx/").count(), 100);
    check(
        &format!("/tx/{TX_HASH}"),
        &[
            "bank.transfer",
            "2.5 PZA",
            "compute.job_submitted",
            "/explorer/job/5",
        ],
    )
    .await;
    check(
        &format!("/account/{ALICE}"),
        &["42 PZA", "7 PZA as provider"],
    )
    .await;
    check(
        &format!("/provider/{PROVIDER}"),
        &["31", "<span id=\"frauds\">1</span>", "minilm"],
    )
    .await;
    check("/models", &["minilm", "bert"]).await;
    check("/model/minilm", &["4444", "apache-2.0"]).await;
    check(
        "/job/2",
        &[
            &"77".repeat(32),
            "settled",
            "piazza job verify 2 --rpc &lt;node url&gt;",
        ],
    )
    .await;
    // Twelve steps: the root covers 0–15 cut to 0–11, then 0–7, 4–7, and the node 4–5 at level 1.
    check(
        "/dispute/5",
        &[
            "level 4: steps 0–11",
            "level 3: steps 0–7",
            "level 2: steps 4–7",
            "level 1: steps 4–5",
            "<svg",
        ],
    )
    .await;
    check("/dispute/7", &["proven wrong"]).await;
}

#[tokio::test]
async fn storage_data_agents_and_shares_pages_show_their_records() {
    check(
        "/storage",
        &[
            "Providers (1)",
            "/explorer/storage/provider/pz1provider",
            "17",
            "250 PZA",
        ],
    )
    .await;
    check(
        &format!("/storage/provider/{PROVIDER}"),
        &[
            "Shards held (1)",
            "/explorer/storage/deal/4",
            "Open challenges (1)",
            "proof",
        ],
    )
    .await;
    check(
        "/storage/deal/4",
        &[
            "9 PZA",
            "active",
            &format!("/explorer/blob/{BLOB_ID}"),
            "1.5 PZA",
            &"c2".repeat(32),
        ],
    )
    .await;
    check(
        &format!("/blob/{BLOB_ID}"),
        &[&"c3".repeat(32), "/explorer/storage/deal/4", "shard_len"],
    )
    .await;
    check(&format!("/account/{ALICE}"), &["/explorer/storage/deal/4"]).await;
    check(
        "/dataset/6",
        &[
            "cc-by-4.0",
            "3 PZA",
            "/explorer/pool/8",
            "Shares and royalties",
            "7.5 PZA",
        ],
    )
    .await;
    check(
        "/pool/8",
        &[
            "Contributions (1)",
            &"dd".repeat(32),
            "/explorer/job/2",
            "/explorer/dataset/6",
            "250",
        ],
    )
    .await;
    check(
        "/model/minilm",
        &[
            "<span id=\"royalty\">2500</span>",
            "/explorer/model/bert-base",
            "weight 6000 bps",
            "/explorer/dataset/6",
            "Shares and royalties",
            "1.25 PZA",
        ],
    )
    .await;
    check(
        "/agent/11",
        &[
            "summarizer",
            "&lt;b&gt;sums&lt;/b&gt;",
            "8100",
            "Reputation",
            "mcp",
            "1.25 PZA",
        ],
    )
    .await;
    check(
        "/agents?tag=summarize",
        &["/explorer/agent/11", "1 agents tagged summarize"],
    )
    .await;
    check("/agent-call/12", &["4 PZA", "open", "/explorer/agent/11"]).await;
    for (path, expected) in [
        ("/storage/deal/99", StatusCode::NOT_FOUND),
        ("/storage/deal/x", StatusCode::BAD_REQUEST),
        ("/storage/provider/nope", StatusCode::BAD_REQUEST),
        ("/blob/zz", StatusCode::BAD_REQUEST),
        ("/dataset/99", StatusCode::NOT_FOUND),
        ("/pool/-1", StatusCode::BAD_REQUEST),
        ("/label-task/99", StatusCode::NOT_FOUND),
        ("/agent/99", StatusCode::NOT_FOUND),
        ("/agent-call/99", StatusCode::NOT_FOUND),
    ] {
        let answer = get(path).await;
        assert_eq!(answer.status, expected, "{path}: {}", answer.body);
        assert!(answer.body.contains("class=\"error\""), "{path}");
    }
    let long_tag = format!("/agents?tag={}", "t".repeat(QUERY_BYTES_MAX + 1));
    assert_eq!(get(&long_tag).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_account_page_carries_its_proof_for_the_browser() {
    let page = get(&format!("/account/{ALICE}")).await;
    assert!(page.body.contains("id=\"proof\""));
    assert!(page.body.contains("/explorer/assets/proof.js"));
    let script = get("/assets/proof.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("JMT::IntrnalNode"));
}

#[tokio::test]
async fn the_job_page_carries_its_record_proof_and_output_for_the_browser() {
    let page = get("/job/2").await;
    assert_eq!(page.status, StatusCode::OK);
    let result = job(2).result.unwrap();
    for data in [
        "data-kind=\"job\"".to_string(),
        "data-id=\"2\"".to_string(),
        format!("data-proof=\"{}\"", "66".repeat(8)),
        format!("data-output=\"{}\"", result.output),
        format!("data-output-hash=\"{}\"", result.output_hash),
        format!("data-block-root=\"{}\"", "11".repeat(32)),
    ] {
        assert!(page.body.contains(&data), "{data} missing");
    }
    assert!(page.body.contains("/explorer/assets/proof.js"));
    let script = get("/assets/proof.js").await;
    assert!(script.body.contains("verifyJob"));
}

#[tokio::test]
async fn chain_text_is_escaped_everywhere() {
    let list = get("/models").await;
    assert!(!list.body.contains(HOSTILE_MODEL));
    assert!(list.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let page = get("/model/%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(HOSTILE_MODEL));
    let missing = get("/search?q=%3Cimg%20src%3Dx%3E").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.body.contains("<img src=x>"));
}

#[tokio::test]
async fn search_dispatches_on_the_shape() {
    let redirect = |q: &str| {
        let q = q.to_string();
        async move { get(&format!("/search?q={q}")).await.location }
    };
    assert_eq!(redirect("3").await.as_deref(), Some("/explorer/block/3"));
    assert_eq!(redirect("5").await.as_deref(), Some("/explorer/job/5"));
    assert_eq!(
        redirect(BLOCK_HASH).await.as_deref(),
        Some("/explorer/block/2")
    );
    assert_eq!(
        redirect(&format!("0x{TX_HASH}")).await.as_deref(),
        Some(format!("/explorer/tx/{TX_HASH}").as_str())
    );
    assert_eq!(
        redirect(ALICE).await.as_deref(),
        Some(format!("/explorer/account/{ALICE}").as_str())
    );
    assert_eq!(
        redirect("minilm").await.as_deref(),
        Some("/explorer/model/minilm")
    );
    // Both a block and a job: a page offering both.
    let both = get("/search?q=2").await;
    assert_eq!(both.status, StatusCode::OK);
    assert!(both.body.contains("/explorer/block/2") && both.body.contains("/explorer/job/2"));
    // A part of a name lists the models that contain it.
    let partial = get("/search?q=mini").await;
    assert!(partial.body.contains("/explorer/model/minilm"));
    // A capability tag lists the agents that declare it.
    let tagged = get("/search?q=summarize").await;
    assert!(
        tagged.body.contains("/explorer/agent/11"),
        "{}",
        tagged.body
    );
    check("/search", &["Search by block height"]).await;
}

#[tokio::test]
async fn hostile_input_answers_a_clear_page_never_a_500() {
    let long = "9".repeat(QUERY_BYTES_MAX + 1);
    let cases: Vec<(String, StatusCode)> = vec![
        ("/block/99".into(), StatusCode::NOT_FOUND),
        ("/block/-1".into(), StatusCode::BAD_REQUEST),
        ("/block/zz".into(), StatusCode::BAD_REQUEST),
        (format!("/block/{}", "f".repeat(64)), StatusCode::NOT_FOUND),
        ("/tx/1234".into(), StatusCode::BAD_REQUEST),
        (format!("/tx/{}", "g".repeat(64)), StatusCode::BAD_REQUEST),
        (format!("/tx/{}", "c".repeat(64)), StatusCode::NOT_FOUND),
        ("/account/nope".into(), StatusCode::BAD_REQUEST),
        ("/account/pz1short".into(), StatusCode::BAD_REQUEST),
        (format!("/provider/{ALICE}"), StatusCode::NOT_FOUND),
        ("/job/99".into(), StatusCode::NOT_FOUND),
        ("/job/18446744073709551616".into(), StatusCode::BAD_REQUEST),
        ("/dispute/99".into(), StatusCode::NOT_FOUND),
        ("/model/unknown".into(), StatusCode::NOT_FOUND),
        ("/no/such/page".into(), StatusCode::NOT_FOUND),
        (format!("/search?q={long}"), StatusCode::BAD_REQUEST),
        (format!("/job/{long}"), StatusCode::BAD_REQUEST),
        (
            "/search?q=99999999999999999999999".into(),
            StatusCode::BAD_REQUEST,
        ),
        ("/search?q=4".into(), StatusCode::NOT_FOUND),
        (
            format!("/search?q={}", "e".repeat(64)),
            StatusCode::NOT_FOUND,
        ),
        ("/search?q=%ZZ".into(), StatusCode::NOT_FOUND),
    ];
    for (path, expected) in cases {
        let answer = get(&path).await;
        assert_eq!(answer.status, expected, "{path}: {}", answer.body);
        assert!(
            answer.body.contains("class=\"error\""),
            "{path}: no error text"
        );
    }
    let broken = get_from(true, "/").await;
    assert_eq!(broken.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(broken.body.contains("store unavailable"));
}

#[tokio::test]
async fn assets_are_embedded() {
    let script = get("/assets/explorer.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("piazza_subscribe"));
    let style = get("/assets/style.css").await;
    assert!(style.body.contains("svg .range"));
}

#[tokio::test]
async fn the_home_link_answers_where_the_node_mounts_it() {
    let page = get("/models").await;
    let home = format!("class=\"brand\" href=\"{}\"", piazza_explorer::BASE_PATH);
    assert!(page.body.contains(&home));
    // Mounted as the node mounts it: the bare path, the path with a trailing slash and a page.
    let app = piazza_explorer::mounted(Arc::new(Chain { broken: false }));
    for path in ["/explorer", "/explorer/", "/explorer/models"] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}
