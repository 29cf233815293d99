//! The economy over JSON-RPC: share assets with their holders and claimable amounts
//! (`piazza_getAsset`, `piazza_getClaimable`), offerings, model lineage graphs
//! (`piazza_getLineage`), datasets and access, pools, labelling tasks; and the JSON of the
//! share and data messages. Shapes in `docs/economy.md`.

use super::framing::{internal, rpc_error};
use super::methods::{address_param, param};
use crate::app::App;
use piazza_api::{error_code, RpcError};
use piazza_ledger::bank::assets::{self, AssetId};
use piazza_ledger::bank::curve::Curve;
use piazza_ledger::bank::shares;
use piazza_ledger::data;
use piazza_ledger::models::{self, lineage, Source};
use piazza_ledger::state::StateDelta;
use piazza_primitives::Amount;
use serde_json::{json, Value};

/// The economy methods' names (one table, in `piazza-api`).
pub use piazza_api::economy_method as method;

/// Every economy method, for the dispatcher.
pub(super) const METHODS: [&str; 7] = [
    method::GET_ASSET,
    method::GET_CLAIMABLE,
    method::GET_OFFERING,
    method::GET_LINEAGE,
    method::GET_DATASET,
    method::GET_POOL,
    method::GET_LABEL_TASK,
];

fn amount(value: Amount) -> String {
    value.base_units().to_string()
}

fn invalid(message: String) -> RpcError {
    rpc_error(error_code::INVALID_PARAMS, message, None)
}

fn id_param(params: &[Value], index: usize, what: &str) -> Result<u64, RpcError> {
    param(params, index, what)?
        .as_u64()
        .ok_or_else(|| invalid(format!("{what} must be a non-negative integer")))
}

fn asset_param(params: &[Value]) -> Result<AssetId, RpcError> {
    param(params, 0, "asset")?
        .as_str()
        .ok_or_else(|| invalid("the asset must be a string like model:NAME".into()))?
        .parse()
        .map_err(invalid)
}

fn curve_json(curve: &Curve) -> Value {
    match *curve {
        Curve::Fixed { price } => json!({"kind": "fixed", "price": price.to_string()}),
        Curve::Linear {
            base,
            slope,
            reserve_bps,
        } => json!({"kind": "linear", "base": base.to_string(), "slope": slope.to_string(),
            "reserve_bps": reserve_bps}),
    }
}

fn source_json(source: &Source) -> Value {
    match source {
        Source::Model(name) => json!({"model": name}),
        Source::Dataset(id) => json!({"dataset": id}),
    }
}

pub(super) fn shares_json(message: &shares::Msg) -> Value {
    match message {
        shares::Msg::Issue { asset, supply } => json!({"type": "shares.issue",
            "asset": asset.to_string(), "supply": supply.to_string()}),
        shares::Msg::Transfer { asset, to, units } => json!({"type": "shares.transfer",
            "asset": asset.to_string(), "to": to.to_string(), "units": units.to_string()}),
        shares::Msg::Claim { asset } => json!({"type": "shares.claim", "asset": asset.to_string()}),
        shares::Msg::Offer {
            asset,
            units,
            curve,
        } => json!({"type": "shares.offer", "asset": asset.to_string(),
            "units": units.to_string(), "curve": curve_json(curve)}),
        shares::Msg::Buy {
            offering,
            units,
            max_cost,
        } => json!({"type": "shares.buy", "offering": offering, "units": units.to_string(),
            "max_cost": amount(*max_cost)}),
        shares::Msg::Sell {
            offering,
            units,
            min_refund,
        } => json!({"type": "shares.sell", "offering": offering, "units": units.to_string(),
            "min_refund": amount(*min_refund)}),
        shares::Msg::Close { offering } => json!({"type": "shares.close", "offering": offering}),
    }
}

