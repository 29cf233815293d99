//! Accounts: balance, nonce, stake by role, and the roles the address holds.

use super::lookup;
use crate::html::{self, escape, facts, pza};
use crate::{Html, PageError, PageResult, Source};
use piazza_api::{compute_method, method, verify_method, AccountInfo, StakeInfo};
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
        ("At height", account.proof.height.to_string()),
        ("State root", escape(&account.proof.state_root)),
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
    let block_root = super::block_root(source, account.proof.height)?;
    rows.push(("Block state root", escape(&block_root)));
    let mut body = facts(&rows);
    body.push_str("<h2>Check it yourself</h2>");
    body.push_str(&super::proof_box(
        "the account's state proof",
        "account",
        &account.proof,
        &[
            ("address", &account.address),
            ("block-root", &block_root),
            ("balance", &account.balance),
            ("nonce", &account.nonce.to_string()),
        ],
    ));
    Ok(Html(html::layout("Account", &body)))
}
