//! Verification from the command line: the auditor daemon and dispute state.

use crate::market::{fault, DaemonArgs};
use crate::{ClientArgs, SignerArgs};
use anyhow::{Context, Result};
use clap::Subcommand;
use piazza_client::Client;
use piazza_primitives::Address;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum AuditorCommand {
    /// An auditor's record and stake.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Address or key name [default: the `--from` key].
        auditor: Option<String>,
        #[arg(long, default_value = "auditor")]
        from: String,
        #[arg(long, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// Run the auditor daemon: register if needed (bonding stake), re-execute the jobs drawn for
    /// audit, attest or challenge, and play every dispute to its end.
    Run {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// Models to audit, comma-separated on-chain names.
        #[arg(long, value_delimiter = ',', default_value = piazza_provider::models::MINILM)]
        models: Vec<String>,
        /// PZA bonded at registration.
        #[arg(long, default_value = "1000")]
        stake: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

pub async fn auditor(command: AuditorCommand) -> Result<()> {
    match command {
        AuditorCommand::Status {
            client: args,
            auditor,
            from,
            keystore,
        } => {
            let address: Address =
                crate::query::resolve(auditor.as_deref().unwrap_or(&from), keystore)?;
            let client = Client::new(&args.node);
            let info = client
                .auditor(&address)
                .await?
                .with_context(|| format!("{address} is not a registered auditor"))?;
            let tasks = client.verify_tasks(&address).await?;
            let value = serde_json::json!({"auditor": info, "tasks": tasks});
            crate::query::print(args.json, &value, || {
                format!(
                    "auditor:    {}\nmodels:     {}\nstake:      {}\nattested:   {}\nchallenged: {}\nmissed:     {}\nopen:       {} audits, {} disputes",
                    info.address,
                    info.models.join(", "),
                    crate::query::pza(&info.stake),
                    info.attested,
                    info.challenged,
                    info.missed,
                    tasks.audits.len(),
                    tasks.disputes.len()
                )
            });
            Ok(())
        }
        AuditorCommand::Run {
            client,
            signer,
            models,
            stake,
            daemon,
        } => {
            let key = crate::query::keystore(signer.keystore.clone())?
                .unlock(&signer.from, &crate::devnet::password())?;
            let config = piazza_provider::auditor::AuditorConfig {
                node_url: client.node.clone(),
                key,
                models_dir: daemon
                    .models_dir
                    .clone()
                    .unwrap_or_else(piazza_engine::models_dir),
                audit: models,
                stake: stake.parse()?,
                threads: daemon.threads,
                poll_interval: Duration::from_millis(daemon.poll_ms.max(10)),
                fault: fault(&daemon.fault)?,
            };
            println!("auditor {} audits {:?}", config.address(), config.audit);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let daemon = tokio::spawn(piazza_provider::auditor::run(config, stopped));
            tokio::select! {
                _ = crate::devnet::shutdown_signal() => {
                    let _ = stop.send(true);
                }
                result = daemon => {
                    result??;
                }
            }
            Ok(())
        }
    }
}

pub async fn dispute(args: &ClientArgs, job: u64) -> Result<()> {
    let dispute = Client::new(&args.node)
        .dispute(job)
        .await?
        .with_context(|| format!("job {job} has no open dispute"))?;
    crate::query::print(args.json, &dispute, || {
        format!(
            "job:        {}\ndefendant:  {} (root {})\nclaimant:   {} (root {})\nphase:      {}{}\nround:      {} at node {}/{}\ndeadline:   height {}",
            dispute.job,
            dispute.defendant.address,
            dispute.defendant.root,
            dispute.claimant.address,
            dispute.claimant.root,
            dispute.phase,
            dispute.step.map(|s| format!(" (step {s})")).unwrap_or_default(),
            dispute.round,
            dispute.node_level,
            dispute.node_index,
            dispute.deadline_height
        )
    });
    Ok(())
}
