//! x402 on a real node in this process: a paid route answers 402 with `PAYMENT-REQUIRED`,
//! settles a signed authorization before serving and answers `PAYMENT-RESPONSE`; a retry with
//! the same payment is served without a second charge; wrong amounts and networks are refused
//! with nothing paid; the facilitator's `/supported` and `/verify` speak the same JSON.

use axum::routing::get;
use axum::Router;
use piazza_gateway::x402::{
    self, Facilitator, PaidRoute, PaymentPayload, PaymentRequired, ResourceInfo, SettleResponse,
    VerifyResponse,
};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::Role;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CHAIN_ID: &str = "x402-test";
const PRICE: u128 = 5_000;

fn validator() -> SecretKey {
    SecretKey::from_seed([50; 32])
}
fn payer() -> SecretKey {
    SecretKey::from_seed([51; 32])
}
fn submitter() -> SecretKey {
    SecretKey::from_seed([52; 32])
}
fn payee() -> Address {
    Address([0x77; 20])
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn genesis() -> Genesis {
    let funded = |key: SecretKey| GenesisAccount {
        address: key.public_key().address(),
        balance: Amount::pza(10_000),
    };
    Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: Default::default(),
        accounts: vec![funded(validator()), funded(payer()), funded(submitter())],
        bonds: vec![GenesisBond {
            address: validator().public_key().address(),
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

fn payment(required: &PaymentRequired, amount: u128, nonce: u8) -> PaymentPayload {
    PaymentPayload::pay_first_offer(
        required,
        &payer(),
        CHAIN_ID,
        Amount::new(amount),
        (now_s() - 60, now_s() + 600),
        Hash([nonce; 32]),
    )
    .unwrap()
}

async fn balance(client: &piazza_client::Client, address: &Address) -> u128 {
    client
        .account(address)
        .await
        .unwrap()
        .balance
        .parse()
        .unwrap()
}

/// Asks for the paid route with `payment` in `PAYMENT-SIGNATURE`.
async fn ask(http: &reqwest::Client, url: &str, payment: &str) -> reqwest::Response {
    http.get(format!("{url}/paid"))
        .header("payment-signature", payment)
        .send()
        .await
        .unwrap()
}

/// Asks for the paid route with `payment`; checks it was served and returns its settlement.
async fn served(http: &reqwest::Client, url: &str, payment: &str) -> SettleResponse {
    let answer = ask(http, url, payment).await;
    assert_eq!(answer.status(), 200);
    let settled: SettleResponse =
        x402::decode_header(answer.headers()["payment-response"].to_str().unwrap()).unwrap();
    assert_eq!(answer.text().await.unwrap(), "the paid answer");
    settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_route_settles_once_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        piazza_node::NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_interval = Duration::from_millis(100);
    let node = piazza_node::start(config, Some(genesis()), validator())
        .await
        .unwrap();
    let node_url = format!("http://{}", node.rpc_addr);
    let client = piazza_client::Client::new(&node_url);
    let facilitator = Arc::new(Facilitator::new(
        piazza_client::Client::new(&node_url),
        CHAIN_ID.into(),
        submitter(),
    ));
    let route = Arc::new(PaidRoute {
        resource: ResourceInfo {
            url: "http://127.0.0.1/paid".into(),
            description: Some("a paid answer".into()),
            mime_type: Some("text/plain".into()),
        },
        requirements: facilitator.requirements(Amount::new(PRICE), payee()),
        facilitator: facilitator.clone(),
        agent: None,
    });
    let app = Router::new()
        .route("/paid", get(|| async { "the paid answer" }))
        .route_layer(axum::middleware::from_fn_with_state(
            route,
            x402::require_payment,
        ))
        .nest_service("/facilitator", x402::facilitator_router(facilitator));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // No payment: 402 with the requirements in the header and the body.
    let answer = http.get(format!("{url}/paid")).send().await.unwrap();
    assert_eq!(answer.status(), 402);
    let header = answer.headers()["payment-required"]
        .to_str()
        .unwrap()
        .to_string();
    let required: PaymentRequired = x402::decode_header(&header).unwrap();
    assert_eq!(answer.json::<PaymentRequired>().await.unwrap(), required);
    assert_eq!(required.x402_version, 2);
    let accepts = &required.accepts[0];
    assert_eq!(
        (accepts.scheme.as_str(), accepts.network.as_str()),
        ("exact", "piazza:x402-test")
    );
    assert_eq!(accepts.amount, PRICE.to_string());
    assert_eq!(accepts.pay_to, payee().to_string());

    // Paid: settled before serving, the settlement in PAYMENT-RESPONSE.
    let paid = x402::encode_header(&payment(&required, PRICE, 1));
    let settled = served(&http, &url, &paid).await;
    assert!(settled.success, "{settled:?}");
    assert_eq!(
        settled.payer,
        Some(payer().public_key().address().to_string())
    );
    assert_eq!(settled.transaction.len(), 64);
    assert_eq!(balance(&client, &payee()).await, PRICE);

    // A retry with the same payment (say, after a timeout) is served, not charged again.
    let again = served(&http, &url, &paid).await;
    assert_eq!(again.transaction, settled.transaction);
    assert_eq!(balance(&client, &payee()).await, PRICE);

    // A smaller amount, another network, garbage: 402 with the reason, nothing paid.
    let mut other_network = payment(&required, PRICE, 2);
    other_network.accepted.network = "piazza:elsewhere".into();
    for (payload, reason) in [
        (
            x402::encode_header(&payment(&required, PRICE - 1, 3)),
            "invalid_exact_piazza_payload_authorization_value",
        ),
        (x402::encode_header(&other_network), "invalid_network"),
        ("not base64!".to_string(), "invalid_payload"),
    ] {
        let answer = ask(&http, &url, &payload).await;
        assert_eq!(answer.status(), 402);
        let refused: PaymentRequired = answer.json().await.unwrap();
        assert_eq!(refused.error.as_deref(), Some(reason));
    }
    assert_eq!(balance(&client, &payee()).await, PRICE);

    // The facilitator's own endpoints.
    let supported: serde_json::Value = http
        .get(format!("{url}/facilitator/supported"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(supported["kinds"][0]["network"], "piazza:x402-test");
    let fresh = payment(&required, PRICE, 4);
    let mut forged = fresh.clone();
    forged.payload.signature = hex::encode([1u8; 64]);
    for (payload, valid, reason) in [
        (fresh, true, None),
        (
            forged,
            false,
            Some("invalid_exact_piazza_payload_signature".to_string()),
        ),
    ] {
        let verified: VerifyResponse = http
            .post(format!("{url}/facilitator/verify"))
            .json(&serde_json::json!({
                "paymentPayload": payload,
                "paymentRequirements": required.accepts[0],
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (verified.is_valid, verified.invalid_reason),
            (valid, reason)
        );
    }
    node.shutdown().await;
}
