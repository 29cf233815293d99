//! Agent to agent on an in-process devnet (a node, a MiniLM provider, two gateways): agent A
//! finds agent B by meaning, calls B's paid HTTP endpoint (a gateway whose `/v1/embeddings` is
//! behind the x402 paywall, `piazza gateway run --x402-*`), gets `402` with the requirements,
//! pays with a signed authorization and is served; the payment settles on chain once, as B's
//! paid call; the same payment offered for another request is refused, and the chain refuses
//! it a second time; A rates B citing that call and B's reputation rises; ratings without a
//! settled payment of their own change nothing. Wrong amounts and networks: 402, nothing paid.

mod support;

use piazza_gateway::x402::{self, PaymentPayload, PaymentRequired, SettleResponse};
use piazza_gateway::Limits;
use piazza_ledger::agents::{self, Endpoint, Profile, Protocol};
use piazza_ledger::bank;
use piazza_ledger::tx::Message;
use piazza_primitives::{Amount, Hash, SecretKey};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{devnet, DevnetOptions, DEV_KEY};

const WAIT: Duration = Duration::from_secs(30);
/// What agent B asks per call, in base units (2 PZA: enough paid volume to show in reputation).
const PRICE: u128 = 2_000_000_000;

fn validator() -> SecretKey {
    SecretKey::from_seed(support::VALIDATOR_SEED)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn send(client: &piazza_client::Client, key: &SecretKey, message: Message) -> String {
    let hash = client.send_message(key, message).await.unwrap();
    let receipt = client.wait_for_receipt(&hash, WAIT).await.unwrap();
    match receipt.error {
        None => "ok".into(),
        Some(error) => format!("{error:?}"),
    }
}

fn register(name: &str, description: &str, tag: &str, url: String) -> Message {
    Message::Agents(agents::Msg::Register {
        name: name.into(),
        profile: Profile {
            description: description.into(),
            endpoints: vec![Endpoint {
                protocol: Protocol::Http,
                url,
            }],
            tags: vec![tag.into()],
            price: Amount::new(PRICE),
        },
        stake: Amount::pza(10),
        share_asset: None,
    })
}

fn payment(
    payer: &SecretKey,
    required: &PaymentRequired,
    amount: u128,
    nonce: u8,
) -> PaymentPayload {
    PaymentPayload::pay_first_offer(
        required,
        payer,
        support::CHAIN_ID,
        Amount::new(amount),
        (now_s() - 60, now_s() + 600),
        Hash([nonce; 32]),
    )
    .unwrap()
}

async fn reputation(client: &piazza_client::Client, agent: u64) -> (u64, u128) {
    let record = client.agent(agent).await.unwrap();
    (
        record["history"]["completed"].as_u64().unwrap(),
        record["reputation_bps"].as_str().unwrap().parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_a_finds_pays_and_rates_agent_b_over_x402() {
    let devnet = devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: false,
        provider_concurrency: 1,
    })
    .await;
    let client = &devnet.client;
    let owner_b = piazza_keystore::Keystore::open(&devnet.keystore_dir)
        .unwrap()
        .unlock(DEV_KEY, "")
        .unwrap();
    let payer_a = SecretKey::from_seed([61; 32]);
    let stranger = SecretKey::from_seed([62; 32]);
    for key in [&payer_a, &stranger] {
        let fund = Message::Bank(bank::Msg::Send {
            to: key.public_key().address(),
            amount: Amount::pza(10),
        });
        assert_eq!(send(client, &validator(), fund).await, "ok");
    }

    // B's server: a gateway whose embeddings are paid per request over x402, served with B's
    // own API key; its address is in B's record.
    let (gw_b, endpoint_b) = support::paid_agent(
        &devnet,
        "embedder",
        "Turns sentences into embedding vectors for semantic search and clustering.",
        &owner_b,
        PRICE,
    )
    .await;
    for (name, description, tag) in [
        (
            "translator",
            "Translates letters and documents from English into French and German.",
            "translation",
        ),
        (
            "forecaster",
            "Forecasts tomorrow's weather, rain and temperature for any city.",
            "weather",
        ),
    ] {
        let url = format!("http://127.0.0.1:9/{name}");
        let registered = send(client, &validator(), register(name, description, tag, url)).await;
        assert_eq!(registered, "ok");
    }
    // Found by name over RPC (no scan); an unknown name is null.
    let b = client.agent_by_name("embedder").await.unwrap();
    let agent_b = b["id"].as_u64().unwrap();
    assert_eq!(b["owner"], devnet.dev.to_string());
    assert!(client.agent_by_name("nobody").await.unwrap().is_null());

    // A's own gateway, for discovery (paid by A's API key).
    let gw_a = support::gateway(&devnet, Limits::default()).await;
    let key_a = gw_a.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // A discovers B by meaning: no word of the query is in B's description.
    let found: Value = http
        .get(format!("{}/v1/agents/search", gw_a.url()))
        .query(&[(
            "q",
            "I need numeric vectors that capture what my texts mean",
        )])
        .bearer_auth(&key_a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["data"][0]["name"], "embedder", "{found}");
    let url = found["data"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["protocol"] == "http")
        .and_then(|e| e["url"].as_str())
        .unwrap_or_else(|| panic!("an http endpoint in {found}"))
        .to_string();
    assert_eq!(url, endpoint_b);

    // Unpaid: 402 with the x402 requirements (B's owner, B's price, this chain).
    let body = |text: &str| json!({"model": piazza_provider::models::MINILM, "input": text});
    let ask = |payment: Option<String>, text: &str| {
        let mut request = http.post(&url).json(&body(text));
        if let Some(payment) = payment {
            request = request.header("payment-signature", payment);
        }
        request.send()
    };
    let answer = ask(None, "hello").await.unwrap();
    assert_eq!(answer.status(), 402);
    let required: PaymentRequired =
        x402::decode_header(answer.headers()["payment-required"].to_str().unwrap()).unwrap();
    let accepts = &required.accepts[0];
    assert_eq!(accepts.network, format!("piazza:{}", support::CHAIN_ID));
    assert_eq!(accepts.amount, PRICE.to_string());
    assert_eq!(accepts.pay_to, devnet.dev.to_string());
    let balance_a = devnet.balance(&payer_a.public_key().address()).await;

    // Hostile payments: 402 with the reason, nothing paid.
    let mut other_network = payment(&payer_a, &required, PRICE, 2);
    other_network.accepted.network = "piazza:elsewhere".into();
    let mut other_payee = payment(&payer_a, &required, PRICE, 3);
    other_payee.payload.authorization.to = stranger.public_key().address().to_string();
    for (payload, reason) in [
        (
            payment(&payer_a, &required, PRICE - 1, 1),
            "invalid_exact_piazza_payload_authorization_value",
        ),
        (other_network, "invalid_network"),
        (
            other_payee,
            "invalid_exact_piazza_payload_recipient_mismatch",
        ),
    ] {
        let answer = ask(Some(x402::encode_header(&payload)), "hello")
            .await
            .unwrap();
        assert_eq!(answer.status(), 402);
        let refused: PaymentRequired = answer.json().await.unwrap();
        assert_eq!(refused.error.as_deref(), Some(reason));
    }
    assert_eq!(
        devnet.balance(&payer_a.public_key().address()).await,
        balance_a
    );
    assert_eq!(reputation(client, agent_b).await, (0, 0));

    // Paid: settled as B's paid call before B serves the embedding.
    let paid = x402::encode_header(&payment(&payer_a, &required, PRICE, 9));
    let answer = ask(Some(paid.clone()), "hello").await.unwrap();
    assert_eq!(answer.status(), 200);
    let settled: SettleResponse =
        x402::decode_header(answer.headers()["payment-response"].to_str().unwrap()).unwrap();
    assert!(settled.success, "{settled:?}");
    let served: Value = answer.json().await.unwrap();
    assert_eq!(
        served["data"][0]["embedding"].as_array().unwrap().len(),
        384
    );
    let receipt = client
        .wait_for_receipt(&settled.transaction.parse().unwrap(), WAIT)
        .await
        .unwrap();
    let call: u64 = receipt
        .events
        .iter()
        .find(|e| e.kind == "agents.call_settled")
        .map(|e| e.attributes["call"].parse().unwrap())
        .expect("the settlement recorded B's paid call");
    let record = client.agent_call(call).await.unwrap();
    assert_eq!(record["status"], "settled");
    assert_eq!(record["payer"], payer_a.public_key().address().to_string());
    assert_eq!(record["amount"], PRICE.to_string());
    let expected = x402::request_hash(
        "POST",
        "/v1/embeddings",
        &serde_json::to_vec(&body("hello")).unwrap(),
    );
    assert_eq!(record["request_hash"], expected.to_hex());
    assert_eq!(
        devnet.balance(&payer_a.public_key().address()).await,
        balance_a - PRICE
    );
    let (completed, paid_reputation) = reputation(client, agent_b).await;
    assert_eq!(completed, 1);
    assert!(paid_reputation > 0);

    // The same payment for another request: refused. Its retry is served without a second
    // settlement, and the chain refuses to settle the authorization again.
    let answer = ask(Some(paid.clone()), "another text").await.unwrap();
    assert_eq!(answer.status(), 402);
    let refused: PaymentRequired = answer.json().await.unwrap();
    assert_eq!(refused.error.as_deref(), Some("payment_already_used"));
    let retry = ask(Some(paid.clone()), "hello").await.unwrap();
    assert_eq!(retry.status(), 200);
    let again: SettleResponse =
        x402::decode_header(retry.headers()["payment-response"].to_str().unwrap()).unwrap();
    assert_eq!(again.transaction, settled.transaction);
    let replayed = x402::decode_header::<PaymentPayload>(&paid).unwrap();
    let (authorization, signature) = replayed.payload.parse().unwrap();
    let twice = Message::Agents(agents::Msg::PaidCall {
        agent: agent_b,
        request_hash: Hash::ZERO,
        authorization,
        signature,
    });
    let outcome = send(client, &stranger, twice).await;
    assert!(outcome.contains("authorization_refused"), "{outcome}");
    assert_eq!(
        devnet.balance(&payer_a.public_key().address()).await,
        balance_a - PRICE
    );
    assert_eq!(reputation(client, agent_b).await.0, 1);

    // Ratings without a settled payment of the rater's own change nothing.
    let rate = |call, rating| Message::Agents(agents::Msg::Rate { call, rating });
    for (rater, message) in [
        (&stranger, rate(call, 5)),
        (&payer_a, rate(call + 100, 5)),
        (&owner_b, rate(call, 5)),
    ] {
        assert_ne!(send(client, rater, message).await, "ok");
        assert_eq!(
            reputation(client, agent_b).await,
            (1, paid_reputation),
            "a rating without a receipt changed nothing"
        );
    }
    // A rates B citing the paid call: B's reputation rises; a second rating changes nothing.
    assert_eq!(send(client, &payer_a, rate(call, 5)).await, "ok");
    let (_, rated_reputation) = reputation(client, agent_b).await;
    assert!(rated_reputation > paid_reputation);
    assert_ne!(send(client, &payer_a, rate(call, 1)).await, "ok");
    assert_eq!(reputation(client, agent_b).await.1, rated_reputation);

    // Through MCP: `call_agent` pays B from the API key's own account, within its limit.
    let carol = piazza_keystore::Keystore::open(&devnet.keystore_dir)
        .unwrap()
        .create("carol", "")
        .unwrap()
        .address;
    let fund = Message::Bank(bank::Msg::Send {
        to: carol,
        amount: Amount::pza(10),
    });
    assert_eq!(send(client, &validator(), fund).await, "ok");
    let mcp = |key: String, max_price: &str| {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "call_agent", "arguments": {"agent": "embedder", "max_price": max_price,
                "body": body("from a tool")}}});
        http.post(format!("{}/mcp", gw_a.url()))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .json(&call)
            .send()
    };
    let carol_before = devnet.balance(&carol).await;
    // Over the key's spend limit, or above max_price: a tool error, nothing paid or charged.
    let poor = gw_a.create_key("carol", Amount::new(PRICE - 1)).unwrap();
    let key_c = gw_a.create_key("carol", Amount::pza(5)).unwrap();
    for (key, max_price, says) in [
        (poor, "3", "spend limit"),
        (key_c.clone(), "1", "more than the most"),
    ] {
        let r: Value = mcp(key, max_price).await.unwrap().json().await.unwrap();
        assert_eq!(r["result"]["isError"], true, "{r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(devnet.balance(&carol).await, carol_before);
    let r: Value = mcp(key_c, "3").await.unwrap().json().await.unwrap();
    let answer = &r["result"]["structuredContent"];
    assert_eq!(answer["status"], 200, "{r}");
    assert_eq!(answer["paid"], PRICE.to_string(), "{r}");
    assert_eq!(
        answer["answer"]["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        384
    );
    assert_eq!(devnet.balance(&carol).await, carol_before - PRICE);
    let charged = gw_a
        .keys()
        .into_iter()
        .find(|k| k.spend_limit == Amount::pza(5))
        .unwrap();
    assert_eq!(charged.spent, Amount::new(PRICE));
    assert_eq!(reputation(client, agent_b).await.0, 2);

    gw_a.shutdown().await;
    gw_b.shutdown().await;
    devnet.shutdown().await;
}
