//! The compute market from the command line: models, jobs, providers; and the engine directly.

use crate::{ClientArgs, KeyArgs, NodeUrlArgs, SignerArgs};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use piazza_client::Client;
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::tx::Message;
use piazza_primitives::chat::{ChatInput, ChatMessage, ChatRole};
use piazza_primitives::{Address, Amount};
use piazza_provider::ProviderConfig;
use std::path::PathBuf;
use std::time::Duration;

const JOB_WAIT: Duration = Duration::from_secs(300);

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a job, escrowing its maximum price.
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        signer: SignerArgs,
        /// The model, by its on-chain name (see `piazza models`).
        #[arg(long)]
        model: String,
        /// The input text (at most 16 KiB): a sentence to embed or a prompt.
        #[arg(long)]
        input: String,
        /// Tokens to generate (generation models).
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// Sampling seed (generation models; the same seed and input give the same text).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sampling temperature (generation models); 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Units of work to pay for at most [default: 256 for embeddings, max-tokens for generation].
        #[arg(long)]
        max_units: Option<u64>,
        /// Escrow in PZA [default: the model's price floor × max units × 4].
        #[arg(long)]
        max_price: Option<String>,
        /// Send the input as one user message (the canonical chat encoding), which the provider
        /// wraps in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// With --chat: a system message before the user's.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Blocks the provider has to answer [default: the chain's].
        #[arg(long, default_value_t = 0)]
        deadline_blocks: u32,
        /// Run on this many distinct providers (escrow per provider); equal results settle at
        /// once, differences are disputed.
        #[arg(long, default_value_t = 1)]
        redundancy: u8,
    },
    /// A job's state, result and receipt.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The job's id.
        id: u64,
    },
    /// Re-execute a posted job here (its model found as a provider finds it) and compare the
    /// output hash and trace root with the posted ones: `match` (exit 0) or `MISMATCH`.
    Verify(crate::job_verify::VerifyArgs),
}

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// Register as a provider, bonding stake.
    Register {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Most PZA the transaction may pay in fees.
        #[arg(long, default_value = "1")]
        max_fee: String,
        #[command(flatten)]
        offer: OfferArgs,
    },
    /// A provider's record, stake and assigned jobs.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Address or key name [default: the `--from` key].
        provider: Option<String>,
        /// Key name to look up when no provider is given.
        #[arg(long, default_value = "provider")]
        from: String,
        /// Keystore to look key names up in [default: as for `keys`].
        #[arg(long, env = "PIAZZA_KEYSTORE")]
        keystore: Option<PathBuf>,
    },
    /// Run the provider daemon: load models, register if needed, execute assigned jobs.
    Run {
        #[command(flatten)]
        node: NodeUrlArgs,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        offer: OfferArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args, Clone)]
pub struct OfferArgs {
    /// Models to serve, comma-separated on-chain names.
    #[arg(long, value_delimiter = ',', default_value = piazza_provider::models::MINILM)]
    pub models: Vec<String>,
    /// Price per unit of work, in PZA.
    #[arg(long, default_value = "0.000001")]
    pub price: String,
    /// Jobs held at once (assigned and not yet answered).
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// PZA bonded at registration.
    #[arg(long, default_value = "1000")]
    pub stake: String,
    /// Where clients can reach this provider (informational, published on chain).
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Declared speed for `provider register`: work units finished per block for one job
    /// (result deadlines grow with the work at this speed). `provider run` measures it instead.
    #[arg(long, default_value_t = 1)]
    pub units_per_block: u32,
}

