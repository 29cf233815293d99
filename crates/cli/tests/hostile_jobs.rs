//! Jobs that could make an honest provider miss a deadline, on a real devnet (100 ms blocks,
//! 400 ms for the long generation):
//! a generation that runs far past the chain's base deadline, an empty input, a prompt longer
//! than the model's context, and a job taken from its provider while it runs.

mod common;

use common::*;
use piazza_api::{JobInfo, JobState, ProviderInfo};
use piazza_client::Client;
use piazza_keystore::Keystore;
use piazza_ledger::compute::{self, JobParams};
use piazza_primitives::{Address, Amount, SecretKey};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SMOLLM2: &str = "smollm2-135m-instruct";
/// A prompt the model continues for as long as it is let (greedy: the same text every run).
const COUNTING: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,";
/// The devnet's provider price per unit (base units).
const PRICE_PER_UNIT: u128 = 1_000;
/// Longest wait for a job to end: a declined job waits `queue_timeout_blocks` (300) blocks of
/// 100 ms for another provider before it expires.
const JOB_WAIT: Duration = Duration::from_secs(90);
/// The long-generation test's block interval: its deadline in blocks lasts long enough in
/// wall-clock time for a loaded CI box's generation.
const LONG_BLOCK_INTERVAL_MS: u64 = 400;

/// One SmolLM2 devnet at a time: two machines' worth of generation on a small CI box would
/// make each slower than the speed its provider measured alone.
static ONE_DEVNET: Mutex<()> = Mutex::new(());