pub(super) fn data_json(message: &data::Msg) -> Value {
    match message {
        data::Msg::RegisterDataset {
            blob,
            schema,
            license,
            price,
            encrypted,
        } => json!({"type": "data.register_dataset", "blob": blob.to_hex(), "schema": schema,
            "license": license, "price": amount(*price), "encrypted": encrypted}),
        data::Msg::BuyAccess { dataset } => json!({"type": "data.buy_access", "dataset": dataset}),
        data::Msg::SealKey {
            dataset,
            buyer,
            sealed_key,
        } => json!({"type": "data.seal_key", "dataset": dataset, "buyer": buyer.to_string(),
            "sealed_key_bytes": sealed_key.len()}),
        data::Msg::CreatePool {
            model,
            dims,
            min_distance_sq,
            price,
            ..
        } => json!({"type": "data.create_pool", "model": model, "dims": dims,
            "min_distance_sq": min_distance_sq, "price": amount(*price)}),
        data::Msg::Contribute {
            pool,
            item,
            validation_job,
        } => json!({"type": "data.contribute", "pool": pool, "item": item.to_hex(),
            "validation_job": validation_job}),
        data::Msg::CreateLabelTask {
            items,
            k,
            reward_per_label,
            stake,
            ..
        } => json!({"type": "data.create_label_task", "items": items.len(), "k": k,
            "reward_per_label": amount(*reward_per_label), "stake": amount(*stake)}),
        data::Msg::JoinLabelTask { task } => json!({"type": "data.join_label_task", "task": task}),
        data::Msg::AssignLabels { task } => json!({"type": "data.assign_labels", "task": task}),
        data::Msg::SubmitLabel { task, item, value } => json!({"type": "data.submit_label",
            "task": task, "item": item, "value": value}),
        data::Msg::SettleLabelTask { task } => {
            json!({"type": "data.settle_label_task", "task": task})
        }
    }
}

fn asset_json(view: &StateDelta<'_>, id: &AssetId) -> Value {
    let Some(asset) = assets::asset(view, id) else {
        return Value::Null;
    };
    let holders: Vec<Value> = assets::holders(view, id)
        .iter()
        .map(|holder| {
            let h = assets::holding(view, id, holder);
            json!({"address": holder.to_string(), "units": h.units.to_string(),
                "locked": h.locked.to_string(),
                "claimable": amount(assets::claimable(view, id, holder))})
        })
        .collect();
    json!({
        "asset": id.to_string(),
        "owner": asset.owner.to_string(),
        "supply": asset.supply.to_string(),
        "revenue": amount(asset.revenue),
        "carry_scaled": asset.carry_scaled.to_string(),
        "forward": asset.forward.as_ref().map(|f| f.to_string()),
        "holders": holders,
    })
}

/// A model's lineage as a tree, each model parent expanded to the depth bound.
fn lineage_json(view: &StateDelta<'_>, name: &str, level: u8) -> Value {
    let Some(record) = models::record(view, name) else {
        return Value::Null;
    };
    let parents: Vec<Value> = record
        .lineage
        .parents
        .iter()
        .map(|p| {
            let below = match &p.source {
                Source::Model(parent) if level < lineage::MAX_DEPTH => {
                    lineage_json(view, parent, level + 1)
                }
                _ => Value::Null,
            };
            json!({"source": source_json(&p.source), "weight_bps": p.weight_bps,
                "lineage": below})
        })
        .collect();
    json!({"model": name, "owner": record.owner.to_string(),
        "royalty_bps": record.lineage.royalty_bps, "parents": parents})
}

fn dataset_json(
    view: &StateDelta<'_>,
    id: u64,
    buyer: Option<piazza_primitives::Address>,
) -> Value {
    let Some(d) = data::dataset(view, id) else {
        return Value::Null;
    };
    let access = buyer.and_then(|b| data::access(view, id, &b)).map(|a| {
        json!({"paid": amount(a.paid), "height": a.height,
            "sealed_key": a.sealed_key.map(hex::encode)})
    });
    json!({"id": id, "owner": d.owner.to_string(), "blob": d.blob.to_hex(), "schema": d.schema,
        "license": d.license, "price": amount(d.price), "encrypted": d.encrypted, "pool": d.pool,
        "access": access})
}