/// What every daemon that runs models takes (provider and auditor).
#[derive(Args, Clone)]
pub struct DaemonArgs {
    /// Where the model files are [default: $PIAZZA_MODELS_DIR or ~/.cache/piazza/models].
    #[arg(long, env = "PIAZZA_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Threads per job.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How often to ask the node for work, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
    /// FOR TESTS AND DEMOS ONLY: misbehave on purpose (repeatable):
    /// `corrupt-op=N|first|middle|last` (a wrong trace step), `wrong-output` (a wrong last step
    /// and output), `wrong-ids` (runs a slightly different input), `stop-early` (one generated
    /// token short), `silent-in-dispute` (stop answering after a dispute's first round). A faulty
    /// daemon gets slashed.
    #[arg(long)]
    pub fault: Vec<String>,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Jobs run at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Where posted results are journaled [default: ~/.piazza/provider-journal].
    #[arg(long)]
    pub journal: Option<PathBuf>,
}

/// The `--fault` values as one fault.
pub fn fault(specs: &[String]) -> Result<piazza_provider::dispute::Fault> {
    let mut fault = piazza_provider::dispute::Fault::default();
    for spec in specs {
        fault.add(spec).map_err(anyhow::Error::msg)?;
    }
    Ok(fault)
}

pub fn provider_config(
    node: &str,
    key: piazza_primitives::SecretKey,
    offer: &OfferArgs,
    run: &RunArgs,
) -> Result<ProviderConfig> {
    Ok(ProviderConfig {
        node_url: node.to_string(),
        key,
        models_dir: run
            .daemon
            .models_dir
            .clone()
            .unwrap_or_else(piazza_engine::models_dir),
        serve: offer.models.clone(),
        price_per_unit: offer.price.parse()?,
        capacity: offer.capacity,
        stake: offer.stake.parse()?,
        endpoint: offer.endpoint.clone(),
        concurrency: run.concurrency,
        threads: run.daemon.threads,
        journal_dir: run
            .journal
            .clone()
            .unwrap_or_else(|| crate::config::home().join("provider-journal")),
        poll_interval: Duration::from_millis(run.daemon.poll_ms.max(10)),
        fault: fault(&run.daemon.fault)?,
    })
}

