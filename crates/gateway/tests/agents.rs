//! The gateway for agents on an in-process devnet, each piece checked with the ecosystem's own
//! client from PyPI: `/mcp` with the official MCP SDK (`tests/mcp.py`: tools listed, models, an
//! embedding equal to the MiniLM fixture, a job submitted then shown, the paying account's
//! balance, an agent called and paid over x402 with `call_agent`, a wrong model a tool error; the paid tools charged to the API key as its OpenAI
//! routes are; the transport's refusals: no key, a key's limit, batches, oversized bodies,
//! `GET`); agent cards with `a2a-sdk` (`tests/a2a.py`) and discovery by meaning over seeded
//! agents; a paid route's 402 with the `x402` package (`tests/x402_parse.py`).

mod support;

use piazza_gateway::mcp::MCP_BODY_BYTES_MAX;
use piazza_gateway::Limits;
use piazza_primitives::Amount;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::{devnet, gateway, DevnetOptions, DEV_KEY};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// Runs a Python client script to its end (bounded), its last stdout line parsed as JSON.
async fn python(script: &str, args: Vec<String>) -> Value {
    let module = script.trim_end_matches(".py");
    let import = match module {
        "mcp" => "import mcp",
        "a2a" => "import a2a",
        _ => "import x402",
    };
    let check = std::process::Command::new("python3")
        .args(["-c", import])
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "`{import}` failed (CI installs the package, see .ci/run): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut command = std::process::Command::new("python3");
    command
        .arg(repo_root().join("crates/gateway/tests").join(script))
        .args(args);
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the client finishes within 5 minutes")
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{stdout}");
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary")
}

async fn post(url: &str, key: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// A devnet serving MiniLM, a gateway in front of it and an API key with 100 PZA to spend.
async fn started() -> (support::Devnet, piazza_gateway::GatewayHandle, String) {
    let devnet = devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: false,
        provider_concurrency: 1,
    })
    .await;
    let gw = gateway(&devnet, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    (devnet, gw, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_sdk_lists_and_calls_the_tools_within_the_keys_limit() {
    let (devnet, gw, key) = started().await;
    let url = format!("{}/mcp", gw.url());
    // An agent paid over x402, for `call_agent`.
    let agent_price: u128 = 1_000;
    let (agent_gw, _) = support::paid_agent(
        &devnet,
        "paid-embedder",
        "Embeds sentences for a price.",
        &piazza_primitives::SecretKey::from_seed(support::VALIDATOR_SEED),
        agent_price,
    )
    .await;

    let summary = python(
        "mcp.py",
        vec![
            "--url".into(),
            url.clone(),
            "--api-key".into(),
            key.clone(),
            "--embedding-model".into(),
            piazza_provider::models::MINILM.into(),
            "--fixture".into(),
            repo_root()
                .join("crates/engine/tests/fixtures/minilm_reference.json")
                .display()
                .to_string(),
            "--paid-agent".into(),
            "paid-embedder".into(),
            "--max-price".into(),
            "0.001".into(),
        ],
    )
    .await;
    assert_eq!(summary["server"], "piazza-gateway", "{summary}");
    // `call_agent` paid the agent its price from the key's account, once.
    assert_eq!(
        summary["paid_agent_paid"],
        agent_price.to_string(),
        "{summary}"
    );
    assert_eq!(
        summary["paid_agent_transaction"].as_str().map(str::len),
        Some(64),
        "{summary}"
    );
    assert_eq!(summary["embed_dims"], 384, "{summary}");
    assert!(summary["job"].as_u64().is_some(), "{summary}");
    let dev_balance = devnet.client.account(&devnet.dev).await.unwrap().balance;
    // Read after the script: the chain moved on, the balance it saw was higher or equal.
    let seen: u128 = summary["balance"].as_str().unwrap().parse().unwrap();
    assert!(seen >= dev_balance.parse::<u128>().unwrap(), "{summary}");

    // The embed and the job were charged to the key; nothing is left reserved.
    let record = gw.keys().into_iter().next().unwrap();
    assert!(record.spent > Amount::ZERO, "the paid tools were charged");
    assert_eq!(gw.reserved(&record.key_hash), Amount::ZERO);

    // Without a key: 401, as on the OpenAI routes.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let r = post(&url, None, initialize.to_string()).await;
    assert_eq!(r.status(), 401);
    // A notification: 202, no body.
    let r = post(
        &url,
        Some(&key),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 202);
    // A batch is refused as an invalid request; an unknown method is named.
    let r: Value = post(&url, Some(&key), json!([initialize]).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r: Value = post(
        &url,
        Some(&key),
        json!({"jsonrpc": "2.0", "id": 7, "method": "resources/list"}).to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(7), json!(-32601))
    );
    // Oversized: 413 before it is parsed.
    let r = post(&url, Some(&key), vec![b' '; MCP_BODY_BYTES_MAX + 1]).await;
    assert_eq!(r.status(), 413);
    // No server-initiated stream.
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // A key whose limit cannot cover an embedding's worst case: the tool answers the 429's
    // reason as a tool error and nothing is charged.
    let poor = gw.create_key(DEV_KEY, Amount::new(1)).unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "embed", "arguments": {"model": piazza_provider::models::MINILM, "input": "hi"}}});
    let r: Value = post(&url, Some(&poor), call.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("spend limit"), "{text}");
    let poor_record = gw
        .keys()
        .into_iter()
        .find(|k| k.spend_limit == Amount::new(1))
        .unwrap();
    assert_eq!(poor_record.spent, Amount::ZERO);

    agent_gw.shutdown().await;
    gw.shutdown().await;
    devnet.shutdown().await;
}

