//! The explorer mounted on a running node: its pages show what the JSON-RPC methods answer for
//! a real transfer, search finds it, and hostile paths answer 400/404 pages, never a 500.

mod common;

use piazza_explorer::html::pza;
use piazza_primitives::Address;
use std::time::{Duration, Instant};

async fn page(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_what_the_rpc_answers() {
    let user = common::user_key(1);
    let net = common::start(std::slice::from_ref(&user)).await;
    let to = Address([9; 20]);
    let tx = common::transfer(&user, 0, to, 1_234);
    let hash = net.client.submit(&tx).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let receipt = loop {
        if let Some(receipt) = net.client.receipt(&hash).await.unwrap() {
            break receipt;
        }
        assert!(Instant::now() < deadline, "not included within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let base = format!("{}/explorer", net.url);
    let hash = hash.to_hex();

    let (code, status) = page(&base).await;
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("piazza-test"));

    let (code, tx_page) = page(&format!("{base}/tx/{hash}")).await;
    assert_eq!(code, 200, "{tx_page}");
    assert!(tx_page.contains(&user.public_key().address().to_string()));
    assert!(tx_page.contains(&pza(&receipt.fee_paid)));
    assert!(tx_page.contains("1234"), "the decoded message's amount");

    let (code, block) = page(&format!("{base}/block/{}", receipt.height)).await;
    assert_eq!(code, 200);
    assert!(block.contains(&format!("/explorer/tx/{hash}")));

    let account = net.client.account(&to).await.unwrap();
    let (code, account_page) = page(&format!("{base}/account/{to}")).await;
    assert_eq!(code, 200, "{account_page}");
    assert!(account_page.contains(&pza(&account.balance)));

    // Search by the transaction's hash and by the block's height lands on their pages.
    let found = reqwest::get(format!("{base}/search?q={hash}"))
        .await
        .unwrap();
    assert_eq!(found.url().path(), format!("/explorer/tx/{hash}"));
    let found = reqwest::get(format!("{base}/search?q={}", receipt.height))
        .await
        .unwrap();
    assert_eq!(found.status().as_u16(), 200);
    assert!(found.url().path().ends_with(&receipt.height.to_string()));

    for (path, expected) in [
        ("/job/99".to_string(), 404),
        ("/tx/zz".to_string(), 400),
        (format!("/tx/{}", "ab".repeat(32)), 404),
        ("/account/pz1notanaddress".to_string(), 400),
        (format!("/search?q={}", "x".repeat(10_000)), 400),
        ("/nowhere".to_string(), 404),
    ] {
        let (code, body) = page(&format!("{base}{path}")).await;
        assert_eq!(code, expected, "{path}: {body}");
        assert!(body.contains("class=\"error\""), "{path}");
    }
    net.node.shutdown().await;
}
