//! The gateway on a real in-process devnet: OpenAI-shaped errors and limits checked here, then
//! the official `openai` Python client through `scripts/openai_check.py`.

mod support;

use piazza_gateway::{start, GatewayConfig, GatewayHandle, Limits};
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::{devnet, DevnetOptions, DEV_KEY, PRICE_PER_UNIT, UNSERVED_MODEL};

const BODY_BYTES_MAX: usize = 64 * 1024;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

async fn gateway(devnet: &support::Devnet) -> GatewayHandle {
    gateway_in(devnet, "gateway").await
}

async fn gateway_in(devnet: &support::Devnet, dir: &str) -> GatewayHandle {
    let mut config = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &devnet.url,
        devnet.dir.path().join(dir),
        devnet.keystore_dir.clone(),
    );
    config.limits = Limits {
        body_bytes_max: BODY_BYTES_MAX,
        job_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    start(config).await.expect("gateway starts")
}

/// One request: its status and JSON body.
async fn call(
    gw: &GatewayHandle,
    key: Option<&str>,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", gw.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Expects an OpenAI-shaped error with this status and code.
fn check_error(
    (status, body): (u16, Value),
    want_status: u16,
    want_code: Option<&str>,
    what: &str,
) {
    assert_eq!(status, want_status, "{what}: {body}");
    let error = &body["error"];
    assert!(
        error["message"].is_string() && error["type"].is_string(),
        "{what}: not OpenAI-shaped: {body}"
    );
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{what}: {body}"
    );
    if let Some(code) = want_code {
        assert_eq!(error["code"], code, "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_clients_get_verifiable_answers_from_a_devnet() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    match python {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the `openai` Python package is not importable (CI installs it: `python3 -m pip install openai`): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is needed for the OpenAI client check: {e}"),
    }
    let devnet = devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: true,
        provider_concurrency: 2,
    })
    .await;
    let gw = gateway(&devnet).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    assert!(
        gw.create_key("nobody", Amount::pza(1)).is_err(),
        "a key for a missing keystore key"
    );
    let embed = |input: Value| json!({"model": "all-minilm-l6-v2", "input": input}).to_string();

    // Errors the Python client does not reach, all OpenAI-shaped.
    check_error(
        call(&gw, None, "/v1/embeddings", embed(json!("x"))).await,
        401,
        Some("invalid_api_key"),
        "no key",
    );
    check_error(
        call(&gw, Some(&key), "/v1/embeddings", "{not json").await,
        400,
        None,
        "bad JSON",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/embeddings",
            json!({"model": "all-minilm-l6-v2"}).to_string(),
        )
        .await,
        400,
        None,
        "no input",
    );
    check_error(
        call(&gw, Some(&key), "/v1/embeddings", embed(json!([1, 2, 3]))).await,
        400,
        None,
        "token arrays",
    );
    check_error(
        call(&gw, Some(&key), "/v1/embeddings", embed(json!([]))).await,
        400,
        None,
        "empty batch",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/embeddings",
            json!({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"})
                .to_string(),
        )
        .await,
        400,
        None,
        "bad encoding",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/embeddings",
            embed(json!("x".repeat(BODY_BYTES_MAX))),
        )
        .await,
        413,
        Some("request_too_large"),
        "body too large",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/embeddings",
            embed(json!("x".repeat(20 * 1024))),
        )
        .await,
        413,
        Some("request_too_large"),
        "input too large for a job",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/embeddings",
            json!({"model": UNSERVED_MODEL, "input": "x"}).to_string(),
        )
        .await,
        503,
        Some("no_provider"),
        "unserved model",
    );
    check_error(
        call(
            &gw,
            Some(&key),
            "/v1/chat/completions",
            json!({"model": "all-minilm-l6-v2", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .await,
        400,
        None,
        "chat on an embedding model",
    );
    check_error(
        call(&gw, Some(&key), "/v1/nothing", "{}").await,
        404,
        Some("unknown_url"),
        "unknown URL",
    );
    let nothing_spent = gw.keys().iter().all(|k| k.spent.is_zero());
    assert!(nothing_spent, "refused requests spent: {:?}", gw.keys());

    // An input near the ledger's 16 KiB limit is served and pays a fee by its size (the gateway
    // used to sign every job with a fixed fee cap, which large inputs outgrew).
    let long_input = "a verifiable embedding of a long text ".repeat(15 * 1024 / 38);
    let fee_before = gw.job_fees();
    let (status, body) = call(&gw, Some(&key), "/v1/embeddings", embed(json!(long_input))).await;
    assert_eq!(status, 200, "a {}-byte input: {body}", long_input.len());
    let fee: u128 = body["piazza"][0]["fee"].as_str().unwrap().parse().unwrap();
    let by_size = (long_input.len() as u128) * fee_before.per_byte.base_units();
    assert!(
        fee > by_size && fee > fee_before.fixed.base_units(),
        "the fee of a 15 KiB job is {fee}: its bytes alone cost {by_size}"
    );
    assert_eq!(
        gw.job_fees(),
        fee_before,
        "the fees were measured right the first time"
    );

    // A limit that covers exactly one request's worst case: one answer, then 429.
    let worst_case = gw
        .embedding_worst_case("all-minilm-l6-v2", &["hello"])
        .await
        .unwrap();
    let escrow = Amount::new(PRICE_PER_UNIT * piazza_gateway::EMBEDDING_UNITS_MAX as u128);
    let tx_bytes = piazza_gateway::fees::job_tx_bytes(
        support::CHAIN_ID,
        piazza_ledger::compute::Msg::SubmitJob {
            model: "all-minilm-l6-v2".into(),
            input: b"hello".to_vec(),
            params: Default::default(),
            max_units: piazza_gateway::EMBEDDING_UNITS_MAX,
            max_price: escrow,
        },
    );
    let fees = piazza_ledger::genesis::FeeParams::default();
    let expected_fee =
        fees.unit_price.base_units() * (fees.tx_base_units + 100 + tx_bytes as u64) as u128;
    assert_eq!(
        worst_case,
        Amount::new(escrow.base_units() + expected_fee),
        "escrow plus the exact fee of its {tx_bytes}-byte transaction under the genesis fee parameters"
    );
    let one_shot = gw.create_key(DEV_KEY, worst_case).unwrap();
    let (status, body) = call(
        &gw,
        Some(&one_shot),
        "/v1/embeddings",
        embed(json!("hello")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"][0]["embedding"].as_array().map(Vec::len),
        Some(384)
    );
    check_error(
        call(
            &gw,
            Some(&one_shot),
            "/v1/embeddings",
            embed(json!("hello")),
        )
        .await,
        429,
        Some("insufficient_quota"),
        "spend limit used up",
    );
    let record = gw
        .keys()
        .into_iter()
        .find(|k| k.key_hash == piazza_gateway::keys::hash_key(&one_shot))
        .expect("the one-shot key");
    let receipt = &body["piazza"][0];
    let price: u128 = receipt["price"].as_str().unwrap().parse().unwrap();
    let fee: u128 = receipt["fee"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        record.spent,
        Amount::new(price + fee),
        "charged the settled price plus the fee"
    );
    assert_eq!(
        price,
        PRICE_PER_UNIT * body["usage"]["prompt_tokens"].as_u64().unwrap() as u128
    );
    println!(
        "a one-word embedding: price {} PZA ({} tokens), fee {} PZA ({}x the price)",
        Amount::new(price),
        body["usage"]["prompt_tokens"],
        Amount::new(fee),
        fee / price.max(1)
    );

    // The official client.
    let quota_key = gw.create_key(DEV_KEY, Amount::new(1_000)).unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .arg(repo_root().join("scripts/openai_check.py"))
        .args([
            "--base-url",
            &format!("{}/v1", gw.url()),
            "--api-key",
            &key,
            "--quota-key",
            &quota_key,
        ]);
    if devnet.generation {
        command.arg("--require-generation");
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "scripts/openai_check.py failed:\n{stdout}"
    );
    assert!(stdout.contains("all checks passed"));

    let spent = gw
        .keys()
        .into_iter()
        .map(|k| k.spent)
        .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap());
    assert!(
        spent > record.spent,
        "the Python client's requests were charged"
    );
    gw.shutdown().await;
    devnet.shutdown().await;
}
