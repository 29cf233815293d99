//! Agents from the client: acting through scoped session keys (a grantee builds and signs
//! transactions for the owner who granted it a scope, `grants::Msg::Grant`; an owner grants and
//! revokes keys) and reading agents and paid calls (`piazza_findAgents`, `piazza_getAgent`,
//! `piazza_getAgentCall`, shapes in `docs/agents.md`).

use crate::{Client, ClientError, DEFAULT_MAX_FEE};
use piazza_ledger::grants::{self, Scope};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_primitives::{Amount, Hash, PublicKey, SecretKey};
use serde_json::{json, Value};

/// Largest answer [`Client::post_to_agent`] reads from an agent's endpoint, in bytes.
pub const AGENT_ANSWER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What an agent's HTTP endpoint answered: its status, x402's headers (`PAYMENT-REQUIRED` on a
/// 402, `PAYMENT-RESPONSE` once paid) and its body.
#[derive(Debug, Clone)]
pub struct AgentAnswer {
    pub status: u16,
    pub payment_required: Option<String>,
    pub payment_response: Option<String>,
    pub body: Vec<u8>,
}

/// The agents methods' names (one table, in `piazza-api`).
pub use piazza_api::agents_method as method;

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

    /// The agent registered under `name`, as [`Client::agent`] shows it (`Value::Null` when
    /// no agent has that name).
    pub async fn agent_by_name(&self, name: &str) -> Result<Value, ClientError> {
        self.call(method::GET_AGENT_BY_NAME, json!([name])).await
    }

    /// One paid call (`Value::Null` when unknown).
    pub async fn agent_call(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_AGENT_CALL, json!([id])).await
    }

    /// POSTs the JSON `body` to an agent's HTTP endpoint, with `payment` as x402's
    /// `PAYMENT-SIGNATURE` when given. An answer over [`AGENT_ANSWER_BYTES_MAX`] is refused.
    pub async fn post_to_agent(
        &self,
        url: &str,
        body: &Value,
        payment: Option<&str>,
    ) -> Result<AgentAnswer, ClientError> {
        let mut request = self.http.post(url).json(body);
        if let Some(payment) = payment {
            request = request.header("payment-signature", payment);
        }
        let mut response = request.send().await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (payment_required, payment_response) =
            (header("payment-required"), header("payment-response"));
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if answer.len() + chunk.len() > AGENT_ANSWER_BYTES_MAX {
                return Err(ClientError::Decode(format!(
                    "{url} answered more than {AGENT_ANSWER_BYTES_MAX} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(AgentAnswer {
            status,
            payment_required,
            payment_response,
            body: answer,
        })
    }

    /// Revokes `grantee`'s grant: from the next transaction on it cannot act for `owner`.
    pub async fn revoke(&self, owner: &SecretKey, grantee: PublicKey) -> Result<Hash, ClientError> {
        self.send_message(owner, Message::Grants(grants::Msg::Revoke { grantee }))
            .await
    }
}
