//! Accounts: balance, nonce, stake by role, and the roles the address holds.

use super::lookup;
use crate::html::{self, escape, facts, pza};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::{compute_method, method, verify_method, AccountInfo, BlockInfo, StakeInfo};
use serde_json::{json, Value};

pub fn account(source: &dyn Source, address: &str) -> PageResult {
    let address = super::address(address)?;
    let param = [json!(address)];
    let account: AccountInfo = lookup(source, method::GET_ACCOUNT, &param)?
        .ok_or_else(|| PageError::NotFound(format!("no account {address}")))?;
    let mut rows = vec![
        ("Address", escape(&account.address)),
        ("Balance", pza(&account.balance)),
        ("Nonce", account.nonce.to_string()),
        ("At height", account.height.to_string()),
        ("State root", escape(&account.state_root)),
    ];
    let stake: Option<StakeInfo> = lookup(source, method::GET_STAKE, &param)?;
    if let Some(stake) = &stake {
        for (role, amount) in &stake.bonds {
            rows.push(("Bonded", format!("{} as {}", pza(amount), escape(role))));
        }
        rows.push(("Unbonding", pza(&stake.unbonding)));
    }
    let provider = source.call(compute_method::GET_PROVIDER, &param)?;
    if !provider.is_null() {
        rows.push(("Provider", html::provider_link(address)));
    }
    let auditor = source.call(verify_method::GET_AUDITOR, &param)?;
    if let Value::Object(a) = &auditor {
        rows.push((
            "Auditor",
            format!(
                "attested {}, challenged {}, missed {}",
                a.get("attested").and_then(Value::as_u64).unwrap_or(0),
                a.get("challenged").and_then(Value::as_u64).unwrap_or(0),
                a.get("missed").and_then(Value::as_u64).unwrap_or(0)
            ),
        ));
    }
    if source
        .call(piazza_api::storage_method::GET_STORAGE_PROVIDER, &param)
        .is_ok_and(|p| !p.is_null())
    {
        rows.push((
            "Storage provider",
            html::link(
                &format!("storage/provider/{}", html::url_segment(address)),
                "storage provider",
            ),
        ));
    }
    let deals = super::storage::deals_of(source, address);
    if !deals.is_empty() {
        rows.push(("Storage deals", deals.join(", ")));
    }
    let block: Option<BlockInfo> = lookup(source, method::GET_BLOCK, &[json!(account.height)])?;
    let block_root = block.map(|b| b.state_root).unwrap_or_default();
    rows.push(("Block state root", escape(&block_root)));
    let mut body = facts(&rows);
    body.push_str(&proof_check(&account, &block_root));
    Ok(Html(html::layout("Account", &body)))
}

/// The state proof as data for `assets/proof.js`, which checks it in the browser (BLAKE3 and the
/// Jellyfish Merkle proof) against the state root of the block at the account's height, and
/// the button that runs the check again.
fn proof_check(account: &AccountInfo, block_root: &str) -> String {
    format!(
        "<h2>Check it yourself</h2><p>Your browser checks the account's state proof against the \
state root of block {height}: <strong id=\"proof-result\">not checked</strong> \
<button id=\"verify-proof\" type=\"button\">Verify again</button></p>\
<div id=\"proof\" data-address=\"{address}\" data-key=\"{key}\" data-value=\"{value}\" \
data-proof=\"{proof}\" data-root=\"{root}\" data-block-root=\"{block_root}\" \
data-balance=\"{balance}\" data-nonce=\"{nonce}\"></div>\
<script src=\"{base}/assets/proof.js\"></script>",
        height = account.height,
        address = escape(&account.address),
        key = escape(&account.key),
        value = escape(account.value.as_deref().unwrap_or("")),
        proof = escape(&account.proof),
        root = escape(&account.state_root),
        block_root = escape(block_root),
        balance = escape(&account.balance),
        nonce = account.nonce,
        base = crate::BASE_PATH,
    )
}