fn one_devnet() -> std::sync::MutexGuard<'static, ()> {
    ONE_DEVNET
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A SmolLM2 devnet (no auditor) for one test; says how long the test took when dropped.
struct Chain {
    devnet: Devnet,
    client: Client,
    runtime: tokio::runtime::Runtime,
    dev: SecretKey,
    dir: tempfile::TempDir,
    started: Instant,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        eprintln!(
            "test wall time {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl Chain {
    fn start(extra: &[&str]) -> Chain {
        let one = one_devnet();
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        // No storage providers: these tests need none, and their passes take CPU from the
        // generation the deadlines are measured against.
        let mut args = vec![
            "--no-auditor",
            "--models",
            SMOLLM2,
            "--storage-providers",
            "0",
        ];
        args.extend_from_slice(extra);
        let devnet = start_devnet_with(dir.path(), &args);
        let client = Client::new(&devnet.url);
        let dev = Keystore::open(&dir.path().join("keys"))
            .unwrap()
            .unlock("dev", "")
            .unwrap();
        Chain {
            devnet,
            client,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            dev,
            dir,
            started,
            _one: one,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn provider(&self, address: &Address) -> ProviderInfo {
        self.runtime
            .block_on(self.client.provider(address))
            .unwrap()
            .expect("the provider is registered")
    }

    fn job(&self, id: u64) -> JobInfo {
        self.runtime
            .block_on(self.client.job(id))
            .unwrap()
            .expect("the job exists")
    }

    fn balance(&self, address: &Address) -> u128 {
        balance_of(&self.client, &self.runtime, &address.to_string())
    }

    fn generation(&self, input: &[u8], tokens: u32, escrow: u128) -> compute::Msg {
        compute::Msg::SubmitJob {
            model: SMOLLM2.into(),
            input: input.to_vec(),
            params: JobParams {
                max_tokens: tokens,
                ..JobParams::default()
            },
            max_units: u64::from(tokens),
            max_price: Amount::new(escrow),
        }
    }

    /// Submits as `dev`; the job's id and the submission's height and fee.
    fn submit(&self, message: compute::Msg) -> (u64, u64, u128) {
        let (id, receipt) = self
            .runtime
            .block_on(
                self.client
                    .submit_job(&self.dev, message, Duration::from_secs(20)),
            )
            .unwrap();
        (id, receipt.height, receipt.fee_paid.parse().unwrap())
    }

    /// Polls job `id` until it ends; also returns the deadline it had while assigned.
    fn wait_for_end(&self, id: u64) -> (JobInfo, Option<u64>) {
        self.wait_for_end_within(id, JOB_WAIT)
    }

    /// [`Chain::wait_for_end`], waiting at most `wait`.
    fn wait_for_end_within(&self, id: u64, wait: Duration) -> (JobInfo, Option<u64>) {
        let mut deadline = None;
        let mut job = self.job(id);
        wait_until(&format!("job {id} ends"), wait, || {
            job = self.job(id);
            deadline = job.deadline_height.or(deadline);
            job.status.is_final()
        });
        (job, deadline)
    }

    /// The receipts of every transaction in blocks `from..=to`.
    fn receipts(&self, from: u64, to: u64) -> Vec<piazza_api::ReceiptInfo> {
        let mut receipts = Vec::new();
        for height in from..=to {
            let block = self
                .runtime
                .block_on(self.client.block(height))
                .unwrap()
                .unwrap();
            for hash in &block.tx_hashes {
                let hash: piazza_primitives::Hash = hash.parse().unwrap();
                receipts.push(
                    self.runtime
                        .block_on(self.client.receipt(&hash))
                        .unwrap()
                        .unwrap(),
                );
            }
        }
        receipts
    }
}

fn devnet_provider(dir: &Path) -> Address {
    Keystore::open(&dir.join("keys"))
        .unwrap()
        .info("provider")
        .unwrap()
        .address
}

#[test]
fn a_generation_far_longer_than_the_base_deadline_settles_and_nobody_is_slashed() {
    let chain = Chain::start(&["--block-interval-ms", &LONG_BLOCK_INTERVAL_MS.to_string()]);
    let provider = devnet_provider(chain.path());
    let dev = chain.dev.public_key().address();
    let (before, dev_before) = (chain.provider(&provider), chain.balance(&dev));
    let base = compute::Params::default().job_deadline_blocks;

    // The devnet's provider shares its speed among 16 jobs and declares the chain's minimum of
    // one unit per block: 400 tokens get 420 blocks (168 s at 400 ms), so the provider keeps
    // its deadline down to 2.5 tokens/s (a 2-core box compiling on both cores generated under
    // 5 tokens/s and missed 220 blocks of 200 ms). The run takes more than the 20-block base
    // deadline (8 s) on any machine slower than 50 tokens/s.
    let tokens = 400u32;
    let escrow = 2 * PRICE_PER_UNIT * u128::from(tokens);
    let (id, submitted, fee) = chain.submit(chain.generation(COUNTING.as_bytes(), tokens, escrow));
    // The wait covers the whole deadline the job gets, and a few blocks for the result and the
    // poll.
    let deadline_ms = (base + u64::from(tokens) + 20) * LONG_BLOCK_INTERVAL_MS;
    let (job, deadline) = chain.wait_for_end_within(id, Duration::from_millis(deadline_ms));

    assert_eq!(job.status, JobState::Settled, "{job:?}");
    let result = job.result.as_ref().unwrap();
    assert_eq!(result.work_units, u64::from(tokens), "the count goes on");
    // Assigned at the next block: under a fixed base deadline this result would have been late.
    assert!(
        result.posted_height > submitted + 1 + base,
        "the generation took {} blocks, not more than the base deadline of {base}: the test \
         proves nothing on a machine this fast",
        result.posted_height - submitted
    );
    let deadline = deadline.expect("the job was seen assigned");
    assert!(result.posted_height <= deadline);
    assert!(
        deadline > submitted + 1 + base,
        "the deadline follows the work"
    );
    assert!(job.missed.is_empty());
    let after = chain.provider(&provider);
    assert_eq!(
        after.stake, before.stake,
        "the honest provider is not slashed"
    );
    assert_eq!(after.deadlines_missed, 0);
    assert_eq!(after.jobs_completed, before.jobs_completed + 1);
    // The client pays the tokens generated at the provider's price, and the fee; the rest of
    // the escrow comes back.
    let receipt = job.receipt.as_ref().unwrap();
    let price: u128 = receipt.price.parse().unwrap();
    assert_eq!(price, u128::from(tokens) * PRICE_PER_UNIT);
    assert_eq!(receipt.refund.parse::<u128>().unwrap(), escrow - price);
    assert_eq!(dev_before - chain.balance(&dev), price + fee);
    eprintln!(
        "{tokens} tokens: submitted at {submitted}, posted at {}, deadline {deadline}",
        result.posted_height
    );
}

#[test]
fn hostile_prompts_are_refused_or_declined_and_never_slash_the_provider() {
    let chain = Chain::start(&[]);
    let provider = devnet_provider(chain.path());
    let dev = chain.dev.public_key().address();

    // An empty input is refused at admission: an error that says why, no job, nothing escrowed,
    // no fee.
    let (dev_before, escrow_before) = (chain.balance(&dev), chain.balance(&compute::escrow()));
    let refused = Command::new(PIAZZA)
        .args(["job", "submit", "--model", SMOLLM2, "--input", ""])
        .args(["--node", &chain.devnet.url])
        .env("PIAZZA_KEYSTORE", chain.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("input is empty"), "{stderr}");
    let error = chain
        .runtime
        .block_on(chain.client.submit_job(
            &chain.dev,
            chain.generation(b"", 8, 8 * PRICE_PER_UNIT),
            Duration::from_secs(20),
        ))
        .unwrap_err();
    assert!(error.to_string().contains("input is empty"), "{error}");
    assert!(chain
        .runtime
        .block_on(chain.client.job(0))
        .unwrap()
        .is_none());
    assert_eq!(chain.balance(&dev), dev_before);
    assert_eq!(chain.balance(&compute::escrow()), escrow_before);

    // 16 KiB of digits: more tokens than the model's context. The provider declines it once,
    // unpaid and unpunished; nobody else serves the model, so it expires with a full refund.
    let before = chain.provider(&provider);
    let provider_nonce = chain
        .runtime
        .block_on(chain.client.account(&provider))
        .unwrap()
        .nonce;
    let digits: Vec<u8> = (0..compute::JOB_INPUT_BYTES_MAX)
        .map(|i| b'0' + (i % 10) as u8)
        .collect();
    let escrow = 64 * PRICE_PER_UNIT;
    let dev_before = chain.balance(&dev);
    let (id, submitted, fee) = chain.submit(chain.generation(&digits, 64, escrow));
    let (job, _) = chain.wait_for_end(id);
    assert_eq!(job.status, JobState::Expired, "{job:?}");
    assert!(job.result.is_none());
    assert_eq!(job.missed, vec![provider.to_string()]);
    let end = chain
        .runtime
        .block_on(chain.client.status())
        .unwrap()
        .height;
    let receipts = chain.receipts(submitted, end);
    let declined: Vec<_> = receipts
        .iter()
        .flat_map(|r| &r.events)
        .filter(|e| e.kind == "compute.job_declined" && e.attributes["job"] == id.to_string())
        .collect();
    assert_eq!(declined.len(), 1, "declined once: {declined:?}");
    assert!(
        declined[0].attributes["reason"].contains("exceeds"),
        "{declined:?}"
    );
    // The decline is journaled like a result: a poll that still lists the job before the
    // decline is in a block resends the same transaction (a duplicate the node drops), never
    // a second decline that would cost a fee.
    let refused_again = receipts
        .iter()
        .filter(|r| r.error.as_ref().is_some_and(|e| e.name == "not_assigned"))
        .count();
    assert_eq!(refused_again, 0, "no second decline was sent");
    let after = chain.provider(&provider);
    assert_eq!(after.stake, before.stake);
    assert_eq!(after.deadlines_missed, 0);
    assert_eq!(after.active_jobs, 0);
    // The provider sent nothing but the decline: no result, no run after the decline was in
    // a block.
    let nonce_after = chain
        .runtime
        .block_on(chain.client.account(&provider))
        .unwrap()
        .nonce;
    assert_eq!(nonce_after, provider_nonce + 1);
    assert_eq!(
        dev_before - chain.balance(&dev),
        fee,
        "the escrow came back whole"
    );
}

#[test]
fn a_generation_taken_from_its_provider_stops_running() {
    let chain = Chain::start(&["--no-provider"]);
    // A provider that declares far more speed than it has: every long job misses its deadline
    // and is taken from it while it runs.
    let boaster = funded_key(&chain.devnet, chain.path(), "boaster", "2000");
    cli(
        &chain.devnet,
        chain.path(),
        &[
            "provider",
            "register",
            "--from",
            "boaster",
            "--models",
            SMOLLM2,
            "--capacity",
            "1",
            "--units-per-block",
            "1000000",
        ],
    );
    let mut daemon = Command::new(PIAZZA)
        .args(["provider", "run", "--from", "boaster", "--models", SMOLLM2])
        .args(["--node", &chain.devnet.url, "--poll-ms", "50", "--journal"])
        .arg(chain.path().join("journal"))
        .env("PIAZZA_KEYSTORE", chain.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = daemon.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let daemon = Daemon(daemon);

    let tokens = 2_000u32;
    let (id, submitted, _) = chain.submit(chain.generation(
        COUNTING.as_bytes(),
        tokens,
        PRICE_PER_UNIT * u128::from(tokens),
    ));
    wait_until(
        "the boaster misses its deadline",
        Duration::from_secs(30),
        || !chain.job(id).missed.is_empty(),
    );
    let missed_at = Instant::now();
    let job_field = format!("job={id}");
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("work abandoned") && l.contains(&job_field))
    {
        // A bound on a stall, not a speed check: the provider notices within a poll or two,
        // but CI runs other tests' providers and nodes on the same two cores at once.
        assert!(
            missed_at.elapsed() < Duration::from_secs(60),
            "the provider's log says nothing of abandoning job {id}: {seen:?}"
        );
        if let Ok(line) = log.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    let stopped_after = missed_at.elapsed();
    drop(daemon);
    let job = chain.job(id);
    assert!(job.result.is_none(), "no late result: {job:?}");
    assert_eq!(job.missed, vec![boaster.clone()]);
    let info = chain.provider(&boaster.parse().unwrap());
    assert_eq!(info.deadlines_missed, 1);
    eprintln!(
        "job {id} submitted at {submitted}: generation abandoned {:.1} s after the missed \
         deadline",
        stopped_after.as_secs_f64()
    );
}
