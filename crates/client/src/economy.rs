//! The economy's queries and messages: share assets (holders, claimable amounts), offerings,
//! lineage graphs, datasets, pools and labelling tasks. Answers are the node's JSON (shapes in
//! `docs/economy.md`); messages are the ledger's `bank::shares` and `data` messages.

use crate::{Client, ClientError};
use piazza_ledger::bank::assets::AssetId;
use piazza_ledger::bank::shares;
use piazza_ledger::data;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use serde_json::{json, Value};

/// The economy methods' names (one table, in `piazza-api`).
pub use piazza_api::economy_method as method;

impl Client {
    /// An asset with its holders (units, locked, claimable), or null.
    pub async fn asset(&self, asset: &AssetId) -> Result<Value, ClientError> {
        self.call(method::GET_ASSET, json!([asset.to_string()]))
            .await
    }

    /// What `holder` may claim from `asset` now.
    pub async fn claimable(
        &self,
        asset: &AssetId,
        holder: &Address,
    ) -> Result<Amount, ClientError> {
        let units: String = self
            .call(
                method::GET_CLAIMABLE,
                json!([asset.to_string(), holder.to_string()]),
            )
            .await?;
        units
            .parse::<u128>()
            .map(Amount::new)
            .map_err(|e| ClientError::Decode(format!("claimable `{units}`: {e}")))
    }

    pub async fn offering(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_OFFERING, json!([id])).await
    }

    /// A model's lineage graph, parents expanded to the depth bound, or null.
    pub async fn lineage(&self, model: &str) -> Result<Value, ClientError> {
        self.call(method::GET_LINEAGE, json!([model])).await
    }

    /// A dataset, and `buyer`'s access to it when named.
    pub async fn dataset(&self, id: u64, buyer: Option<&Address>) -> Result<Value, ClientError> {
        let buyer = buyer.map(|b| b.to_string());
        self.call(method::GET_DATASET, json!([id, buyer])).await
    }

    pub async fn pool(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_POOL, json!([id])).await
    }

    pub async fn label_task(&self, id: u64) -> Result<Value, ClientError> {
        self.call(method::GET_LABEL_TASK, json!([id])).await
    }

    /// Signs and submits one share message.
    pub async fn send_shares(
        &self,
        key: &SecretKey,
        msg: shares::Msg,
    ) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Shares(msg)).await
    }

    /// Signs and submits one data message.
    pub async fn send_data(&self, key: &SecretKey, msg: data::Msg) -> Result<Hash, ClientError> {
        self.send_message(key, Message::Data(msg)).await
    }
}
