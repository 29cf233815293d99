//! Verification from the command line: the auditor daemon and dispute state.

use crate::market::{fault, DaemonArgs};
use crate::{ClientArgs, KeyArgs, NodeUrlArgs};
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
        /// Key name to look up when no auditor is given.
        #[arg(long, default_value = "auditor")]
        from: String,
        /// Keystore to look key names up in [default: as for `keys`].
        #[arg(long, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// Run the auditor daemon: register if needed (bonding stake), re-execute the jobs drawn for
    /// audit, attest or challenge, and play every dispute to its end.
    Run {
        #[command(flatten)]
        node: NodeUrlArgs,
        #[command(flatten)]
        key: KeyArgs,
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
            node,
            key,
            models,
            stake,
            daemon,
        } => {
            let key = crate::query::signer(&Client::new(&node.node), &key).await?;
            let config = piazza_provider::auditor::AuditorConfig {
                node_url: node.node.clone(),
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
            outln!("auditor {} audits {:?}", config.address(), config.audit);
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

/// What a job's state says about a dispute that is no longer open (the chain keeps no record of
/// ended disputes, only their effect on the job).
pub(crate) fn outcome(job: &piazza_api::JobInfo) -> String {
    let id = job.id;
    use piazza_api::JobState;
    match (job.status, job.hold.as_deref()) {
        (JobState::Failed, _) => format!(
            "job {id} failed: its result was proven wrong; the provider was slashed and the escrow refunded"
        ),
        (JobState::Settled, _) => format!(
            "job {id} settled: its result stands (no dispute, or the provider won or drew it)"
        ),
        (JobState::Posted, Some(hold)) => {
            format!("job {id} is posted and held ({hold}); no dispute is open")
        }
        (JobState::Posted, None) => {
            format!("job {id} is posted, in its challenge window; no dispute is open")
        }
        (status, _) => format!("job {id} is {status}; no result to dispute yet"),
    }
}

pub async fn dispute(args: &ClientArgs, job: u64) -> Result<()> {
    let client = Client::new(&args.node);
    let Some(dispute) = client.dispute(job).await? else {
        let info = client
            .job(job)
            .await?
            .with_context(|| format!("no job {job}"))?;
        let value = serde_json::json!({
            "job": job,
            "open": false,
            "status": info.status,
            "hold": info.hold,
            "outcome": outcome(&info),
        });
        crate::query::print(args.json, &value, || outcome(&info));
        return Ok(());
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, hold: Option<&str>) -> piazza_api::JobInfo {
        let mut value = serde_json::json!({
            "id": 3, "client": "pz1c", "model": "m", "input": "", "params": {
                "max_tokens": 0, "temperature_milli": 0, "top_k": 0, "top_p_milli": 0,
                "repetition_penalty_milli": 0, "seed": 0, "chat": false},
            "max_units": 1, "max_price": "1", "submitted_height": 1, "status": status,
            "missed": [],
        });
        if let Some(hold) = hold {
            value["hold"] = hold.into();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_ended_dispute_shows_the_jobs_outcome() {
        assert!(outcome(&job("failed", None)).contains("proven wrong"));
        assert!(outcome(&job("settled", None)).contains("result stands"));
        assert!(outcome(&job("posted", Some("audit"))).contains("held (audit)"));
        assert!(outcome(&job("assigned", None)).contains("no result"));
    }
}
