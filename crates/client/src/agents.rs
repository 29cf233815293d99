//! Agents from the client: acting through scoped session keys (a grantee builds and signs
//! transactions for the owner who granted it a scope, `grants::Msg::Grant`; an owner grants and
//! revokes keys) and reading agents and paid calls (`piazza_findAgents`, `piazza_getAgent`,
//! `piazza_getAgentCall`, shapes in `docs/agents.md`).

use crate::{Client, ClientError, DEFAULT_MAX_FEE};
use piazza_ledger::grants::{self, Scope};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_primitives::{Amount, Hash, PublicKey, SecretKey};
use serde_json::{json, Value};

/// The agents methods' names (the node's `rpc::agents::method` mirrors them).
pub mod method {
    pub const FIND_AGENTS: &str = "piazza_findAgents";
    pub const GET_AGENT: &str = "piazza_getAgent";
    pub const GET_AGENT_CALL: &str = "piazza_getAgentCall";
}

impl Client {
    /// Builds a transaction for `owner`'s account at its next nonce and signs it with
    /// `grantee`, a key `owner` granted a scope to. The ledger refuses it unless every message
    /// fits the grant.
    pub async fn build_as_grantee(
        &self,
        owner: &PublicKey,
        grantee: &SecretKey,
        messages: Vec<Message>,
        max_fee: Amount,
    ) -> Result<SignedTransaction, ClientError> {
        let status = self.status().await?;
        let account = self.account(&owner.address()).await?;
        Ok(Transaction {
            chain_id: status.chain_id,
            sender: *owner,
            nonce: account.nonce,
            max_fee,
            messages,
        }
        .sign_as_grantee(grantee))
    }

    /// Builds, signs as `grantee` and submits one message for `owner`.
    pub async fn send_as_grantee(
        &self,
        owner: &PublicKey,
        grantee: &SecretKey,
        message: Message,
    ) -> Result<Hash, ClientError> {
        let tx = self
            .build_as_grantee(owner, grantee, vec![message], DEFAULT_MAX_FEE)
            .await?;
        self.submit(&tx).await
    }

    /// Grants `grantee` `scope` over `owner`'s account (replacing an earlier grant to it).
    pub async fn grant(
        &self,
        owner: &SecretKey,
        grantee: PublicKey,
        scope: Scope,
    ) -> Result<Hash, ClientError> {
        self.send_message(
            owner,
            Message::Grants(grants::Msg::Grant { grantee, scope }),
        )
        .await
    }

    /// The active agents with capability `tag`, best discovery score first (at most `limit`).
    pub async fn find_agents(&self, tag: &str, limit: usize) -> Result<Vec<Value>, ClientError> {
        self.call(method::FIND_AGENTS, json!([tag, limit])).await
    }

    /// One agent's record, history, reputation and score (`Value::Null` when unknown).
    pub async fn agent(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_AGENT, json!([id])).await
    }

    /// One paid call (`Value::Null` when unknown).
    pub async fn agent_call(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_AGENT_CALL, json!([id])).await
    }

    /// Revokes `grantee`'s grant: from the next transaction on it cannot act for `owner`.
    pub async fn revoke(&self, owner: &SecretKey, grantee: PublicKey) -> Result<Hash, ClientError> {
        self.send_message(owner, Message::Grants(grants::Msg::Revoke { grantee }))
            .await
    }
}
