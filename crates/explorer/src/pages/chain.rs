//! Chain status, blocks and transactions.

use super::{fetch, integer, is_hash, lookup};
use crate::html::{self, account_link, block_link, escape, facts, json_block, pza, table, tx_link};
use crate::{Html, PageError, PageResult, Source, RECENT_BLOCKS_MAX};
use piazza_api::{method, BlockInfo, EventInfo, ReceiptInfo, Status, TxInfo};
use serde_json::{json, Value};

/// Transactions listed on a block page (each costs a receipt read).
pub const TXS_SHOWN_MAX: usize = 100;

pub fn status(source: &dyn Source) -> PageResult {
    let status: Status = fetch(source, method::STATUS, &[])?;
    let first = status.height.saturating_sub(RECENT_BLOCKS_MAX - 1).max(1);
    let mut blocks = Vec::new();
    for height in (first..=status.height).rev() {
        if let Some(block) = lookup::<BlockInfo>(source, method::GET_BLOCK, &[json!(height)])? {
            blocks.push(block);
        }
    }
    let rate = block_rate(&blocks);
    let validators = source
        .call(method::GET_VALIDATORS, &[])
        .unwrap_or(Value::Null);
    let mut rows = vec![
        ("Chain", escape(&status.chain_id)),
        (
            "Height",
            format!("<span id=\"height\">{}</span>", status.height),
        ),
        ("Head block", escape(&status.block_hash)),
        ("State root", escape(&status.state_root)),
        ("Block time (ms)", status.time_ms.to_string()),
        ("Blocks per minute", rate),
        ("Mempool", status.mempool_size.to_string()),
        ("Proposer", account_link(&status.validator)),
    ];
    if let Some(fees) = &status.fees {
        rows.push(("Unit price", pza(&fees.unit_price)));
    }
    let mut body = facts(&rows);
    if let Some(set) = validators.get("validators").and_then(Value::as_array) {
        let rows: Vec<Vec<String>> = set
            .iter()
            .map(|v| {
                vec![
                    account_link(v["operator"].as_str().unwrap_or("")),
                    v["voting_power"].as_u64().unwrap_or(0).to_string(),
                ]
            })
            .collect();
        body.push_str("<h2>Validators</h2>");
        body.push_str(&table("validators", &["Operator", "Voting power"], &rows));
    }
    let rows: Vec<Vec<String>> = blocks.iter().map(block_row).collect();
    body.push_str("<h2>Recent blocks <small class=\"live\" id=\"live\"></small></h2>");
    body.push_str(&table(
        "blocks",
        &["Height", "Hash", "Transactions", "Proposer"],
        &rows,
    ));
    body.push_str("<h2>Live events</h2><ul id=\"events\"></ul>");
    Ok(Html(html::layout("Chain status", &body)))
}

fn block_row(block: &BlockInfo) -> Vec<String> {
    vec![
        block_link(block.height),
        escape(&html::short(&block.hash)),
        block.tx_hashes.len().to_string(),
        account_link(&block.proposer),
    ]
}

/// Blocks per minute over the listed blocks (newest first), from their header times.
fn block_rate(blocks: &[BlockInfo]) -> String {
    let (Some(newest), Some(oldest)) = (blocks.first(), blocks.last()) else {
        return "–".into();
    };
    let span_ms = newest.time_ms.saturating_sub(oldest.time_ms);
    let intervals = newest.height.saturating_sub(oldest.height);
    if span_ms == 0 || intervals == 0 {
        return "–".into();
    }
    let per_minute_milli = intervals.saturating_mul(60_000_000) / span_ms;
    format!("{}.{:03}", per_minute_milli / 1000, per_minute_milli % 1000)
}

