//! The explorer in headless Chromium (Debian's `chromium` and `chromium-driver`), driven over
//! WebDriver, on a devnet node in process with activity (a transfer, a provider, a settled job
//! and a disputed one whose silent provider was slashed): each main page loads and shows what
//! the JSON-RPC methods answer, a new block arrives over `/ws` without a reload, search finds
//! by each key, the account and job pages check their state proofs in the browser (and refuse
//! tampered ones; a job's output is checked against its hash too), and screenshots of the main pages are saved under `target/`.

mod devnet;
mod webdriver;

use piazza_explorer::html::pza;
use piazza_explorer::BASE_PATH;
use serde_json::{json, Value};
use std::time::Duration;
use webdriver::Browser;

/// Longest wait for something the browser shows after a block or two.
const LIVE_WAIT_MS: u64 = 10_000;

/// Changes made to the account page's proof data, each of which the check must refuse:
/// a digit of the leaf's value hash (bytes 33–64 of the proof), the proof's last digit, the
/// balance shown, the state root and the value.
const TAMPERINGS: [(&str, &str); 5] = [
    ("proof", "d.proof = flip(d.proof, 80)"),
    ("proof", "d.proof = flip(d.proof, d.proof.length - 1)"),
    (
        "balance",
        "d.balance = String(BigInt(d.balance) + BigInt(1))",
    ),
    ("root", "d.root = flip(d.root, 0)"),
    ("value", "d.value = flip(d.value, 2)"),
];

/// Changes made to a job page's proof data, each of which the check must refuse: a digit of
/// the proof, the record (a byte of its id, a byte near its end), the output shown, the output
/// hash shown, the state root, and the record claimed absent.
const JOB_TAMPERINGS: [(&str, &str); 7] = [
    ("proof", "d.proof = flip(d.proof, 80)"),
    ("value", "d.value = flip(d.value, 0)"),
    ("value", "d.value = flip(d.value, d.value.length - 3)"),
    ("output", "d.output = flip(d.output, 0)"),
    ("outputHash", "d.outputHash = flip(d.outputHash, 5)"),
    ("root", "d.root = flip(d.root, 0)"),
    ("value", "d.value = ''"),
];

