//! JSON for the agents side of the ledger: grants of scoped session keys and x402 transfer
//! authorizations.

use piazza_ledger::bank::authorization::TransferAuthorization;
use piazza_ledger::grants;
use serde_json::{json, Value};

pub(super) fn grants_json(message: &grants::Msg) -> Value {
    match message {
        grants::Msg::Grant { grantee, scope } => json!({
            "type": "grants.grant",
            "grantee": grantee.to_hex(),
            "kinds": scope.kinds.iter().map(|k| format!("{}/{}", k.module, k.message)).collect::<Vec<_>>(),
            "amount_per_message_max": scope.amount_per_message_max.base_units().to_string(),
            "recipients": scope.recipients.as_ref().map(|list| list.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            "agents": scope.agents,
            "spend_cap": scope.spend_cap.base_units().to_string(),
            "messages_max": scope.rate.messages_max,
            "per_blocks": scope.rate.per_blocks,
            "expiry_height": scope.expiry_height,
        }),
        grants::Msg::Revoke { grantee } => {
            json!({"type": "grants.revoke", "grantee": grantee.to_hex()})
        }
    }
}

pub(super) fn authorization_json(authorization: &TransferAuthorization) -> Value {
    json!({
        "type": "bank.settle_authorization",
        "from": authorization.from.address().to_string(),
        "to": authorization.to.to_string(),
        "amount": authorization.amount.base_units().to_string(),
        "valid_after": authorization.valid_after,
        "valid_before": authorization.valid_before,
        "nonce": authorization.nonce.to_hex(),
    })
}
