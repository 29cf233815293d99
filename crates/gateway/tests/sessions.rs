//! The gateway over sessions on an in-process devnet (node, provider serving its session
//! endpoint on 127.0.0.1, gateway), checked with the official `openai` Python client
//! (`tests/openai_sessions.py`): a streamed SmolLM2 chat relayed chunk by chunk with its
//! receipt last, embeddings equal to the MiniLM fixture, a receipt on every answer, the job
//! path by header; `usage.prompt_tokens` the chat prompt's token count; the key charged exactly
//! the receipts' prices (and the job's price and fee), and one session transaction per model
//! however many requests.

mod support;

use piazza_gateway::Limits;
use piazza_primitives::Amount;
use std::path::PathBuf;
use std::time::Duration;
use support::{gateway, session_devnet, DevnetOptions, DEV_KEY};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_client_is_served_over_sessions() {
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
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: true,
        provider_concurrency: 2,
    })
    .await;
    assert!(
        devnet.generation,
        "SmolLM2 is needed (scripts/fetch-models.sh)"
    );
    let gw = gateway(&devnet, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();

    let mut command = std::process::Command::new("python3");
    command
        .arg(repo_root().join("crates/gateway/tests/openai_sessions.py"))
        .args(["--base-url", &format!("{}/v1", gw.url()), "--api-key", &key])
        .args(["--chat-model", piazza_provider::models::SMOLLM2])
        .arg("--fixture")
        .arg(repo_root().join("crates/engine/tests/fixtures/minilm_reference.json"));
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the client finishes within 10 minutes")
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_sessions.py failed:\n{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary");
    let number = |name: &str| -> u128 {
        summary[name]
            .as_u64()
            .map(u128::from)
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };

    // The prompt's tokens, as the model's own chat template and tokenizer count them.
    let generator = piazza_llm::Generator::load(piazza_llm::default_model_path()).unwrap();
    let prompt = summary["chat_prompt"].as_str().expect("the chat prompt");
    let text = generator
        .apply_chat_template(&[piazza_llm::Message::new("user", prompt)])
        .unwrap();
    let expected = generator.tokenize(&text).unwrap().len() as u128;
    assert_eq!(
        number("chat_prompt_tokens"),
        expected,
        "usage.prompt_tokens"
    );

    // Exactly the receipts' prices, the session transactions' fees (and the job's price and
    // fee); nothing left reserved.
    let record = gw.keys().into_iter().next().unwrap();
    assert!(number("session_paid") > 0);
    assert!(gw.session_fees_paid() > 0);
    assert_eq!(
        record.spent,
        Amount::new(
            number("session_paid") + number("job_charge") + u128::from(gw.session_fees_paid())
        )
    );
    assert_eq!(gw.reserved(&record.key_hash), Amount::ZERO);
    // One session per model (chat, embeddings), opened once, whatever the request count.
    assert_eq!(gw.session_transactions(), 2);
    gw.shutdown().await;
    devnet.shutdown().await;
}

/// A session whose deposit runs low is topped up (one transaction) and keeps serving: the
/// provider reads the larger deposit from the chain, and every answer has its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_running_low_is_topped_up_and_keeps_serving() {
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(50),
        generation: false,
        provider_concurrency: 1,
    })
    .await;
    // Room for two requests at their worst case (256 tokens each); an answer costs its ~40.
    let gw = gateway(
        &devnet,
        Limits {
            session_deposit_requests: 2,
            ..Limits::default()
        },
    )
    .await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    let http = reqwest::Client::new();
    let (mut sessions, mut paid) = (std::collections::BTreeSet::new(), 0u128);
    let requests = 30;
    // About 40 tokens each: a top-up every few requests.
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(4);
    for i in 0..requests {
        let response = http
            .post(format!("{}/v1/embeddings", gw.url()))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": "all-minilm-l6-v2", "input": format!("sentence number {i}: {filler}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let session = response.headers()["x-piazza-session"]
            .to_str()
            .unwrap()
            .to_string();
        let body: serde_json::Value = response.json().await.unwrap();
        let receipt = &body["piazza"][0];
        assert_eq!(receipt["session"].to_string(), session);
        paid += receipt["price"].as_str().unwrap().parse::<u128>().unwrap();
        sessions.insert(session);
    }
    let worst = 256 * support::PRICE_PER_UNIT;
    let deposit = 2 * worst;
    assert!(
        paid > deposit,
        "the requests cost {paid}, more than one deposit"
    );
    assert_eq!(
        sessions.len(),
        1,
        "one session served them all: {sessions:?}"
    );
    let sent = gw.session_transactions();
    let top_ups = sent - 1;
    assert!(top_ups >= 1, "{sent} session transactions");
    let id: u64 = sessions.first().unwrap().parse().unwrap();
    let info = devnet.client.session(id).await.unwrap().unwrap();
    let escrowed = info.deposit.parse::<u128>().unwrap() + info.paid.parse::<u128>().unwrap();
    assert_eq!(escrowed, deposit * (1 + top_ups as u128));
    // The last charge is written just after its answer left.
    let hash = gw.keys()[0].key_hash.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.reserved(&hash) != Amount::ZERO && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The receipts' prices and the fees of the open and the top-ups.
    let record = gw.keys().into_iter().next().unwrap();
    assert_eq!(
        record.spent,
        Amount::new(paid + u128::from(gw.session_fees_paid()))
    );
    println!("{requests} requests, {paid} paid, one session, {top_ups} top-up(s)");
    gw.shutdown().await;
    devnet.shutdown().await;
}

