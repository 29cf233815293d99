//! Client commands: keys, queries, transfers and staking.

use crate::{config, ClientArgs, KeyArgs, KeysCommand, SignerArgs};
use anyhow::{Context, Result};
use piazza_client::{Client, LightConfig, TrustAnchor};
use piazza_keystore::Keystore;
use piazza_ledger::bank;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

const RECEIPT_WAIT: Duration = Duration::from_secs(60);
/// `unstake --wait` gives up when the chain makes no block for this long.
const CHAIN_STALL_MS: u64 = 60_000;
const HEIGHT_POLL_MS: u64 = 250;

pub(crate) fn keystore(dir: Option<PathBuf>) -> Result<Keystore> {
    let dir = dir.unwrap_or_else(|| config::default_keystore(&config::home()));
    Ok(Keystore::open(&dir)?)
}

pub(crate) fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(value).expect("results serialize")
        );
    } else {
        outln!("{}", human());
    }
}

/// The signing key's name: `--from`, or `dev` on the devnet only; elsewhere a missing `--from`
/// is an error rather than a guess.
pub(crate) fn signer_name(from: Option<&str>, chain_id: &str) -> Result<String> {
    match from {
        Some(name) => Ok(name.to_string()),
        None if chain_id == crate::devnet::DEVNET_CHAIN_ID => Ok(crate::devnet::DEV_KEY.into()),
        None => anyhow::bail!(
            "--from KEY is required: the keystore key that signs (only the devnet defaults to `{}`; this chain is `{chain_id}`)",
            crate::devnet::DEV_KEY
        ),
    }
}

/// Unlocks the signing key (`--from`, see [`signer_name`]) with its password.
pub(crate) async fn signer(client: &Client, key: &KeyArgs) -> Result<piazza_primitives::SecretKey> {
    let name = match &key.from {
        Some(name) => name.clone(),
        None => signer_name(None, &client.status().await?.chain_id)?,
    };
    crate::password::unlock(
        &keystore(key.keystore.clone())?,
        &name,
        key.password_file.as_deref(),
    )
}

pub(crate) fn pza(base_units: &str) -> String {
    base_units
        .parse::<u128>()
        .map(|u| format!("{} PZA", Amount::new(u)))
        .unwrap_or_else(|_| base_units.to_string())
}