pub async fn models(args: &ClientArgs) -> Result<()> {
    let models = Client::new(&args.node).models().await?;
    crate::query::print(args.json, &models, || {
        models
            .iter()
            .map(|m| {
                format!(
                    "{}\t{}\t{}\tfloor {} PZA/unit\t{} providers\tweights {}",
                    m.name,
                    m.kind,
                    m.architecture,
                    crate::query::pza(&m.price_floor).trim_end_matches(" PZA"),
                    m.providers.len(),
                    m.weights_commitment
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

pub async fn job(command: JobCommand) -> Result<()> {
    match command {
        JobCommand::Submit {
            client: args,
            signer,
            model,
            input,
            max_tokens,
            seed,
            temperature,
            max_units,
            max_price,
            chat,
            system,
            deadline_blocks,
            redundancy,
        } => {
            let input = if chat {
                chat_input(system, input)?
            } else {
                input.into_bytes()
            };
            anyhow::ensure!(
                input.len() <= compute::JOB_INPUT_BYTES_MAX,
                "--input is {} bytes as a job input; a job's input is at most {} bytes ({} KiB)",
                input.len(),
                compute::JOB_INPUT_BYTES_MAX,
                compute::JOB_INPUT_BYTES_MAX / 1024
            );
            let client = Client::new(&args.node);
            let key = crate::query::signer(&client, &signer.key).await?;
            let record = client
                .models()
                .await?
                .into_iter()
                .find(|m| m.name == model)
                .with_context(|| {
                    format!("the chain has no model `{model}` (see `piazza models`)")
                })?;
            let generation = record.kind == "generation";
            let max_units = max_units.unwrap_or(if generation {
                max_tokens as u64
            } else {
                piazza_engine::MAX_TOKENS as u64
            });
            let max_price = match max_price {
                Some(p) => p.parse()?,
                None => Amount::new(record.price_floor.parse::<u128>()? * max_units as u128 * 4),
            };
            anyhow::ensure!(
                temperature.is_finite() && temperature >= 0.0,
                "temperature must be a non-negative number"
            );
            let params = JobParams {
                max_tokens: if generation { max_tokens } else { 0 },
                temperature_milli: (temperature * 1000.0).round() as u32,
                seed,
                chat,
                deadline_blocks,
                redundancy,
                ..JobParams::default()
            };
            let msg = compute::Msg::SubmitJob {
                model,
                input,
                params,
                max_units,
                max_price,
            };
            let (id, _) = client.submit_job(&key, msg, JOB_WAIT).await?;
            if !signer.wait {
                crate::query::print(args.json, &serde_json::json!({"job": id}), || {
                    format!("submitted job {id}")
                });
                return Ok(());
            }
            let job = client.wait_for_job(id, JOB_WAIT).await?;
            print_job(&args, &job)
        }
        JobCommand::Verify(args) => crate::job_verify::run(args).await,
        JobCommand::Show { client: args, id } => {
            let job = Client::new(&args.node)
                .job(id)
                .await?
                .with_context(|| format!("no job {id}"))?;
            print_job(&args, &job)
        }
    }
}

/// A job's output in readable form: the text of a generation, the vector of an embedding.
pub fn decoded_output(job: &piazza_api::JobInfo) -> Option<serde_json::Value> {
    let bytes = hex::decode(&job.result.as_ref()?.output).ok()?;
    if job.params.max_tokens > 0 {
        return Some(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    piazza_provider::models::embedding_from_bytes(&bytes).map(|v| serde_json::json!(v))
}

fn print_job(args: &ClientArgs, job: &piazza_api::JobInfo) -> Result<()> {
    let output = decoded_output(job);
    let value = serde_json::json!({"job": job, "output": output});
    crate::query::print(args.json, &value, || {
        let mut out = format!("job {} ({}): {}", job.id, job.model, job.status);
        let label = if job.status == piazza_api::JobState::Failed {
            "rejected output"
        } else {
            "output"
        };
        if let Some(hold) = &job.hold {
            out += &format!(" (held: {hold})");
        }
        match &output {
            Some(serde_json::Value::String(text)) => out += &format!("\n{label}: {text}"),
            Some(serde_json::Value::Array(v)) => {
                let head: Vec<String> = v
                    .iter()
                    .take(4)
                    .map(|x| format!("{:.6}", x.as_f64().unwrap_or(0.0)))
                    .collect();
                out += &format!(
                    "\n{label}: embedding [{} dims] [{}, ...]",
                    v.len(),
                    head.join(", ")
                );
            }
            _ => {}
        }
        if let Some(r) = &job.receipt {
            out += &format!(
                "\nreceipt: provider {}\n         price {} (refund {})\n         input {}\n         output {}\n         trace root {}\n         height {}",
                r.provider,
                crate::query::pza(&r.price),
                crate::query::pza(&r.refund),
                r.input_hash,
                r.output_hash,
                r.trace_root,
                r.height
            );
        }
        out
    });
    anyhow::ensure!(
        job.status != piazza_api::JobState::Expired,
        "job {} expired: no provider served it; the escrow was refunded",
        job.id
    );
    anyhow::ensure!(
        job.status != piazza_api::JobState::Failed,
        "job {} failed: its result was proven wrong in a dispute; the escrow was refunded",
        job.id
    );
    Ok(())
}

pub async fn provider(command: ProviderCommand) -> Result<()> {
    match command {
        ProviderCommand::Register {
            client: args,
            key,
            max_fee,
            offer,
        } => {
            let client = Client::new(&args.node);
            let key = crate::query::signer(&client, &key).await?;
            let offer_msg = Offer {
                models: offer.models.clone(),
                price_per_unit: offer.price.parse()?,
                capacity: offer.capacity,
                endpoint: offer.endpoint.clone(),
                units_per_block: offer.units_per_block,
            };
            let tx = client
                .build(
                    &key,
                    vec![Message::Compute(compute::Msg::RegisterProvider {
                        offer: offer_msg,
                        stake: offer.stake.parse()?,
                    })],
                    max_fee.parse()?,
                )
                .await?;
            let hash = client.submit(&tx).await?;
            let receipt = client.wait_for_receipt(&hash, JOB_WAIT).await?;
            crate::query::print(args.json, &receipt, || match &receipt.error {
                None => format!(
                    "registered {} as a provider at height {}",
                    key.public_key().address(),
                    receipt.height
                ),
                Some(e) => format!("registration failed: {} ({}) {}", e.name, e.code, e.message),
            });
            anyhow::ensure!(receipt.error.is_none(), "registration failed");
            Ok(())
        }
        ProviderCommand::Status {
            client: args,
            provider,
            from,
            keystore,
        } => {
            let address: Address =
                crate::query::resolve(provider.as_deref().unwrap_or(&from), keystore)?;
            let client = Client::new(&args.node);
            let info = client
                .provider(&address)
                .await?
                .with_context(|| format!("{address} is not a registered provider"))?;
            let jobs = client.provider_jobs(&address).await?;
            let value = serde_json::json!({"provider": info, "assigned_jobs": jobs});
            crate::query::print(args.json, &value, || provider_text(&info, &jobs));
            Ok(())
        }
        ProviderCommand::Run {
            node,
            key,
            offer,
            run,
        } => {
            let client = Client::new(&node.node);
            let key = crate::query::signer(&client, &key).await?;
            let config = provider_config(&node.node, key, &offer, &run)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let daemon = tokio::spawn(piazza_provider::run(config, stopped));
            tokio::select! {
                _ = crate::devnet::shutdown_signal() => {
                    let _ = stop.send(true);
                }
                _ = std::future::pending::<()>() => {}
            }
            daemon.await??;
            Ok(())
        }
    }
}

/// A chat job's input: the optional system message and the user's, in the canonical chat
/// encoding (the gateway encodes the same conversation to the same bytes).
fn chat_input(system: Option<String>, user: String) -> Result<Vec<u8>> {
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(ChatMessage::new(ChatRole::System, system));
    }
    messages.push(ChatMessage::new(ChatRole::User, user));
    Ok(ChatInput::new(messages)?.encode())
}

/// A provider's record as text. The chain counts every posted result in `jobs_completed`, also
/// those later proven wrong (`frauds`); those are not shown as completed.
pub(crate) fn provider_text(info: &piazza_api::ProviderInfo, assigned: &[u64]) -> String {
    format!(
        "provider:  {}\nmodels:    {}\nprice:     {} per unit\nstake:     {}\ncapacity:  {} ({} active)\ncompleted: {}\nfrauds:    {}\nmissed:    {}\nassigned:  {:?}",
        info.address,
        info.models.join(", "),
        crate::query::pza(&info.price_per_unit),
        crate::query::pza(&info.stake),
        info.capacity,
        info.active_jobs,
        info.jobs_completed.saturating_sub(info.frauds),
        info.frauds,
        info.deadlines_missed,
        assigned
    )
}

pub fn embed(texts: &[String], threads: usize, json: bool) -> Result<()> {
    let embedder = piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm"))
        .context("loading MiniLM (run scripts/fetch-models.sh)")?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs, threads)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string(
                &serde_json::json!({"model": piazza_provider::models::MINILM, "embeddings": vectors})
            )?
        );
    } else {
        for (text, v) in texts.iter().zip(&vectors) {
            outln!(
                "{text}\n  [{}]",
                v.iter()
                    .map(|x| format!("{x:.6}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

pub fn trace(model: &str, text: &str, threads: usize, json: bool) -> Result<()> {
    anyhow::ensure!(
        model == piazza_provider::models::MINILM || model == "minilm",
        "unknown model `{model}` (available: {})",
        piazza_provider::models::MINILM
    );
    let embedder = piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm"))
        .context("loading MiniLM (run scripts/fetch-models.sh)")?;
    let tokens = embedder.tokenize(&[text])?;
    let batch = piazza_engine::Batch::pack(&tokens)?;
    let (_, trace) = embedder.run_traced(&batch, piazza_engine::Compute::new(threads))?;
    let root = piazza_primitives::Hash(trace.root).to_hex();
    let ops = trace.step_hashes.len();
    crate::query::print(
        json,
        &serde_json::json!({"model": model, "tokens": tokens[0].len(), "operators": ops, "trace_root": root}),
        || {
            format!(
                "model:      {model}\ntokens:     {}\noperators:  {ops}\ntrace root: {root}",
                tokens[0].len()
            )
        },
    );
    Ok(())
}

pub fn generate(
    prompt: &str,
    max_tokens: usize,
    sampling: piazza_llm::SamplingParams,
    chat: bool,
    threads: usize,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        sampling.temperature.is_finite() && sampling.temperature >= 0.0,
        "temperature must be a non-negative number"
    );
    let path = piazza_llm::default_model_path();
    let generator = piazza_llm::Generator::load(&path)
        .with_context(|| format!("loading {} (run scripts/fetch-models.sh)", path.display()))?;
    let prompt_ids = if chat {
        piazza_llm::chat_prompt_ids(
            &generator,
            &[piazza_llm::Message {
                role: "user".into(),
                content: prompt.to_string(),
            }],
        )?
    } else {
        generator.tokenize(prompt)?
    };
    let params = piazza_llm::GenerateParams {
        max_tokens: max_tokens.max(1),
        sampling,
        stop: Vec::new(),
        stop_at_eos: true,
    };
    let started = std::time::Instant::now();
    let mut text = String::new();
    let generation = generator.generate(&prompt_ids, &params, threads, |event| {
        if json {
            text.push_str(&event.text);
        } else {
            crate::out::text(&event.text);
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let trace_root = piazza_primitives::Hash(generation.trace_root()).to_hex();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "model": piazza_provider::models::SMOLLM2,
                "text": text,
                "prompt_tokens": generation.prompt_tokens,
                "new_tokens": generation.ids.len(),
                "finish": format!("{:?}", generation.finish),
                "trace_root": trace_root,
                "operators": generation.step_count(),
                "seconds": seconds,
            })
        );
        return Ok(());
    }
    outln!();
    eprintln!(
        "[{} prompt tokens, {} new tokens in {seconds:.2} s ({:.1} tokens/s), finish {:?}, trace root {} over {} operators]",
        generation.prompt_tokens,
        generation.ids.len(),
        generation.ids.len() as f64 / seconds,
        generation.finish,
        trace_root,
        generation.step_count()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_jobs_send_the_canonical_chat_input() {
        let plain = chat_input(None, "Hi".into()).unwrap();
        assert_eq!(plain, ChatInput::user("Hi").unwrap().encode());
        let with_system = chat_input(Some("Be brief.".into()), "Hi".into()).unwrap();
        let messages = ChatInput::decode(&with_system).unwrap().into_messages();
        assert_eq!(
            messages,
            [
                ChatMessage::new(ChatRole::System, "Be brief."),
                ChatMessage::new(ChatRole::User, "Hi"),
            ]
        );
        let too_long = "x".repeat(piazza_primitives::chat::CHAT_CONTENT_BYTES_MAX + 1);
        let error = chat_input(None, too_long).unwrap_err().to_string();
        assert!(error.contains("more than the limit"), "{error}");
    }

    #[test]
    fn provider_status_shows_frauds_and_does_not_count_them_completed() {
        let info = piazza_api::ProviderInfo {
            address: "pz1cheat".into(),
            models: vec!["m".into()],
            price_per_unit: "1000".into(),
            capacity: 4,
            endpoint: String::new(),
            active_jobs: 0,
            jobs_completed: 3,
            deadlines_missed: 0,
            frauds: 1,
            stake: "950000000000".into(),
            units_per_block: 2,
        };
        let text = provider_text(&info, &[]);
        assert!(text.contains("\ncompleted: 2\n"), "{text}");
        assert!(text.contains("\nfrauds:    1\n"), "{text}");
    }
}
