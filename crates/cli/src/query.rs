//! Client commands: keys, queries, transfers and staking.

use crate::devnet::password;
use crate::{config, ClientArgs, KeysCommand, SignerArgs};
use anyhow::{Context, Result};
use piazza_client::Client;
use piazza_keystore::Keystore;
use piazza_ledger::bank;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, Hash};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

const RECEIPT_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn keystore(dir: Option<PathBuf>) -> Result<Keystore> {
    let dir = dir.unwrap_or_else(|| config::home().join("keys"));
    Ok(Keystore::open(&dir)?)
}

pub(crate) fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("results serialize")
        );
    } else {
        println!("{}", human());
    }
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
        KeysCommand::New { name } => {
            let password = password();
            if password.is_empty() {
                eprintln!(
                    "warning: PIAZZA_PASSWORD is not set; the key is sealed with an empty password"
                );
            }
            let info = keystore.create(&name, &password)?;
            println!(
                "created `{}`: {} in {}",
                info.name,
                info.address,
                keystore.dir().display()
            );
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

pub async fn status(args: &ClientArgs) -> Result<()> {
    let status = Client::new(&args.node).status().await?;
    print(args.json, &status, || {
        format!(
            "chain:      {}\nheight:     {}\nblock:      {}\nstate root: {}\nmempool:    {}\nvalidator:  {}",
            status.chain_id, status.height, status.block_hash, status.state_root, status.mempool_size, status.validator
        )
    });
    Ok(())
}

async fn submit(args: &ClientArgs, signer: &SignerArgs, message: Message) -> Result<()> {
    let key = keystore(signer.keystore.clone())?.unlock(&signer.from, &password())?;
    let max_fee: Amount = signer.max_fee.parse()?;
    let client = Client::new(&args.node);
    let tx = client.build(&key, vec![message], max_fee).await?;
    let hash = client.submit(&tx).await?;
    if !signer.wait {
        print(
            args.json,
            &serde_json::json!({"hash": hash.to_hex()}),
            || format!("submitted {hash}"),
        );
        return Ok(());
    }
    let receipt = client.wait_for_receipt(&hash, RECEIPT_WAIT).await?;
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
    anyhow::ensure!(receipt.error.is_none(), "the transaction failed");
    Ok(())
}

pub async fn send(args: &ClientArgs, signer: &SignerArgs, to: &str, amount: &str) -> Result<()> {
    let to = resolve(to, signer.keystore.clone())?;
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
    let message = if bond {
        staking::Msg::Bond { role, amount }
    } else {
        staking::Msg::Unbond { role, amount }
    };
    submit(args, signer, Message::Staking(message)).await
}

pub async fn balance(
    args: &ClientArgs,
    account: &str,
    verify: bool,
    keystore_dir: Option<PathBuf>,
) -> Result<()> {
    let address = resolve(account, keystore_dir)?;
    let client = Client::new(&args.node);
    let (info, proposer) = if verify {
        let (info, block) = client.verified_account(&address).await?;
        (info, Some(block.header.proposer.address()))
    } else {
        (client.account(&address).await?, None)
    };
    let stake = client.stake(&address).await?;
    let value = serde_json::json!({"account": info, "stake": stake, "verified_against_block_of": proposer.map(|p| p.to_string())});
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
        if let Some(p) = proposer {
            out += &format!(
                "\nproof: verified against the state root of block {} signed by {p}",
                info.height
            );
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
    let tx = client
        .transaction(&hash)
        .await?
        .with_context(|| format!("no committed transaction {hash}"))?;
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
