//! `piazza shares|offering|model|dataset|pool|label ...`: the economy from the command line
//! (docs/economy.md). Every command that sends a transaction takes the signer's flags
//! (`--from`, `--max-fee`, `--wait`); every command takes `--json`.

use crate::query::{print, resolve, submit};
use crate::{ClientArgs, SignerArgs};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use piazza_client::Client;
use piazza_ledger::bank::assets::AssetId;
use piazza_ledger::bank::curve::Curve;
use piazza_ledger::bank::shares;
use piazza_ledger::data::{self, Rule};
use piazza_ledger::models::{self, Lineage, ModelKind, ModelRecord, Parent, Source};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum EconomyCommand {
    /// Share assets of models, datasets, agents and pools: issue, transfer, claim, show.
    Shares {
        #[command(subcommand)]
        command: SharesCommand,
    },
    /// Offerings of share units at a fixed price or on a linear bonding curve.
    Offering {
        #[command(subcommand)]
        command: OfferingCommand,
    },
    /// Model records with lineage (base models and datasets, royalty).
    Model {
        // Boxed: a registration's arguments are many times the other commands' size.
        #[command(subcommand)]
        command: Box<ModelCommand>,
    },
    /// Datasets: register, buy access, seal a buyer's content key, show.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Contribution pools validated by embedding jobs.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Labelling tasks.
    Label {
        #[command(subcommand)]
        command: LabelCommand,
    },
}

