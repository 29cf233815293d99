//! A chat completion on a real in-process devnet (a validator with 100 ms blocks and a provider
//! serving SmolLM2): the job's input is the canonical chat encoding, `usage.prompt_tokens` is
//! what the chain records the provider read (the tokenized prompt's length), and the same
//! conversation sent as a plain-text chat job (as `piazza job submit --chat` clients send it)
//! settles with the same trace root.

mod support;

use piazza_gateway::{start, GatewayConfig, GatewayHandle};
use piazza_ledger::compute::{self, JobParams};
use piazza_primitives::chat::ChatInput;
use piazza_primitives::{Amount, SecretKey};
use serde_json::{json, Value};
use std::time::Duration;
use support::{devnet, Devnet, DevnetOptions, DEV_KEY};

/// How long a job may take to settle.
const JOB_WAIT: Duration = Duration::from_secs(120);
/// The devnet validator's key (funded at genesis; see `support`).
const VALIDATOR_SEED: [u8; 32] = [231; 32];

async fn gateway(net: &Devnet) -> GatewayHandle {
    let config = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &net.url,
        net.dir.path().join("gateway"),
        net.keystore_dir.clone(),
    );
    start(config).await.expect("the gateway starts")
}

/// The prompt ids of `question` as one user message, tokenized here with the model file.
fn prompt_ids(question: &str) -> Vec<u32> {
    let generator = piazza_llm::Generator::load(piazza_llm::default_model_path())
        .expect("SmolLM2 under the models directory (scripts/fetch-models.sh)");
    let text = generator
        .apply_chat_template(&[piazza_llm::Message::new("user", question)])
        .unwrap();
    generator.tokenize(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_usage_counts_the_prompt_and_one_conversation_has_one_trace_root() {
    let net = devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: true,
        provider_concurrency: 2,
    })
    .await;
    assert!(
        net.generation,
        "SmolLM2 under the models directory (scripts/fetch-models.sh)"
    );
    let model = piazza_provider::models::SMOLLM2;
    let gw = gateway(&net).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    let question = "What is the capital of France?";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 4,
            "temperature": 0,
        }))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let job_id = body["piazza"][0]["job"].as_u64().expect("a job receipt");
    let expected = prompt_ids(question).len() as u64;
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    eprintln!("usage {} for job {job_id}", body["usage"]);
    assert!(prompt_tokens > 0, "{body}");
    assert_eq!(prompt_tokens, expected, "{body}");
    assert_eq!(
        body["usage"]["total_tokens"].as_u64(),
        Some(prompt_tokens + body["usage"]["completion_tokens"].as_u64().unwrap())
    );

    let gateway_job = net.client.job(job_id).await.unwrap().expect("on chain");
    assert_eq!(
        hex::decode(&gateway_job.input).unwrap(),
        ChatInput::user(question).unwrap().encode(),
        "the gateway sends the canonical chat encoding"
    );
    let gateway_result = gateway_job.result.expect("a result");
    assert_eq!(gateway_result.input_units, expected);

    // The same conversation as a plain-text chat job with the parameters the gateway set
    // (checked below on chain).
    let params = JobParams {
        max_tokens: 4,
        temperature_milli: 0,
        top_p_milli: 1000,
        chat: true,
        ..JobParams::default()
    };
    let submit = compute::Msg::SubmitJob {
        model: model.into(),
        input: question.as_bytes().to_vec(),
        params,
        max_units: gateway_job.max_units,
        max_price: Amount::pza(1),
    };
    let client_key = SecretKey::from_seed(VALIDATOR_SEED);
    let (plain_id, _) = net
        .client
        .submit_job(&client_key, submit, JOB_WAIT)
        .await
        .expect("the plain-text chat job is accepted");
    let plain_job = net.client.wait_for_job(plain_id, JOB_WAIT).await.unwrap();
    assert_eq!(plain_job.params, gateway_job.params);
    let plain_result = plain_job.result.expect("a result");
    assert_eq!(plain_result.trace_root, gateway_result.trace_root);
    eprintln!("one trace root for both jobs: {}", plain_result.trace_root);
    assert_eq!(plain_result.output, gateway_result.output);
    assert_eq!(plain_result.input_units, expected);
    gw.shutdown().await;
    net.shutdown().await;
}