pub fn block(source: &dyn Source, id: &str) -> PageResult {
    let param = if is_hash(id) {
        json!(id)
    } else {
        json!(integer(id, "block height or hash")?)
    };
    let block: BlockInfo = lookup(source, method::GET_BLOCK, &[param])?
        .ok_or_else(|| PageError::NotFound(format!("no block {}", html::short(id))))?;
    let mut body = facts(&[
        ("Height", block.height.to_string()),
        ("Hash", escape(&block.hash)),
        (
            "Parent",
            if block.height > 1 {
                block_link(block.height - 1)
            } else {
                escape(&block.parent_hash)
            },
        ),
        ("Time (ms)", block.time_ms.to_string()),
        ("Proposer", account_link(&block.proposer)),
        ("Transactions root", escape(&block.tx_root)),
        ("State root", escape(&block.state_root)),
        ("Randomness", escape(&block.randomness)),
    ]);
    let mut rows = Vec::new();
    for hash in block.tx_hashes.iter().take(TXS_SHOWN_MAX) {
        let receipt: Option<ReceiptInfo> = lookup(source, method::GET_RECEIPT, &[json!(hash)])?;
        let (status, fee) = receipt.as_ref().map_or(("–".into(), "–".into()), |r| {
            (escape(&r.status), pza(&r.fee_paid))
        });
        rows.push(vec![tx_link(hash), status, fee]);
    }
    body.push_str(&format!(
        "<h2>Transactions</h2><p id=\"tx-count\">{} transactions{}</p>",
        block.tx_hashes.len(),
        if block.tx_hashes.len() > TXS_SHOWN_MAX {
            format!(", the first {TXS_SHOWN_MAX} shown")
        } else {
            String::new()
        }
    ));
    body.push_str(&table("txs", &["Hash", "Status", "Fee paid"], &rows));
    Ok(Html(html::layout(
        &format!("Block {}", block.height),
        &body,
    )))
}

pub fn tx(source: &dyn Source, hash: &str) -> PageResult {
    if !is_hash(hash) {
        return Err(PageError::BadRequest(format!(
            "`{}` is not a transaction hash (64 hex digits)",
            html::short(hash)
        )));
    }
    let tx: TxInfo = lookup(source, method::GET_TRANSACTION, &[json!(hash)])?
        .ok_or_else(|| PageError::NotFound(format!("no transaction {}", html::short(hash))))?;
    let receipt: Option<ReceiptInfo> = lookup(source, method::GET_RECEIPT, &[json!(hash)])?;
    let mut rows = vec![
        ("Hash", escape(&tx.hash)),
        ("Block", block_link(tx.height)),
        ("Index", tx.index.to_string()),
        ("Sender", account_link(&tx.sender)),
        ("Nonce", tx.nonce.to_string()),
        ("Max fee", pza(&tx.max_fee)),
    ];
    if let Some(r) = &receipt {
        rows.push(("Status", escape(&r.status)));
        rows.push(("Fee paid", pza(&r.fee_paid)));
        if let Some(e) = &r.error {
            rows.push((
                "Error",
                format!("{} ({}): {}", escape(&e.name), e.code, escape(&e.message)),
            ));
        }
    }
    let mut body = facts(&rows);
    body.push_str("<h2>Messages</h2>");
    for message in &tx.messages {
        body.push_str(&json_block(message));
    }
    if let Some(r) = &receipt {
        body.push_str("<h2>Events</h2>");
        body.push_str(&events_table(&r.events));
    }
    Ok(Html(html::layout("Transaction", &body)))
}

/// Events with their attributes; job ids and addresses become links.
pub(crate) fn events_table(events: &[EventInfo]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let attributes: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| format!("{}={}", escape(k), attribute(k, v)))
                .collect();
            vec![escape(&e.kind), attributes.join(" ")]
        })
        .collect();
    table("events", &["Kind", "Attributes"], &rows)
}

fn attribute(key: &str, value: &str) -> String {
    match key {
        "job" => value.parse().map_or_else(|_| escape(value), html::job_link),
        _ if super::is_address(value) => account_link(value),
        _ => escape(value),
    }
}