#[derive(Subcommand)]
pub enum SharesCommand {
    /// Issue the asset's whole fixed supply to its owner (once).
    Issue {
        /// `model:NAME`, `dataset:ID` or `agent:NAME`.
        asset: String,
        /// Units to create, all to the owner; fixed forever.
        #[arg(long)]
        supply: u128,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Transfer units to an address or key name.
    Transfer {
        /// `model:NAME`, `dataset:ID`, `agent:NAME` or `pool:ID`.
        asset: String,
        /// The recipient: a `pz1…` address or a key name.
        #[arg(long)]
        to: String,
        /// Units to move.
        #[arg(long)]
        units: u128,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Claim the revenue the signer's units have earned.
    Claim {
        /// `model:NAME`, `dataset:ID`, `agent:NAME` or `pool:ID`.
        asset: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// The asset, its holders and what each may claim.
    Show {
        /// `model:NAME`, `dataset:ID`, `agent:NAME` or `pool:ID`.
        asset: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum OfferingCommand {
    /// Offer units: `--price` for a fixed price, or `--base`/`--slope` for a linear curve.
    Create {
        /// `model:NAME`, `dataset:ID` or `agent:NAME` (the signer must hold the units).
        asset: String,
        /// Units offered.
        #[arg(long)]
        units: u128,
        /// PZA per unit (fixed price).
        #[arg(long, conflicts_with_all = ["base", "slope"])]
        price: Option<String>,
        /// PZA of the first unit on a linear curve.
        #[arg(long)]
        base: Option<String>,
        /// PZA added per unit sold on a linear curve.
        #[arg(long)]
        slope: Option<String>,
        /// Share of each purchase kept to refund sales back (basis points).
        #[arg(long, default_value_t = 10_000)]
        reserve_bps: u16,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Buy units, paying at most `--max-cost` PZA.
    Buy {
        /// The offering's id.
        id: u64,
        /// Units to buy.
        #[arg(long)]
        units: u128,
        /// Most PZA to pay; the purchase is refused above it.
        #[arg(long)]
        max_cost: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Sell units back to a curve offering for at least `--min-refund` PZA.
    Sell {
        /// The offering's id.
        id: u64,
        /// Units to sell back.
        #[arg(long)]
        units: u128,
        /// Least PZA to receive; the sale is refused below it.
        #[arg(long, default_value = "0")]
        min_refund: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// End an offering (the seller): unsold units are released.
    Close {
        /// The offering's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Show {
        /// The offering's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A model record's terms: license, price floor and lineage.
#[derive(clap::Args)]
pub struct RecordTerms {
    /// The model's license (SPDX id or URL).
    #[arg(long, default_value = "")]
    license: String,
    /// Least PZA per unit of work.
    #[arg(long, default_value = "0.000001")]
    price_floor: String,
    /// A base model and its weight, `NAME:BPS` (repeatable).
    #[arg(long = "base")]
    bases: Vec<String>,
    /// A dataset and its weight, `ID:BPS` (repeatable).
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// Share of the model's revenue that flows up its lineage (basis points).
    #[arg(long, default_value_t = 0)]
    royalty_bps: u16,
}

impl RecordTerms {
    /// Sets `record`'s license, price floor and lineage.
    fn apply(&self, record: &mut ModelRecord) -> Result<()> {
        record.license = self.license.clone();
        record.price_floor = self.price_floor.parse()?;
        record.lineage = lineage(&self.bases, &self.datasets, self.royalty_bps)?;
        Ok(())
    }
}

/// A registration carries every field of a record; it is parsed once per run.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Register a model with its lineage: `--base M:W` and `--dataset D:W` (weights in basis
    /// points summing to 10 000), `--royalty-bps` flowing up to them.
    Register {
        /// The model's unique name.
        #[arg(long)]
        name: String,
        /// `embedding` or `generation`.
        #[arg(long, default_value = "generation")]
        kind: String,
        /// e.g. `bert` or `llama`.
        #[arg(long)]
        architecture: String,
        /// Hash of the configuration as the engine reads it (hex).
        #[arg(long)]
        config_hash: Hash,
        /// The engine's Merkle root over the weights (hex).
        #[arg(long)]
        weights_commitment: Hash,
        /// Hash of the tokenizer file (hex).
        #[arg(long)]
        tokenizer_hash: Hash,
        /// The arithmetic its engines run: `f32`, or `quantized` (integer block dots over the
        /// weights as stored; its weights commitment is the quantized one).
        #[arg(long, default_value = "f32", value_parser = numeric_profile)]
        numeric: models::NumericProfile,
        /// The blob its weights are stored in (`blob put`): providers without the file fetch
        /// it by this id.
        #[arg(long)]
        weights_blob: Option<Hash>,
        /// The blob of its tokenizer [default: the weights blob, a GGUF carrying it].
        #[arg(long, requires = "weights_blob")]
        tokenizer_blob: Option<Hash>,
        /// The blob of its config [default: the weights blob, a GGUF carrying it].
        #[arg(long, requires = "weights_blob")]
        config_blob: Option<Hash>,
        #[command(flatten)]
        terms: RecordTerms,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Publish a model through storage: its weights, tokenizer and config files stored as
    /// blobs (`blob put`), then its record registered with their blob ids and the weights
    /// commitment, tokenizer and config hashes a provider computes from the same files. A
    /// generation model is one GGUF file (its tokenizer and config inside): give `--weights`
    /// only.
    Publish {
        /// The model's unique name.
        #[arg(long)]
        name: String,
        /// `embedding` or `generation`.
        #[arg(long, default_value = "generation")]
        kind: String,
        /// The weights file (safetensors, or a GGUF holding everything).
        #[arg(long)]
        weights: PathBuf,
        /// The tokenizer file [default: the weights file].
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// The config file [default: the weights file].
        #[arg(long)]
        config: Option<PathBuf>,
        /// The arithmetic its engines run: `f32`, or `quantized` (integer block dots over the
        /// weights as stored; the record's weights commitment is computed in that profile).
        #[arg(long, default_value = "f32", value_parser = numeric_profile)]
        numeric: models::NumericProfile,
        #[command(flatten)]
        terms: RecordTerms,
        /// Epochs the storage deals keep (and pay for) each file.
        #[arg(long, default_value_t = 100)]
        epochs: u64,
        /// Data shards of each blob.
        #[arg(long, default_value_t = piazza_blob::erasure::DATA_SHARDS_DEFAULT)]
        k: u16,
        /// Parity shards of each blob.
        #[arg(long, default_value_t = piazza_blob::erasure::PARITY_SHARDS_DEFAULT)]
        m: u16,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// A model's lineage graph.
    Lineage {
        /// The model's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum DatasetCommand {
    Register {
        /// The content's blob id.
        #[arg(long)]
        blob: Hash,
        /// What an item looks like (free text or a schema URL).
        #[arg(long, default_value = "")]
        schema: String,
        /// The dataset's license (SPDX id or URL).
        #[arg(long, default_value = "")]
        license: String,
        /// PZA per access.
        #[arg(long)]
        price: String,
        /// The content is encrypted; buyers get its key sealed to theirs (`dataset seal`).
        #[arg(long)]
        encrypted: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Buy access at the dataset's price.
    Buy {
        /// The dataset's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Give a buyer the content key sealed to its key (hex).
    Seal {
        /// The dataset's id.
        id: u64,
        /// The buyer: a `pz1…` address or a key name.
        #[arg(long)]
        buyer: String,
        /// The content key sealed to the buyer's key (hex).
        #[arg(long)]
        sealed_key: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Show {
        /// The dataset's id.
        id: u64,
        /// Also show this account's access.
        #[arg(long)]
        buyer: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Open a pool whose items are validated by `--model` embeddings.
    Create {
        /// The embedding model whose jobs validate items.
        #[arg(long)]
        model: String,
        /// Embedding dimensions of that model.
        #[arg(long)]
        dims: u16,
        /// Least squared distance (embeddings quantized to i8 at scale 127) to every item.
        #[arg(long)]
        min_distance_sq: u32,
        /// What an item looks like (free text or a schema URL).
        #[arg(long, default_value = "")]
        schema: String,
        /// The pool dataset's license (SPDX id or URL).
        #[arg(long, default_value = "")]
        license: String,
        /// PZA per access to the pool's dataset.
        #[arg(long)]
        price: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Add an item proven new by a settled embedding job the signer paid for.
    Contribute {
        /// The pool's id.
        id: u64,
        /// The item's text (its hash is the job input's hash).
        #[arg(long)]
        text: String,
        /// The settled embedding job of the item's text.
        #[arg(long)]
        job: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Show {
        /// The pool's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum LabelCommand {
    Create {
        /// Item hashes (repeatable).
        #[arg(long = "item", required = true)]
        items: Vec<Hash>,
        /// Labellers per item.
        #[arg(long, default_value_t = 3)]
        k: u8,
        /// PZA per agreeing label.
        #[arg(long)]
        reward: String,
        /// PZA each labeller stakes.
        #[arg(long)]
        stake: String,
        /// `majority` or `tolerance:N`.
        #[arg(long, default_value = "majority")]
        rule: String,
        /// Blocks labellers have to join.
        #[arg(long, default_value_t = 20)]
        join_blocks: u32,
        /// Blocks assigned labellers have to submit.
        #[arg(long, default_value_t = 50)]
        label_blocks: u32,
        /// PZA per access to the labelled dataset.
        #[arg(long, default_value = "0")]
        price: String,
        /// The labelled dataset's license (SPDX id or URL).
        #[arg(long, default_value = "")]
        license: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Join {
        /// The task's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Assign {
        /// The task's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Submit {
        /// The task's id.
        id: u64,
        /// The item's index in the task.
        #[arg(long)]
        item: u16,
        /// The label (a class number, or a value under a tolerance rule).
        #[arg(long)]
        value: u32,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Settle {
        /// The task's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    Show {
        /// The task's id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn asset(text: &str) -> Result<AssetId> {
    text.parse().map_err(anyhow::Error::msg)
}

fn base_units(pza: &str) -> Result<u128> {
    Ok(pza.parse::<Amount>()?.base_units())
}

/// `NAME:BPS` or `ID:BPS`.
fn weighted(spec: &str) -> Result<(&str, u16)> {
    let (name, bps) = spec
        .rsplit_once(':')
        .with_context(|| format!("`{spec}` is not NAME:BPS"))?;
    Ok((
        name,
        bps.parse().with_context(|| format!("weight in `{spec}`"))?,
    ))
}

/// The lineage the flags describe.
pub fn lineage(bases: &[String], datasets: &[String], royalty_bps: u16) -> Result<Lineage> {
    let mut parents = Vec::new();
    for spec in bases {
        let (name, weight_bps) = weighted(spec)?;
        parents.push(Parent {
            source: Source::Model(name.to_string()),
            weight_bps,
        });
    }
    for spec in datasets {
        let (id, weight_bps) = weighted(spec)?;
        parents.push(Parent {
            source: Source::Dataset(id.parse().with_context(|| format!("dataset id `{id}`"))?),
            weight_bps,
        });
    }
    Ok(Lineage {
        parents,
        royalty_bps,
    })
}

fn rule(text: &str) -> Result<Rule> {
    match text.split_once(':') {
        None if text == "majority" => Ok(Rule::Majority),
        Some(("tolerance", n)) => Ok(Rule::Tolerance {
            tolerance: n.parse()?,
        }),
        _ => bail!("a rule is `majority` or `tolerance:N`"),
    }
}

/// Prints a queried JSON value (pretty in both modes; `null` as "not found").
fn show(client: &ClientArgs, value: Value) -> Result<()> {
    anyhow::ensure!(!value.is_null(), "not found");
    print(client.json, &value, || {
        serde_json::to_string_pretty(&value).expect("JSON values serialize")
    });
    Ok(())
}

fn keystore(signer: &SignerArgs) -> Option<std::path::PathBuf> {
    signer.key.keystore.clone()
}

pub async fn run(command: EconomyCommand) -> Result<()> {
    match command {
        EconomyCommand::Shares { command } => shares(command).await,
        EconomyCommand::Offering { command } => offering(command).await,
        EconomyCommand::Model { command } => model(*command).await,
        EconomyCommand::Dataset { command } => dataset(command).await,
        EconomyCommand::Pool { command } => pool(command).await,
        EconomyCommand::Label { command } => label(command).await,
    }
}

async fn shares(command: SharesCommand) -> Result<()> {
    let (client, signer, msg) = match command {
        SharesCommand::Show { asset: id, client } => {
            let value = Client::new(&client.node).asset(&asset(&id)?).await?;
            return show(&client, value);
        }
        SharesCommand::Issue {
            asset: id,
            supply,
            client,
            signer,
        } => (
            client,
            signer,
            shares::Msg::Issue {
                asset: asset(&id)?,
                supply,
            },
        ),
        SharesCommand::Transfer {
            asset: id,
            to,
            units,
            client,
            signer,
        } => {
            let to: Address = resolve(&to, keystore(&signer))?;
            let msg = shares::Msg::Transfer {
                asset: asset(&id)?,
                to,
                units,
            };
            (client, signer, msg)
        }
        SharesCommand::Claim {
            asset: id,
            client,
            signer,
        } => (client, signer, shares::Msg::Claim { asset: asset(&id)? }),
    };
    submit(&client, &signer, Message::Shares(msg)).await
}

async fn offering(command: OfferingCommand) -> Result<()> {
    let (client, signer, msg) = match command {
        OfferingCommand::Show { id, client } => {
            let value = Client::new(&client.node).offering(id).await?;
            return show(&client, value);
        }
        OfferingCommand::Create {
            asset: id,
            units,
            price,
            base,
            slope,
            reserve_bps,
            client,
            signer,
        } => {
            let curve = match (price, base, slope) {
                (Some(price), None, None) => Curve::Fixed {
                    price: base_units(&price)?,
                },
                (None, Some(base), slope) => Curve::Linear {
                    base: base_units(&base)?,
                    slope: base_units(slope.as_deref().unwrap_or("0"))?,
                    reserve_bps,
                },
                _ => bail!("give --price (fixed) or --base [--slope] (linear curve)"),
            };
            let msg = shares::Msg::Offer {
                asset: asset(&id)?,
                units,
                curve,
            };
            (client, signer, msg)
        }
        OfferingCommand::Buy {
            id,
            units,
            max_cost,
            client,
            signer,
        } => (
            client,
            signer,
            shares::Msg::Buy {
                offering: id,
                units,
                max_cost: max_cost.parse()?,
            },
        ),
        OfferingCommand::Sell {
            id,
            units,
            min_refund,
            client,
            signer,
        } => (
            client,
            signer,
            shares::Msg::Sell {
                offering: id,
                units,
                min_refund: min_refund.parse()?,
            },
        ),
        OfferingCommand::Close { id, client, signer } => {
            (client, signer, shares::Msg::Close { offering: id })
        }
    };
    submit(&client, &signer, Message::Shares(msg)).await
}

async fn model(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Lineage { name, client } => {
            let value = Client::new(&client.node).lineage(&name).await?;
            show(&client, value)
        }
        ModelCommand::Register {
            name,
            kind,
            architecture,
            config_hash,
            weights_commitment,
            tokenizer_hash,
            numeric,
            weights_blob,
            tokenizer_blob,
            config_blob,
            terms,
            client,
            signer,
        } => {
            let kind = model_kind(&kind)?;
            let files = weights_blob.map(|weights| models::ModelFiles {
                weights,
                tokenizer: tokenizer_blob.unwrap_or(weights),
                config: config_blob.unwrap_or(weights),
            });
            let mut record = ModelRecord {
                name,
                kind,
                architecture,
                config_hash,
                weights_commitment,
                tokenizer_hash,
                // The ledger sets the owner to the signer.
                owner: Address([0; 20]),
                license: String::new(),
                price_floor: Amount::ZERO,
                numeric,
                files,
                lineage: Default::default(),
            };
            terms.apply(&mut record)?;
            let msg = Message::Models(models::Msg::Register(record));
            submit(&client, &signer, msg).await
        }
        ModelCommand::Publish {
            name,
            kind,
            weights,
            tokenizer,
            config,
            numeric,
            terms: record_terms,
            epochs,
            k,
            m,
            client,
            signer,
        } => {
            let paths = piazza_provider::models::ModelPaths {
                tokenizer: tokenizer.unwrap_or_else(|| weights.clone()),
                config: config.unwrap_or_else(|| weights.clone()),
                weights,
            };
            let terms = crate::blob::Terms { epochs, k, m };
            let kind = model_kind(&kind)?;
            let mut record =
                publish(&client, &signer, &name, kind, numeric, &paths, &terms).await?;
            record_terms.apply(&mut record)?;
            let msg = Message::Models(models::Msg::Register(record));
            submit(&client, &signer, msg).await
        }
    }
}

/// `--numeric`: a model record's numeric profile by its name.
fn numeric_profile(name: &str) -> Result<models::NumericProfile, String> {
    match name {
        "f32" => Ok(models::NumericProfile::F32),
        "quantized" => Ok(models::NumericProfile::Quantized),
        other => Err(format!(
            "a numeric profile is `f32` or `quantized`, not `{other}`"
        )),
    }
}

fn model_kind(kind: &str) -> Result<ModelKind> {
    match kind {
        "embedding" => Ok(ModelKind::Embedding),
        "generation" => Ok(ModelKind::Generation),
        other => bail!("a model kind is `embedding` or `generation`, not `{other}`"),
    }
}

/// Checks the files (loaded as a provider loads them, for the record's hashes) and stores each
/// distinct one as a blob; the record names the blobs in `files`.
async fn publish(
    args: &ClientArgs,
    signer: &SignerArgs,
    name: &str,
    kind: ModelKind,
    numeric: models::NumericProfile,
    paths: &piazza_provider::models::ModelPaths,
    terms: &crate::blob::Terms,
) -> Result<ModelRecord> {
    for path in [&paths.weights, &paths.tokenizer, &paths.config] {
        crate::blob::check_layout(path, terms)?;
    }
    let mut record = {
        let (name, paths) = (name.to_string(), paths.clone());
        tokio::task::spawn_blocking(move || {
            // The ledger sets the owner to the signer.
            piazza_provider::models::record_of_files(&name, kind, numeric, &paths, Address([0; 20]))
        })
        .await??
    };
    let node = Client::new(&args.node);
    let key = crate::query::signer(&node, &signer.key).await?;
    // One blob per distinct file (a GGUF's three paths are one file, stored once).
    let mut stored: Vec<(&PathBuf, Hash)> = Vec::new();
    for path in [&paths.weights, &paths.tokenizer, &paths.config] {
        if !stored.iter().any(|(p, _)| *p == path) {
            let blob = crate::blob::store(&node, &key, path, terms)
                .await
                .with_context(|| format!("storing {}", path.display()))?;
            tracing::info!(file = %path.display(), blob = %blob.id, deal = blob.deal, "stored");
            stored.push((path, blob.id));
        }
    }
    let id_of = |path: &PathBuf| {
        stored
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, id)| *id)
            .expect("every path was stored above")
    };
    record.files = Some(models::ModelFiles {
        weights: id_of(&paths.weights),
        tokenizer: id_of(&paths.tokenizer),
        config: id_of(&paths.config),
    });
    Ok(record)
}

async fn dataset(command: DatasetCommand) -> Result<()> {
    let (client, signer, msg) = match command {
        DatasetCommand::Show { id, buyer, client } => {
            let buyer = buyer.map(|b| resolve(&b, None)).transpose()?;
            let value = Client::new(&client.node)
                .dataset(id, buyer.as_ref())
                .await?;
            return show(&client, value);
        }
        DatasetCommand::Register {
            blob,
            schema,
            license,
            price,
            encrypted,
            client,
            signer,
        } => (
            client,
            signer,
            data::Msg::RegisterDataset {
                blob,
                schema,
                license,
                price: price.parse()?,
                encrypted,
            },
        ),
        DatasetCommand::Buy { id, client, signer } => {
            (client, signer, data::Msg::BuyAccess { dataset: id })
        }
        DatasetCommand::Seal {
            id,
            buyer,
            sealed_key,
            client,
            signer,
        } => {
            let buyer = resolve(&buyer, keystore(&signer))?;
            let sealed_key = hex::decode(&sealed_key).context("the sealed key is hex")?;
            let msg = data::Msg::SealKey {
                dataset: id,
                buyer,
                sealed_key,
            };
            (client, signer, msg)
        }
    };
    submit(&client, &signer, Message::Data(msg)).await
}

async fn pool(command: PoolCommand) -> Result<()> {
    let (client, signer, msg) = match command {
        PoolCommand::Show { id, client } => {
            let value = Client::new(&client.node).pool(id).await?;
            return show(&client, value);
        }
        PoolCommand::Create {
            model,
            dims,
            min_distance_sq,
            schema,
            license,
            price,
            client,
            signer,
        } => (
            client,
            signer,
            data::Msg::CreatePool {
                model,
                dims,
                min_distance_sq,
                schema,
                license,
                price: price.parse()?,
            },
        ),
        PoolCommand::Contribute {
            id,
            text,
            job,
            client,
            signer,
        } => (
            client,
            signer,
            data::Msg::Contribute {
                pool: id,
                item: piazza_ledger::compute::input_hash(text.as_bytes()),
                validation_job: job,
            },
        ),
    };
    submit(&client, &signer, Message::Data(msg)).await
}

async fn label(command: LabelCommand) -> Result<()> {
    let (client, signer, msg) = match command {
        LabelCommand::Show { id, client } => {
            let value = Client::new(&client.node).label_task(id).await?;
            return show(&client, value);
        }
        LabelCommand::Create {
            items,
            k,
            reward,
            stake,
            rule: text,
            join_blocks,
            label_blocks,
            price,
            license,
            client,
            signer,
        } => (
            client,
            signer,
            data::Msg::CreateLabelTask {
                items,
                k,
                reward_per_label: reward.parse()?,
                stake: stake.parse()?,
                rule: rule(&text)?,
                join_blocks,
                label_blocks,
                price: price.parse()?,
                license,
            },
        ),
        LabelCommand::Join { id, client, signer } => {
            (client, signer, data::Msg::JoinLabelTask { task: id })
        }
        LabelCommand::Assign { id, client, signer } => {
            (client, signer, data::Msg::AssignLabels { task: id })
        }
        LabelCommand::Submit {
            id,
            item,
            value,
            client,
            signer,
        } => (
            client,
            signer,
            data::Msg::SubmitLabel {
                task: id,
                item,
                value,
            },
        ),
        LabelCommand::Settle { id, client, signer } => {
            (client, signer, data::Msg::SettleLabelTask { task: id })
        }
    };
    submit(&client, &signer, Message::Data(msg)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_flags_parse_into_weighted_parents() {
        let l = lineage(&["smollm2:6000".into()], &["3:4000".into()], 2_500).unwrap();
        assert_eq!(l.royalty_bps, 2_500);
        assert_eq!(
            l.parents,
            vec![
                Parent {
                    source: Source::Model("smollm2".into()),
                    weight_bps: 6_000
                },
                Parent {
                    source: Source::Dataset(3),
                    weight_bps: 4_000
                },
            ]
        );
        assert!(lineage(&["nocolon".into()], &[], 0).is_err());
        assert!(lineage(&[], &["x:10".into()], 0).is_err());
        assert_eq!(
            rule("tolerance:5").unwrap(),
            Rule::Tolerance { tolerance: 5 }
        );
        assert!(rule("mode").is_err());
    }
}