pub fn keys(command: KeysCommand, dir: Option<PathBuf>) -> Result<()> {
    let keystore = keystore(dir)?;
    match command {
        KeysCommand::New {
            name,
            password_file,
            json,
        } => {
            let password = crate::password::for_new_key(
                &name,
                &crate::password::Sources::of_process(password_file.as_deref()),
            )?;
            let info = keystore.create(&name, &password)?;
            let value = serde_json::json!({"key": info, "keystore": keystore.dir()});
            print(json, &value, || {
                format!(
                    "created `{}`: {} in {}",
                    info.name,
                    info.address,
                    keystore.dir().display()
                )
            });
        }
        KeysCommand::List { json } => {
            let keys = keystore.list()?;
            print(json, &keys, || {
                keys.iter()
                    .map(|k| format!("{}\t{}", k.name, k.address))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeysCommand::Show { name, json } => {
            let info = keystore.info(&name)?;
            print(json, &info, || {
                format!(
                    "name:       {}\naddress:    {}\npublic key: {}",
                    info.name, info.address, info.public_key
                )
            });
        }
    }
    Ok(())
}

/// An address, or the name of a key in the keystore.
pub(crate) fn resolve(account: &str, keystore_dir: Option<PathBuf>) -> Result<Address> {
    if account.starts_with("pz1") {
        return Ok(account.parse()?);
    }
    Ok(keystore(keystore_dir)?
        .info(account)
        .with_context(|| format!("`{account}` is neither an address nor a key name"))?
        .address)
}

/// Whether jobs can be served: every registered model has a provider. Returns the verdict and
/// one line per model.
pub(crate) fn readiness(models: &[piazza_api::ModelInfo]) -> (bool, Vec<String>) {
    let ready = !models.is_empty() && models.iter().all(|m| !m.providers.is_empty());
    let lines = models
        .iter()
        .map(|m| {
            let n = m.providers.len();
            format!("{} ({n} provider{})", m.name, if n == 1 { "" } else { "s" })
        })
        .collect();
    (ready, lines)
}

pub async fn status(args: &ClientArgs) -> Result<()> {
    let client = Client::new(&args.node);
    let status = client.status().await?;
    let models = client.models().await?;
    let (ready, serving) = readiness(&models);
    let value = serde_json::json!({
        "chain_id": status.chain_id,
        "height": status.height,
        "block_hash": status.block_hash,
        "state_root": status.state_root,
        "time_ms": status.time_ms,
        "mempool_size": status.mempool_size,
        "validator": status.validator,
        "ready_for_jobs": ready,
        "models": models.iter().map(|m| serde_json::json!({"name": m.name, "providers": m.providers.len()})).collect::<Vec<_>>(),
    });
    print(args.json, &value, || {
        format!(
            "chain:      {}\nheight:     {}\nblock:      {}\nstate root: {}\nmempool:    {}\nvalidator:  {}\njobs:       {}\nmodels:     {}",
            status.chain_id,
            status.height,
            status.block_hash,
            status.state_root,
            status.mempool_size,
            status.validator,
            if ready { "ready (every model has a provider)" } else { "not ready (a model has no provider yet)" },
            if serving.is_empty() { "none".to_string() } else { serving.join(", ") }
        )
    });
    Ok(())
}

pub(crate) async fn submit(args: &ClientArgs, signer: &SignerArgs, message: Message) -> Result<()> {
    submit_for_receipt(args, signer, message, true)
        .await
        .map(|_| ())
}

/// Sends one message; with `--wait`, returns its receipt once committed without error (printed
/// unless `print_json_receipt` is false and the output is JSON: the caller prints more).
async fn submit_for_receipt(
    args: &ClientArgs,
    signer: &SignerArgs,
    message: Message,
    print_json_receipt: bool,
) -> Result<Option<piazza_api::ReceiptInfo>> {
    let max_fee: Amount = signer.max_fee.parse()?;
    let client = Client::new(&args.node);
    let key = self::signer(&client, &signer.key).await?;
    let tx = client.build(&key, vec![message], max_fee).await?;
    let hash = client.submit(&tx).await?;
    if !signer.wait {
        print(
            args.json,
            &serde_json::json!({"hash": hash.to_hex()}),
            || format!("submitted {hash}"),
        );
        return Ok(None);
    }
    let receipt = client.wait_for_receipt(&hash, RECEIPT_WAIT).await?;
    let human = !args.json;
    if human || print_json_receipt || receipt.error.is_some() {
        print(args.json, &receipt, || match &receipt.error {
            None => format!(
                "committed {hash} at height {} (fee {})",
                receipt.height,
                pza(&receipt.fee_paid)
            ),
            Some(e) => format!(
                "included {hash} at height {} but failed: {} ({}) {}",
                receipt.height, e.name, e.code, e.message
            ),
        });
    }
    anyhow::ensure!(receipt.error.is_none(), "the transaction failed");
    Ok(Some(receipt))
}

pub async fn send(args: &ClientArgs, signer: &SignerArgs, to: &str, amount: &str) -> Result<()> {
    let to = resolve(to, signer.key.keystore.clone())?;
    let amount: Amount = amount.parse()?;
    submit(args, signer, Message::Bank(bank::Msg::Send { to, amount })).await
}

pub async fn stake(
    args: &ClientArgs,
    signer: &SignerArgs,
    role: &str,
    amount: &str,
    bond: bool,
) -> Result<()> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let amount: Amount = amount.parse()?;
    if bond {
        return submit(
            args,
            signer,
            Message::Staking(staking::Msg::Bond { role, amount }),
        )
        .await;
    }
    let receipt = submit_for_receipt(
        args,
        signer,
        Message::Staking(staking::Msg::Unbond { role, amount }),
        false,
    )
    .await?;
    let Some(receipt) = receipt else {
        return Ok(());
    };
    // `--wait` on an unbond waits for the tokens themselves: until the release height's block.
    let release_height =
        release_height(&receipt).context("the unbond's receipt carries no staking.unbond event")?;
    if !args.json {
        eprintln!("unbonding: the tokens return at height {release_height}; waiting");
    }
    let client = Client::new(&args.node);
    wait_for_height(&client, release_height).await?;
    print(
        args.json,
        &serde_json::json!({"receipt": receipt, "unbonded": amount.base_units().to_string(), "released_height": release_height}),
        || format!("unbonded {amount} PZA: back in the balance since height {release_height}"),
    );
    Ok(())
}

/// The height at which an unbond's tokens return, from its receipt's `staking.unbond` event.
pub(crate) fn release_height(receipt: &piazza_api::ReceiptInfo) -> Option<u64> {
    receipt
        .events
        .iter()
        .find(|e| e.kind == "staking.unbond")?
        .attributes
        .get("release_height")?
        .parse()
        .ok()
}

/// Waits until the chain has committed block `height`; fails if it makes no block for
/// [`CHAIN_STALL_MS`].
async fn wait_for_height(client: &Client, height: u64) -> Result<()> {
    let mut last = client.status().await?.height;
    let mut last_change = std::time::Instant::now();
    while last < height {
        anyhow::ensure!(
            last_change.elapsed() < Duration::from_millis(CHAIN_STALL_MS),
            "the chain made no block for {} s (at height {last}, waiting for {height})",
            CHAIN_STALL_MS / 1000
        );
        tokio::time::sleep(Duration::from_millis(HEIGHT_POLL_MS)).await;
        let now = client.status().await?.height;
        if now != last {
            last = now;
            last_change = std::time::Instant::now();
        }
    }
    Ok(())
}

/// Whether `balance` checks what the node answers.
pub enum Verify {
    No,
    /// A state proof against a block whose certificate is checked from the network's genesis
    /// (a light client) or, without one, against the validator set the node names.
    Certified {
        genesis: Option<PathBuf>,
    },
}

/// What `balance --verify` checked.
#[derive(Serialize)]
struct BalanceProof {
    /// The block whose state root proves the account, and its proposer.
    block: u64,
    proposer: String,
    /// `[signed, total]` voting power of the block's commit certificate (a network).
    certified_power: Option<[u64; 2]>,
    /// Where the height's validator set came from.
    validator_set: String,
}

pub async fn balance(
    args: &ClientArgs,
    account: &str,
    verify: Verify,
    keystore_dir: Option<PathBuf>,
) -> Result<()> {
    let address = resolve(account, keystore_dir)?;
    let mut client = Client::new(&args.node);
    let (info, proof) = match verify {
        Verify::No => (client.account(&address).await?, None),
        Verify::Certified { genesis } => {
            if let Some(path) = &genesis {
                let anchor = TrustAnchor::from_genesis(&crate::node::read_genesis(path)?)?;
                client = client.with_trust_anchor(anchor, LightConfig::default());
            }
            let (info, block) = client.verified_account(&address).await?;
            let power = client.certified_block(&block).await?;
            let proof = BalanceProof {
                block: info.proof.height,
                proposer: block.header.proposer.address().to_string(),
                certified_power: power.map(|p| [p.signed, p.total]),
                validator_set: match (&genesis, power) {
                    (Some(path), _) => format!("proven from the genesis {}", path.display()),
                    (None, Some(_)) => {
                        "taken from the node, unchecked (pass --genesis to prove it)".into()
                    }
                    (None, None) => "none (the node runs a solo chain)".into(),
                },
            };
            (info, Some(proof))
        }
    };
    let stake = client.stake(&address).await?;
    let value = serde_json::json!({
        "account": info,
        "stake": stake,
        "verified_against_block_of": proof.as_ref().map(|p| &p.proposer),
        "proof": proof,
    });
    print(args.json, &value, || {
        let mut out = format!(
            "address: {}\nbalance: {}\nnonce:   {}",
            info.address,
            pza(&info.balance),
            info.nonce
        );
        for (role, amount) in &stake.bonds {
            out += &format!("\nbonded as {role}: {}", pza(amount));
        }
        if stake.unbonding != "0" {
            out += &format!("\nunbonding: {}", pza(&stake.unbonding));
        }
        if let Some(p) = &proof {
            out += &format!(
                "\nproof: verified against the state root of block {} signed by {}",
                p.block, p.proposer
            );
            if let Some([signed, total]) = p.certified_power {
                out +=
                    &format!("\ncertified by validators holding {signed} of {total} voting power");
            }
            out += &format!("\nvalidator set: {}", p.validator_set);
        }
        out
    });
    Ok(())
}

pub async fn block(args: &ClientArgs, id: &str) -> Result<()> {
    let client = Client::new(&args.node);
    let block = if id == "latest" {
        client.block(client.status().await?.height).await?
    } else if let Ok(height) = id.parse::<u64>() {
        client.block(height).await?
    } else {
        client
            .block_by_hash(
                &id.parse::<Hash>()
                    .context("expected a height, a block hash or `latest`")?,
            )
            .await?
    };
    let block = block.with_context(|| format!("no block {id}"))?;
    print(args.json, &block, || {
        format!(
            "height:     {}\nhash:       {}\nparent:     {}\ntime_ms:    {}\nproposer:   {}\nstate root: {}\ntxs:        {}{}",
            block.height,
            block.hash,
            block.parent_hash,
            block.time_ms,
            block.proposer,
            block.state_root,
            block.tx_hashes.len(),
            block.tx_hashes.iter().map(|h| format!("\n  {h}")).collect::<String>()
        )
    });
    Ok(())
}

pub async fn tx(args: &ClientArgs, hash: &str) -> Result<()> {
    let hash: Hash = hash.parse().context("expected a 32-byte hex hash")?;
    let client = Client::new(&args.node);
    let Some(tx) = client.transaction(&hash).await? else {
        // Not in a block: say what became of it (the node journals what it acknowledged).
        let status = client.transaction_status(&hash).await?;
        let text = match &status {
            piazza_api::TxStatusInfo::Pending => {
                format!("{hash}: pending (acknowledged, not yet in a block)")
            }
            piazza_api::TxStatusInfo::Dropped { name, reason, .. } => {
                format!("{hash}: dropped ({name}): {reason}")
            }
            piazza_api::TxStatusInfo::Included { height } => {
                format!("{hash}: included at height {height}")
            }
            piazza_api::TxStatusInfo::Unknown => {
                anyhow::bail!("no transaction {hash} (this node never acknowledged it)")
            }
        };
        print(args.json, &serde_json::json!({ "status": status }), || text);
        return Ok(());
    };
    let receipt = client.receipt(&hash).await?;
    let value = serde_json::json!({"transaction": tx, "receipt": receipt});
    print(args.json, &value, || {
        let mut out = format!(
            "hash:     {}\nheight:   {} (index {})\nsender:   {}\nnonce:    {}",
            tx.hash, tx.height, tx.index, tx.sender, tx.nonce
        );
        for m in &tx.messages {
            out += &format!("\nmessage:  {m}");
        }
        if let Some(r) = &receipt {
            out += &format!("\nstatus:   {}\nfee:      {}", r.status, pza(&r.fee_paid));
            if let Some(e) = &r.error {
                out += &format!("\nerror:    {} ({}): {}", e.name, e.code, e.message);
            }
        }
        out
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_devnet_signs_with_dev_by_default() {
        assert_eq!(signer_name(Some("bob"), "mainnet").unwrap(), "bob");
        assert_eq!(
            signer_name(None, crate::devnet::DEVNET_CHAIN_ID).unwrap(),
            crate::devnet::DEV_KEY
        );
        let error = signer_name(None, "mainnet").unwrap_err().to_string();
        assert!(error.contains("--from"), "{error}");
    }

    fn model(name: &str, providers: usize) -> piazza_api::ModelInfo {
        serde_json::from_value(serde_json::json!({
            "name": name, "kind": "embedding", "architecture": "bert", "config_hash": "",
            "weights_commitment": "", "tokenizer_hash": "", "owner": "", "license": "",
            "price_floor": "1", "providers": vec!["pz1x"; providers],
        }))
        .unwrap()
    }

    #[test]
    fn ready_means_every_model_has_a_provider() {
        let (ready, lines) = readiness(&[model("a", 1), model("b", 0)]);
        assert!(!ready);
        assert_eq!(lines, ["a (1 provider)", "b (0 providers)"]);
        assert!(readiness(&[model("a", 2), model("b", 1)]).0);
        assert!(!readiness(&[]).0);
    }

    #[test]
    fn an_unbonds_release_height_comes_from_its_event() {
        let receipt: piazza_api::ReceiptInfo = serde_json::from_value(serde_json::json!({
            "tx_hash": "00", "height": 5, "index": 0, "status": "ok", "fee_paid": "1",
            "events": [{"kind": "staking.unbond", "height": 5,
                        "attributes": {"release_height": "25", "amount": "1"}}],
        }))
        .unwrap();
        assert_eq!(release_height(&receipt), Some(25));
        let mut other = receipt.clone();
        other.events[0].kind = "bank.send".into();
        assert_eq!(release_height(&other), None);
    }
}
