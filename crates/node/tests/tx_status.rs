//! What a hash acknowledgement promises, asked over JSON-RPC: an acknowledged transaction is
//! pending until it is included; one the node never saw is unknown.

mod common;

use piazza_api::TxStatusInfo;
use piazza_primitives::{Address, Hash};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_transaction_is_pending_then_included() {
    let user = common::user_key(1);
    let net = common::start(std::slice::from_ref(&user)).await;
    let tx = common::transfer(&user, 0, Address([9; 20]), 1);
    let hash = net.client.submit(&tx).await.unwrap();
    let first = net.client.transaction_status(&hash).await.unwrap();
    assert!(
        matches!(first, TxStatusInfo::Pending | TxStatusInfo::Included { .. }),
        "{first:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let height = loop {
        match net.client.transaction_status(&hash).await.unwrap() {
            TxStatusInfo::Included { height } => break height,
            TxStatusInfo::Pending => {
                assert!(Instant::now() < deadline, "not included within 20 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("an acknowledged transfer became {other:?}"),
        }
    };
    let receipt = net.client.receipt(&hash).await.unwrap().unwrap();
    assert_eq!(receipt.height, height);
    assert_eq!(
        net.client.transaction_status(&Hash([7; 32])).await.unwrap(),
        TxStatusInfo::Unknown
    );
    net.node.shutdown().await;
}