/// A session near its expiry is closed and a new one serves the next requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_near_its_expiry_is_rotated() {
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(50),
        generation: false,
        provider_concurrency: 1,
    })
    .await;
    // In the rotation window ten blocks after it opens.
    let expiry = piazza_gateway::sessions::SESSION_ROTATE_BEFORE_BLOCKS + 10;
    let gw = gateway(
        &devnet,
        Limits {
            session_expiry_blocks: expiry,
            ..Limits::default()
        },
    )
    .await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sessions.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never rotated: {sessions:?}"
        );
        let response = http
            .post(format!("{}/v1/embeddings", gw.url()))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": "all-minilm-l6-v2", "input": "a sentence"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let session: u64 = response.headers()["x-piazza-session"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if sessions.last() != Some(&session) {
            sessions.push(session);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = devnet.client.session(sessions[0]).await.unwrap().unwrap();
    assert_ne!(old.state, piazza_api::SessionState::Open, "{old:?}");
    // An open, a close and a new open.
    assert_eq!(gw.session_transactions(), 3);
    gw.shutdown().await;
    devnet.shutdown().await;
}

/// Spend limits hold over sessions exactly as for jobs: a request is refused (429) before any
/// session transaction or request is sent when the key cannot cover its worst case (its price
/// at `max_units` and the exact fees of the session transactions it may send: an open and two
/// closes); one that can is served, and each key is charged exactly its receipts' prices and
/// the fees of the session transactions its requests sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_pay_session_prices_and_fees_within_their_limits() {
    use piazza_ledger::sessions::Msg;
    use piazza_ledger::tx::Message;
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(50),
        generation: false,
        provider_concurrency: 1,
    })
    .await;
    let gw = gateway(&devnet, Limits::default()).await;
    let chain_id = devnet.client.status().await.unwrap().chain_id;
    let fees = gw.job_fees();
    let dev = piazza_keystore::Keystore::open(&devnet.keystore_dir)
        .unwrap()
        .unlock(DEV_KEY, "")
        .unwrap();
    let fee = |message: Msg| {
        fees.message_fee(&chain_id, Message::Sessions(message))
            .unwrap()
            .base_units()
    };
    let open = fee(Msg::Open {
        model: "all-minilm-l6-v2".into(),
        owner_key: dev.public_key(),
        authorised: None,
        deposit: Amount::ZERO,
        max_price_per_unit: Amount::new(support::PRICE_PER_UNIT),
        expiry_blocks: Limits::default().session_expiry_blocks,
    });
    let close = fee(Msg::Close { session: 0 });
    let worst =
        piazza_gateway::EMBEDDING_UNITS_MAX as u128 * support::PRICE_PER_UNIT + open + 2 * close;
    let http = reqwest::Client::new();
    let embed = |key: String| {
        let (http, url) = (http.clone(), gw.url());
        async move {
            let response = http
                .post(format!("{url}/v1/embeddings"))
                .bearer_auth(&key)
                .json(&serde_json::json!({"model": "all-minilm-l6-v2", "input": "a sentence"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let settled = |hash: String| {
        let gw = &gw;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while gw.reserved(&hash) != Amount::ZERO && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let record = gw.keys().into_iter().find(|k| k.key_hash == hash).unwrap();
            assert_eq!(gw.reserved(&hash), Amount::ZERO);
            record.spent.base_units()
        }
    };
    let hash_of = |key: &str| piazza_gateway::keys::hash_key(key);

    // One unit short: refused before anything is sent.
    let short = gw.create_key(DEV_KEY, Amount::new(worst - 1)).unwrap();
    let (status, body) = embed(short.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(gw.session_transactions(), 0, "no session was opened for it");
    assert_eq!(settled(hash_of(&short)).await, 0);

    // Exactly enough: served; charged its receipt's price and the open's fee.
    let exact = gw.create_key(DEV_KEY, Amount::new(worst)).unwrap();
    let (status, body) = embed(exact.clone()).await;
    assert_eq!(status, 200, "{body}");
    let price: u128 = body["piazza"][0]["price"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(gw.session_transactions(), 1);
    assert_eq!(
        u128::from(gw.session_fees_paid()),
        open,
        "the open's exact fee"
    );
    assert_eq!(settled(hash_of(&exact)).await, price + open);

    // A second key on the same paying account uses the open session: its prices alone.
    let other = gw.create_key(DEV_KEY, Amount::pza(10)).unwrap();
    let mut prices = 0;
    for _ in 0..3 {
        let (status, body) = embed(other.clone()).await;
        assert_eq!(status, 200, "{body}");
        prices += body["piazza"][0]["price"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap();
    }
    assert_eq!(gw.session_transactions(), 1);
    assert_eq!(settled(hash_of(&other)).await, prices);
    gw.shutdown().await;
    devnet.shutdown().await;
}