/// Input lengths around BLAKE3's 64-byte blocks and 1 KiB chunks.
const BLAKE3_LENGTHS: [usize; 12] = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 2049, 3073, 8193];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_chromium_show_the_devnet() {
    let net = devnet::start().await;
    let browser = Browser::start().await;
    // The checks run in their own task so the browser is closed even when one fails.
    let checks = tokio::spawn(check_pages(net.url.clone(), net_facts(&net).await, browser));
    let outcome = checks.await;
    net.node.shutdown().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// What the scenario made, as the test knows it.
struct Facts {
    transfer_hash: String,
    transfer_height: u64,
    provider: String,
    settled_job: u64,
    failed_job: u64,
}

async fn net_facts(net: &devnet::Devnet) -> Facts {
    Facts {
        transfer_hash: net.transfer.0.to_hex(),
        transfer_height: net.transfer.1,
        provider: net.provider.public_key().address().to_string(),
        settled_job: net.settled_job,
        failed_job: net.failed_job,
    }
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    piazza_client::Client::new(url)
        .call(method, params)
        .await
        .unwrap()
}

async fn check_pages(url: String, facts: Facts, browser: Browser) {
    let shots = webdriver::screenshot_dir();
    let base = format!("{url}{BASE_PATH}");
    let shoot = async |browser: &Browser, name: &str| {
        let path = shots.join(format!("{name}.png"));
        browser.screenshot(&path).await;
        println!("screenshot: {}", path.display());
    };

    // Status: the chain id and a height no older than the RPC's at load; then a block pushed
    // over the WebSocket raises the height and adds a row, without a reload.
    let status = rpc(&url, "piazza_status", json!([])).await;
    browser.goto(&format!("{base}/")).await;
    let text = browser.page_text().await;
    assert!(
        text.contains(status["chain_id"].as_str().unwrap()),
        "{text}"
    );
    let shown: u64 = browser.text("#height").await.unwrap().parse().unwrap();
    assert!(shown >= status["height"].as_u64().unwrap());
    browser
        .wait_text("#live", Duration::from_millis(LIVE_WAIT_MS), |t| {
            t == "live"
        })
        .await;
    browser
        .wait_text("#height", Duration::from_millis(LIVE_WAIT_MS), |t| {
            t.parse::<u64>().is_ok_and(|h| h > shown)
        })
        .await;
    browser
        .wait_text(
            "#blocks tr.new-block",
            Duration::from_millis(LIVE_WAIT_MS),
            |t| t.starts_with('#'),
        )
        .await;
    shoot(&browser, "status").await;

    // The transfer's block and transaction: the fee paid and the sender as the RPC has them.
    let receipt = rpc(&url, "piazza_getReceipt", json!([facts.transfer_hash])).await;
    browser
        .goto(&format!("{base}/block/{}", facts.transfer_height))
        .await;
    let text = browser.page_text().await;
    assert!(text.contains(&format!("Block {}", facts.transfer_height)));
    let tx_cells = browser.text("#txs").await.unwrap();
    assert!(tx_cells.contains(&facts.transfer_hash[..8]), "{tx_cells}");
    shoot(&browser, "block").await;
    browser
        .goto(&format!("{base}/tx/{}", facts.transfer_hash))
        .await;
    let text = browser.page_text().await;
    assert!(
        text.contains(&pza(receipt["fee_paid"].as_str().unwrap())),
        "{text}"
    );
    assert!(
        text.contains(&devnet::TRANSFER_AMOUNT.to_string()),
        "{text}"
    );
    shoot(&browser, "tx").await;

    // The recipient's account: its balance as the RPC proves it.
    let recipient = devnet::RECIPIENT.to_string();
    let account = rpc(&url, "piazza_getAccount", json!([recipient])).await;
    browser.goto(&format!("{base}/account/{recipient}")).await;
    let text = browser.page_text().await;
    assert!(
        text.contains(&pza(account["balance"].as_str().unwrap())),
        "{text}"
    );
    // Its state proof is checked by the page's script: verified as served, failed once a byte
    // of the proof, the shown balance or the root is changed.
    browser
        .wait_text("#proof-result", Duration::from_millis(LIVE_WAIT_MS), |t| {
            t != "not checked"
        })
        .await;
    assert_eq!(browser.text("#proof-result").await.unwrap(), "verified");
    shoot(&browser, "account").await;
    refuses_tampering(&browser, &TAMPERINGS).await;

    // The script's BLAKE3 agrees with the Rust crate across block and chunk boundaries.
    for length in BLAKE3_LENGTHS {
        let input: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
        let in_browser = browser
            .script(
                "return window.piazzaProof.blake3Hex(arguments[0]);",
                vec![json!(hex::encode(&input))],
            )
            .await;
        assert_eq!(
            in_browser.as_str().unwrap(),
            blake3::hash(&input).to_hex().as_str(),
            "{length} bytes"
        );
    }

    // The provider: its stake and its one fraud, as the RPC has them.
    let provider = rpc(&url, "piazza_getProvider", json!([facts.provider])).await;
    assert_eq!(
        provider["frauds"], 1,
        "the scenario slashed the provider once"
    );
    browser
        .goto(&format!("{base}/provider/{}", facts.provider))
        .await;
    assert_eq!(browser.text("#frauds").await.unwrap(), "1");
    let text = browser.page_text().await;
    assert!(
        text.contains(&pza(provider["stake"].as_str().unwrap())),
        "{text}"
    );
    shoot(&browser, "provider").await;

    // The jobs: their status, output hash and trace root; the disputed one's outcome.
    for job in [facts.settled_job, facts.failed_job] {
        let info = rpc(&url, "piazza_getJob", json!([job])).await;
        browser.goto(&format!("{base}/job/{job}")).await;
        assert_eq!(
            browser.text("#job-status").await.unwrap(),
            info["status"].as_str().unwrap(),
            "{info}"
        );
        let text = browser.page_text().await;
        let result = &info["result"];
        assert!(
            text.contains(result["trace_root"].as_str().unwrap()),
            "{text}"
        );
        assert!(text.contains(result["output_hash"].as_str().unwrap()));
        // The Rust client checks the same record's proof against a signed block.
        let (proven, _) = piazza_client::Client::new(&url)
            .verified_job(job)
            .await
            .unwrap();
        let proven = proven.expect("the job's record is proven present");
        assert_eq!(
            proven.result.unwrap().output_hash.to_hex(),
            result["output_hash"].as_str().unwrap()
        );
        // The job record's state proof and the output against its hash, checked in the page.
        browser
            .wait_text("#proof-result", Duration::from_millis(LIVE_WAIT_MS), |t| {
                t != "not checked"
            })
            .await;
        assert_eq!(browser.text("#proof-result").await.unwrap(), "verified");
        // The re-check command names this node, which `piazza job verify` reaches as is.
        assert_eq!(
            browser.text("#recheck").await.unwrap(),
            format!("piazza job verify {job} --rpc {url}")
        );
        refuses_tampering(&browser, &JOB_TAMPERINGS).await;
        shoot(&browser, &format!("job-{job}")).await;
    }
    browser
        .goto(&format!("{base}/dispute/{}", facts.failed_job))
        .await;
    let outcome = browser.text("#outcome").await.unwrap();
    assert!(outcome.contains("proven wrong"), "{outcome}");
    shoot(&browser, "dispute").await;

    browser.goto(&format!("{base}/models")).await;
    assert!(browser
        .text("#models")
        .await
        .unwrap()
        .contains(devnet::MODEL));
    browser
        .goto(&format!("{base}/model/{}", devnet::MODEL))
        .await;
    let text = browser.page_text().await;
    assert!(text.contains(&facts.provider[..8]), "{text}");
    shoot(&browser, "model").await;

    // Search from the header's box by each key lands where the RPC says it should.
    let block = rpc(&url, "piazza_getBlock", json!([facts.transfer_height])).await;
    let height = facts.transfer_height;
    let height_is_a_job = !rpc(&url, "piazza_getJob", json!([height])).await.is_null();
    let height_lands = if height_is_a_job {
        // A number that is both a height and a job id lists both.
        format!("{BASE_PATH}/search?q={height}")
    } else {
        format!("{BASE_PATH}/block/{height}")
    };
    let searches = [
        (height.to_string(), height_lands),
        (
            block["hash"].as_str().unwrap().to_string(),
            format!("{BASE_PATH}/block/{height}"),
        ),
        (
            facts.transfer_hash.clone(),
            format!("{BASE_PATH}/tx/{}", facts.transfer_hash),
        ),
        (
            recipient.clone(),
            format!("{BASE_PATH}/account/{recipient}"),
        ),
        (
            facts.failed_job.to_string(),
            if rpc(&url, "piazza_getBlock", json!([facts.failed_job]))
                .await
                .is_null()
            {
                format!("{BASE_PATH}/job/{}", facts.failed_job)
            } else {
                format!("{BASE_PATH}/search?q={}", facts.failed_job)
            },
        ),
        (
            devnet::MODEL.to_string(),
            format!("{BASE_PATH}/model/{}", devnet::MODEL),
        ),
    ];
    for (query, lands) in searches {
        browser.goto(&format!("{base}/")).await;
        browser.type_and_enter("header input[name=q]", &query).await;
        let expected = format!("{url}{lands}");
        let started = std::time::Instant::now();
        while browser.url().await != expected {
            assert!(
                started.elapsed() < Duration::from_millis(LIVE_WAIT_MS),
                "search `{query}` landed on {} instead of {expected}",
                browser.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!browser.page_text().await.contains("Not found"), "{query}");
    }
    browser.quit().await;
}

/// Applies each tampering to the page's proof data, runs the check and expects it to fail; then
/// the untouched data verifies again.
async fn refuses_tampering(browser: &Browser, tamperings: &[(&str, &str)]) {
    for (field, tamper) in tamperings {
        let shown = browser
            .script(
                &format!(
                    "var d = document.getElementById('proof').dataset; \
var flip = function (s, i) {{ return s.slice(0, i) + (s[i] === '0' ? '1' : '0') + s.slice(i + 1); }}; \
var saved = d.{field}; {tamper}; document.getElementById('verify-proof').click(); \
var shown = document.getElementById('proof-result').textContent; d.{field} = saved; return shown;"
                ),
                vec![],
            )
            .await;
        let shown = shown.as_str().unwrap_or_default();
        assert!(
            shown.starts_with("failed"),
            "{field} tampered ({tamper}): {shown}"
        );
    }
    browser
        .script("document.getElementById('verify-proof').click();", vec![])
        .await;
    assert_eq!(browser.text("#proof-result").await.unwrap(), "verified");
}