fn pool_json(view: &StateDelta<'_>, id: u64) -> Value {
    let Some(pool) = data::pool(view, id) else {
        return Value::Null;
    };
    let validation = match &pool.validation {
        data::Validation::Embedding {
            model,
            dims,
            min_distance_sq,
        } => json!({"embedding": {"model": model, "dims": dims,
            "min_distance_sq": min_distance_sq}}),
        data::Validation::Labels { task } => json!({"labels": {"task": task}}),
    };
    let items: Vec<Value> = (0..pool.items)
        .filter_map(|i| data::item(view, id, i))
        .map(|item| {
            json!({"contributor": item.contributor.to_string(),
            "hash": item.hash.to_hex(), "job": item.job})
        })
        .collect();
    json!({"id": id, "owner": pool.owner.to_string(), "dataset": pool.dataset,
        "validation": validation, "items": items,
        "weights": asset_json(view, &AssetId::Pool(id))})
}

fn label_task_json(view: &StateDelta<'_>, id: u64) -> Value {
    let Some(t) = data::label_task(view, id) else {
        return Value::Null;
    };
    let phase = match t.phase {
        data::Phase::Joining => "joining",
        data::Phase::Labelling => "labelling",
        data::Phase::Settled => "settled",
    };
    let rule = match t.rule {
        data::Rule::Majority => json!("majority"),
        data::Rule::Tolerance { tolerance } => json!({"tolerance": tolerance}),
    };
    json!({"id": id, "requester": t.requester.to_string(),
        "items": t.items.iter().map(|h| h.to_hex()).collect::<Vec<_>>(), "k": t.k,
        "reward_per_label": amount(t.reward_per_label), "stake": amount(t.stake), "rule": rule,
        "join_end": t.join_end, "label_end": t.label_end,
        "labellers": t.labellers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "phase": phase, "result": t.result})
}

/// Answers an economy method (see [`METHODS`]).
pub(super) fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    let snapshot = app.store().snapshot().map_err(internal)?;
    let view = StateDelta::new(&snapshot);
    match name {
        method::GET_ASSET => Ok(asset_json(&view, &asset_param(params)?)),
        method::GET_CLAIMABLE => {
            let asset = asset_param(params)?;
            let holder = address_param(params, 1)?;
            Ok(json!(amount(assets::claimable(&view, &asset, &holder))))
        }
        method::GET_OFFERING => {
            let id = id_param(params, 0, "offering id")?;
            Ok(shares::offering(&view, id).map_or(Value::Null, |o| {
                json!({"id": id, "asset": o.asset.to_string(), "seller": o.seller.to_string(),
                    "curve": curve_json(&o.curve), "units_left": o.units_left.to_string(),
                    "sold": o.sold.to_string(), "reserve": amount(o.reserve), "open": o.open})
            }))
        }
        method::GET_LINEAGE => {
            let model = param(params, 0, "model name")?
                .as_str()
                .filter(|n| n.len() <= models::MODEL_NAME_BYTES_MAX)
                .ok_or_else(|| invalid("the model name must be a short string".into()))?;
            Ok(lineage_json(&view, model, 0))
        }
        method::GET_DATASET => {
            let id = id_param(params, 0, "dataset id")?;
            let buyer = match params.get(1) {
                None | Some(Value::Null) => None,
                Some(_) => Some(address_param(params, 1)?),
            };
            Ok(dataset_json(&view, id, buyer))
        }
        method::GET_POOL => Ok(pool_json(&view, id_param(params, 0, "pool id")?)),
        method::GET_LABEL_TASK => Ok(label_task_json(&view, id_param(params, 0, "task id")?)),
        other => unreachable!("`{other}` is not an economy method"),
    }
}