/// Registers an agent owned by the validator (funded at genesis) and waits for it to be on
/// chain.
async fn register(client: &piazza_client::Client, name: &str, description: &str, tags: &[&str]) {
    use piazza_ledger::agents::{Endpoint, Msg, Profile, Protocol};
    let key = piazza_primitives::SecretKey::from_seed(support::VALIDATOR_SEED);
    let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    tags.sort();
    let profile = Profile {
        description: description.into(),
        endpoints: vec![
            Endpoint {
                protocol: Protocol::A2a,
                url: format!("http://127.0.0.1:9/{name}/a2a"),
            },
            Endpoint {
                protocol: Protocol::Http,
                url: format!("http://127.0.0.1:9/{name}"),
            },
        ],
        tags,
        price: Amount::new(1_000),
    };
    let message = piazza_ledger::tx::Message::Agents(Msg::Register {
        name: name.into(),
        profile,
        stake: Amount::pza(10),
        share_asset: None,
    });
    let hash = client.send_message(&key, message).await.unwrap();
    let receipt = client
        .wait_for_receipt(&hash, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(receipt.status, "ok", "{receipt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_have_cards_and_are_found_by_meaning() {
    let (devnet, gw, key) = started().await;
    let seeded = [
        (
            "translator",
            "Translates letters and documents from English into French and German.",
            &["language", "translation"][..],
        ),
        (
            "ranker",
            "Ranks a list of documents by how relevant each one is to a search query.",
            &["ranking", "search"][..],
        ),
        (
            "forecaster",
            "Forecasts tomorrow's weather, rain and temperature for any city.",
            &["weather"][..],
        ),
    ];
    for (name, description, tags) in seeded {
        register(&devnet.client, name, description, tags).await;
    }

    // a2a-sdk parses the card; the registration file has ERC-8004's shape.
    let summary = python(
        "a2a.py",
        vec![
            "--base-url".into(),
            gw.url(),
            "--agent".into(),
            "ranker".into(),
            "--a2a-url".into(),
            "http://127.0.0.1:9/ranker/a2a".into(),
            "--tags".into(),
            "ranking,search".into(),
        ],
    )
    .await;
    assert_eq!(summary["binding"], "JSONRPC", "{summary}");
    assert_eq!(summary["agent_id"], 1, "{summary}");

    // By meaning: the query shares no word with the ranker's description.
    let http = reqwest::Client::new();
    let search = |q: &'static str| {
        http.get(format!("{}/v1/agents/search", gw.url()))
            .query(&[("q", q), ("limit", "3")])
            .bearer_auth(&key)
            .send()
    };
    let found: Value = search("which service can sort my texts by their usefulness for a question")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{found}");
    assert_eq!(names[0], "ranker", "{found}");
    let found: Value = search("will it be sunny in Paris tomorrow?")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["data"][0]["name"], "forecaster", "{found}");
    // The embeddings were paid by the key; without a key nothing is read.
    let record = gw.keys().into_iter().next().unwrap();
    assert!(record.spent > Amount::ZERO);
    let r = http
        .get(format!("{}/v1/agents/search?q=x", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/v1/agents/search", gw.url()))
        .query(&[(
            "q",
            "x".repeat(piazza_gateway::agents::AGENTS_QUERY_BYTES_MAX + 1),
        )])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    gw.shutdown().await;
    devnet.shutdown().await;
}

/// The `x402` PyPI package decodes the 402 a paid route answers (scheme `exact` on
/// `piazza:<chain-id>`, amount in base units, `payTo` a Piazza address).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_x402_package_parses_a_paid_routes_402() {
    use piazza_gateway::x402::{self, Facilitator, PaidRoute, ResourceInfo};
    use std::sync::Arc;
    let (devnet, gw, _) = started().await;
    let facilitator = Arc::new(Facilitator::new(
        piazza_client::Client::new(&devnet.url),
        support::CHAIN_ID.into(),
        piazza_primitives::SecretKey::from_seed(support::VALIDATOR_SEED),
    ));
    let route = Arc::new(PaidRoute {
        resource: ResourceInfo {
            url: "http://127.0.0.1/paid".into(),
            description: Some("a paid answer".into()),
            mime_type: Some("text/plain".into()),
        },
        requirements: facilitator.requirements(Amount::new(1_234), devnet.provider),
        facilitator,
        agent: None,
    });
    let app = axum::Router::new()
        .route("/paid", axum::routing::get(|| async { "the paid answer" }))
        .route_layer(axum::middleware::from_fn_with_state(
            route,
            x402::require_payment,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/paid", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let summary = python("x402_parse.py", vec!["--url".into(), url]).await;
    assert_eq!(summary["x402_version"], 2, "{summary}");
    assert_eq!(summary["scheme"], "exact", "{summary}");
    assert_eq!(
        summary["network"],
        format!("piazza:{}", support::CHAIN_ID),
        "{summary}"
    );
    assert_eq!(summary["amount"], "1234", "{summary}");
    assert_eq!(summary["pay_to"], devnet.provider.to_string(), "{summary}");
    server.abort();
    gw.shutdown().await;
    devnet.shutdown().await;
}
