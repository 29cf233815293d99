//! The auditor daemon: registers as an auditor with stake, re-executes the jobs the chain
//! assigns it for audit, attests or challenges, and plays every dispute it is part of to its
//! end by itself (see [`crate::dispute`]).

use crate::dispute::{Fault, Player};
use crate::{load_named, play, register, Poster, ProviderError};
use piazza_client::Client;
use piazza_ledger::tx::Message;
use piazza_ledger::verify;
use piazza_primitives::{Address, Amount, SecretKey};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct AuditorConfig {
    pub node_url: String,
    pub key: SecretKey,
    pub models_dir: PathBuf,
    /// Model names (as registered on chain) to audit.
    pub audit: Vec<String>,
    /// Bonded when registering.
    pub stake: Amount,
    /// Threads per re-execution.
    pub threads: usize,
    pub poll_interval: Duration,
    /// Deliberate misbehaviour for tests and demos (a faulty auditor challenges honest
    /// results and loses its bonds).
    pub fault: Fault,
}

impl AuditorConfig {
    pub fn address(&self) -> Address {
        self.key.public_key().address()
    }
}

/// Registers the auditor (bonding `config.stake`) unless it already is one.
pub async fn ensure_registered(
    client: &Client,
    config: &AuditorConfig,
) -> Result<(), ProviderError> {
    if client.auditor(&config.address()).await?.is_some() {
        return Ok(());
    }
    register(
        client,
        &config.key,
        Message::Verify(verify::Msg::RegisterAuditor {
            models: config.audit.clone(),
            stake: config.stake,
        }),
        "auditor",
    )
    .await
}

/// Runs until `shutdown` turns true.
pub async fn run(
    config: AuditorConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProviderError> {
    let client = Client::new(&config.node_url);
    let models = Arc::new(load_named(&client, &config.models_dir, &config.audit).await?);
    ensure_registered(&client, &config).await?;
    let chain_id = client.status().await?.chain_id;
    let poster = Poster::new(Client::new(&config.node_url), config.key.clone(), chain_id);
    let me = config.address();
    if !config.fault.is_none() {
        tracing::warn!(fault = ?config.fault, "FAULT INJECTION: this auditor misbehaves on purpose");
    }
    let player = Player::new(me, models, config.threads, config.fault.clone());
    tracing::info!(auditor = %me, models = ?config.audit, "auditor running");
    loop {
        play(&client, &player, &poster, &me).await;
        tokio::select! {
            _ = tokio::time::sleep(config.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    Ok(())
}
