//! The transaction, message, block and receipt decoders over a corpus of mutated inputs: no
//! panic, and whatever decodes re-encodes to exactly the same bytes (the encoding is canonical).
//! The corpus holds a transaction for every message kind of every module ([`KINDS`]: a new
//! variant does not compile until [`kind`] names it, and the tests fail until the corpus
//! carries it). The same checks run under libFuzzer in `fuzz/` (`cargo fuzz run decode_tx`).

mod common;

use common::register;
use piazza_codec::{Decode, Encode};
use piazza_ledger::agents;
use piazza_ledger::bank::{self, shares};
use piazza_ledger::block::{
    prove_randomness, tx_root, Block, BlockHeader, Event, Receipt, TxStatus,
};
use piazza_ledger::compute::{self, JobParams, Offer};
use piazza_ledger::data;
use piazza_ledger::grants;
use piazza_ledger::models::{self, ModelKind, ModelRecord};
use piazza_ledger::sessions;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::storage;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_ledger::verify;
use piazza_primitives::{Address, Amount, Hash, SecretKey, Signature};
use std::collections::BTreeSet;

/// Every message kind of every module, by name.
const KINDS: [&str; 58] = [
    "bank.send",
    "staking.bond",
    "staking.unbond",
    "models.register",
    "compute.register_provider",
    "compute.update_provider",
    "compute.exit_provider",
    "compute.submit_job",
    "compute.post_result",
    "compute.decline_job",
    "verify.register_auditor",
    "verify.exit_auditor",
    "verify.attest",
    "verify.challenge",
    "verify.reveal",
    "verify.arbitrate",
    "models.retire",
    "sessions.open",
    "sessions.top_up",
    "sessions.commit",
    "sessions.reveal",
    "sessions.challenge",
    "sessions.close",
    "shares.issue",
    "shares.transfer",
    "shares.claim",
    "shares.offer",
    "shares.buy",
    "shares.sell",
    "shares.close",
    "storage.register_provider",
    "storage.update_provider",
    "storage.exit_provider",
    "storage.open_deal",
    "storage.end_deal",
    "storage.answer_challenge",
    "grants.grant",
    "grants.revoke",
    "bank.settle_authorization",
    "agents.register",
    "agents.update",
    "agents.deactivate",
    "agents.call",
    "agents.answer",
    "agents.release",
    "agents.rate",
    "data.register_dataset",
    "data.buy_access",
    "data.seal_key",
    "data.create_pool",
    "data.contribute",
    "data.create_label_task",
    "data.join_label_task",
    "data.assign_labels",
    "data.submit_label",
    "data.settle_label_task",
    "agents.paid_call",
    "storage.confirm_upload",
];

/// The kind of a message. The match has no wildcard, so a new variant does not compile until
/// it has an index here and a name in [`KINDS`].
fn kind(message: &Message) -> &'static str {
    let index = match message {
        Message::Bank(bank::Msg::Send { .. }) => 0,
        Message::Bank(bank::Msg::SettleAuthorization { .. }) => 38,
        Message::Agents(m) => match m {
            agents::Msg::Register { .. } => 39,
            agents::Msg::Update { .. } => 40,
            agents::Msg::Deactivate { .. } => 41,
            agents::Msg::Call { .. } => 42,
            agents::Msg::Answer { .. } => 43,
            agents::Msg::Release { .. } => 44,
            agents::Msg::Rate { .. } => 45,
            agents::Msg::PaidCall { .. } => 56,
        },
        Message::Grants(m) => match m {
            grants::Msg::Grant { .. } => 36,
            grants::Msg::Revoke { .. } => 37,
        },
        Message::Staking(staking::Msg::Bond { .. }) => 1,
        Message::Staking(staking::Msg::Unbond { .. }) => 2,
        Message::Models(models::Msg::Register(_)) => 3,
        Message::Models(models::Msg::Retire { .. }) => 16,
        Message::Compute(m) => match m {
            compute::Msg::RegisterProvider { .. } => 4,
            compute::Msg::UpdateProvider { .. } => 5,
            compute::Msg::ExitProvider => 6,
            compute::Msg::SubmitJob { .. } => 7,
            compute::Msg::PostResult { .. } => 8,
            compute::Msg::DeclineJob { .. } => 9,
        },
        Message::Verify(m) => match m {
            verify::Msg::RegisterAuditor { .. } => 10,
            verify::Msg::ExitAuditor => 11,
            verify::Msg::Attest { .. } => 12,
            verify::Msg::Challenge { .. } => 13,
            verify::Msg::Reveal { .. } => 14,
            verify::Msg::Arbitrate { .. } => 15,
        },
        Message::Sessions(m) => match m {
            sessions::Msg::Open { .. } => 17,
            sessions::Msg::TopUp { .. } => 18,
            sessions::Msg::Commit { .. } => 19,
            sessions::Msg::Reveal { .. } => 20,
            sessions::Msg::Challenge { .. } => 21,
            sessions::Msg::Close { .. } => 22,
        },
        Message::Data(m) => match m {
            data::Msg::RegisterDataset { .. } => 46,
            data::Msg::BuyAccess { .. } => 47,
            data::Msg::SealKey { .. } => 48,
            data::Msg::CreatePool { .. } => 49,
            data::Msg::Contribute { .. } => 50,
            data::Msg::CreateLabelTask { .. } => 51,
            data::Msg::JoinLabelTask { .. } => 52,
            data::Msg::AssignLabels { .. } => 53,
            data::Msg::SubmitLabel { .. } => 54,
            data::Msg::SettleLabelTask { .. } => 55,
        },
        Message::Shares(m) => match m {
            shares::Msg::Issue { .. } => 23,
            shares::Msg::Transfer { .. } => 24,
            shares::Msg::Claim { .. } => 25,
            shares::Msg::Offer { .. } => 26,
            shares::Msg::Buy { .. } => 27,
            shares::Msg::Sell { .. } => 28,
            shares::Msg::Close { .. } => 29,
        },
        Message::Storage(m) => match m {
            storage::Msg::RegisterProvider { .. } => 30,
            storage::Msg::UpdateProvider { .. } => 31,
            storage::Msg::ExitProvider => 32,
            storage::Msg::OpenDeal { .. } => 33,
            storage::Msg::EndDeal { .. } => 34,
            storage::Msg::AnswerChallenge { .. } => 35,
            storage::Msg::ConfirmUpload { .. } => 57,
        },
    };
    KINDS[index]
}

/// One message of every kind, with edge values (extreme amounts and ids, empty and non-empty
/// lists and strings) so mutations land on every field's decoder.
fn every_message() -> Vec<Message> {
    let offer = match register("embed", 1_000) {
        Message::Compute(compute::Msg::RegisterProvider { offer, .. }) => offer,
        other => unreachable!("register builds a provider registration, not {other:?}"),
    };
    vec![
        Message::Bank(bank::Msg::Send {
            to: Address([7; 20]),
            amount: Amount::new(u128::MAX),
        }),
        Message::Staking(staking::Msg::Bond {
            role: Role::Auditor,
            amount: Amount::pza(200),
        }),
        Message::Staking(staking::Msg::Unbond {
            role: Role::Validator,
            amount: Amount::ZERO,
        }),
        Message::Models(models::Msg::Register(ModelRecord {
            name: "smol-chat".into(),
            kind: ModelKind::Generation,
            architecture: "llama".into(),
            config_hash: Hash([1; 32]),
            weights_commitment: Hash([2; 32]),
            tokenizer_hash: Hash([3; 32]),
            owner: Address([4; 20]),
            license: String::new(),
            price_floor: Amount::new(1_000),
            numeric: Default::default(),
            files: None,
            lineage: Default::default(),
        })),
        Message::Models(models::Msg::Retire {
            name: "smol-chat".into(),
        }),
        Message::Compute(compute::Msg::RegisterProvider {
            offer: Offer {
                models: vec!["embed".into(), "chat".into()],
                ..offer.clone()
            },
            stake: Amount::pza(500),
        }),
        Message::Compute(compute::Msg::UpdateProvider {
            offer: Offer {
                price_per_unit: Amount::new(u128::MAX),
                capacity: u32::MAX,
                endpoint: String::new(),
                ..offer
            },
        }),
        Message::Compute(compute::Msg::ExitProvider),
        Message::Compute(compute::Msg::SubmitJob {
            model: "chat".into(),
            input: b"[{\"role\":\"user\",\"content\":\"hi\"}]".to_vec(),
            params: JobParams {
                max_tokens: 16,
                temperature_milli: 700,
                top_k: 40,
                top_p_milli: 900,
                repetition_penalty_milli: 1_100,
                seed: u64::MAX,
                chat: true,
                stop: vec!["\n".into(), "END".into()],
                deadline_blocks: 30,
                redundancy: 3,
            },
            max_units: 16,
            max_price: Amount::new(1 << 100),
        }),
        Message::Compute(compute::Msg::PostResult {
            job: u64::MAX,
            output: b"out".to_vec(),
            output_hash: compute::output_hash(b"out"),
            trace_root: Hash([5; 32]),
            work_units: 12,
            input_units: 34,
        }),
        Message::Compute(compute::Msg::DeclineJob {
            job: 4,
            reason: "input longer than the model's context".into(),
        }),
        Message::Verify(verify::Msg::RegisterAuditor {
            models: vec!["embed".into()],
            stake: Amount::pza(100),
        }),
        Message::Verify(verify::Msg::ExitAuditor),
        Message::Verify(verify::Msg::Attest { job: 3 }),
        Message::Verify(verify::Msg::Challenge {
            job: 0,
            trace_root: Hash([9; 32]),
            step_count: u64::MAX,
            ids: Hash([8; 32]),
        }),
        Message::Verify(verify::Msg::Reveal {
            job: 1,
            round: u32::MAX,
            left: Hash([6; 32]),
            right: Hash::ZERO,
            step_count: 40,
            ids: Hash([8; 32]),
        }),
        Message::Verify(verify::Msg::Arbitrate {
            job: 2,
            evidence: (0..300u32).map(|i| i as u8).collect(),
        }),
    ]
    .into_iter()
    .chain(session_messages())
    .chain(agent_messages())
    .chain(storage_messages())
    .chain(share_messages())
    .chain(data_messages())
    .collect()
}

/// Every data message, with edge values.
fn data_messages() -> Vec<Message> {
    vec![
        Message::Data(data::Msg::RegisterDataset {
            blob: Hash([1; 32]),
            schema: "jsonl".into(),
            license: String::new(),
            price: Amount::new(u128::MAX),
            encrypted: true,
        }),
        Message::Data(data::Msg::BuyAccess { dataset: u64::MAX }),
        Message::Data(data::Msg::SealKey {
            dataset: 0,
            buyer: Address([2; 20]),
            sealed_key: vec![7; 48],
        }),
        Message::Data(data::Msg::CreatePool {
            model: "embed".into(),
            dims: 384,
            min_distance_sq: u32::MAX,
            schema: "text".into(),
            license: "cc-by-4.0".into(),
            price: Amount::ZERO,
        }),
        Message::Data(data::Msg::Contribute {
            pool: 1,
            item: Hash([3; 32]),
            validation_job: u64::MAX,
        }),
        Message::Data(data::Msg::CreateLabelTask {
            items: vec![Hash([4; 32]), Hash([5; 32])],
            k: 3,
            reward_per_label: Amount::new(1),
            stake: Amount::new(u128::MAX),
            rule: data::Rule::Tolerance { tolerance: 5 },
            join_blocks: 10,
            label_blocks: u32::MAX,
            price: Amount::new(9),
            license: "cc0".into(),
        }),
        Message::Data(data::Msg::JoinLabelTask { task: 0 }),
        Message::Data(data::Msg::AssignLabels { task: 1 }),
        Message::Data(data::Msg::SubmitLabel {
            task: 2,
            item: u16::MAX,
            value: u32::MAX,
        }),
        Message::Data(data::Msg::SettleLabelTask { task: u64::MAX }),
    ]
}

/// Every share message, with edge values, and a registration carrying files and a lineage.
fn share_messages() -> Vec<Message> {
    use piazza_ledger::bank::assets::AssetId;
    use piazza_ledger::bank::curve::Curve;
    let lineage = models::Lineage {
        parents: vec![
            models::Parent {
                source: models::Source::Model("smol-chat".into()),
                weight_bps: 6_000,
            },
            models::Parent {
                source: models::Source::Dataset(u64::MAX),
                weight_bps: 4_000,
            },
        ],
        royalty_bps: 2_500,
    };
    let record = ModelRecord {
        name: "smol-tuned".into(),
        kind: ModelKind::Generation,
        architecture: "llama".into(),
        config_hash: Hash([1; 32]),
        weights_commitment: Hash([2; 32]),
        tokenizer_hash: Hash([3; 32]),
        owner: Address([4; 20]),
        license: "cc-by-4.0".into(),
        price_floor: Amount::new(1),
        numeric: models::NumericProfile::Quantized,
        files: Some(models::ModelFiles {
            weights: Hash([5; 32]),
            tokenizer: Hash([6; 32]),
            config: Hash([7; 32]),
        }),
        lineage,
    };
    vec![
        Message::Models(models::Msg::Register(record)),
        Message::Shares(shares::Msg::Issue {
            asset: AssetId::Model("smol-tuned".into()),
            supply: u128::MAX,
        }),
        Message::Shares(shares::Msg::Transfer {
            asset: AssetId::Dataset(3),
            to: Address([8; 20]),
            units: 1,
        }),
        Message::Shares(shares::Msg::Claim {
            asset: AssetId::Pool(u64::MAX),
        }),
        Message::Shares(shares::Msg::Offer {
            asset: AssetId::Agent("helper".into()),
            units: 10,
            curve: Curve::Linear {
                base: 1,
                slope: u128::MAX,
                reserve_bps: 10_000,
            },
        }),
        Message::Shares(shares::Msg::Offer {
            asset: AssetId::Model("m".into()),
            units: 10,
            curve: Curve::Fixed { price: 7 },
        }),
        Message::Shares(shares::Msg::Buy {
            offering: 0,
            units: 5,
            max_cost: Amount::new(u128::MAX),
        }),
        Message::Shares(shares::Msg::Sell {
            offering: u64::MAX,
            units: 2,
            min_refund: Amount::ZERO,
        }),
        Message::Shares(shares::Msg::Close { offering: 1 }),
    ]
}

/// One message of every storage kind, with edge values and a real chunk proof.
fn storage_messages() -> Vec<Message> {
    use piazza_primitives::blob;
    let shard = vec![9u8; 3 * blob::CHUNK_BYTES + 100];
    vec![
        Message::Storage(storage::Msg::RegisterProvider {
            stake: Amount::new(u128::MAX),
            capacity_bytes: u64::MAX,
            endpoint: "http://127.0.0.1:7000".into(),
        }),
        Message::Storage(storage::Msg::UpdateProvider {
            capacity_bytes: 1,
            endpoint: String::new(),
        }),
        Message::Storage(storage::Msg::ExitProvider),
        Message::Storage(storage::Msg::OpenDeal {
            blob: storage::BlobRecord {
                id: Hash([3; 32]),
                len_bytes: u64::MAX,
                k: 4,
                m: 2,
                shard_len: 64,
                shard_roots: vec![Hash([4; 32]); 6],
            },
            epochs: 1,
        }),
        Message::Storage(storage::Msg::EndDeal { deal: u64::MAX }),
        Message::Storage(storage::Msg::ConfirmUpload { deal: 0 }),
        Message::Storage(storage::Msg::AnswerChallenge {
            deal: 1,
            shard: u16::MAX,
            chunk_index: 3,
            chunk: blob::chunk(&shard, 3).unwrap().to_vec(),
            path: blob::prove(&shard, 3).unwrap(),
        }),
    ]
}

/// One message of every sessions kind, with signed parts that verify.
fn session_messages() -> Vec<Message> {
    let client = SecretKey::from_seed([21; 32]);
    let provider = SecretKey::from_seed([22; 32]);
    let request = sessions::Request {
        session: 3,
        seq: u64::MAX,
        input: b"hello".to_vec(),
        params: JobParams {
            max_tokens: 8,
            stop: vec!["\n".into()],
            ..JobParams::default()
        },
        max_units: 8,
    };
    let receipt = sessions::Receipt {
        session: 3,
        seq: u64::MAX,
        input_hash: compute::input_hash(b"hello"),
        output_hash: compute::output_hash(b"world"),
        trace_root: Hash([7; 32]),
        units: 8,
        input_units: u64::MAX,
        price: Amount::new(u128::MAX),
    };
    let receipts = vec![receipt.clone(), receipt.clone(), receipt.clone()];
    vec![
        Message::Sessions(sessions::Msg::Open {
            model: "chat".into(),
            owner_key: client.public_key(),
            authorised: Some(SecretKey::from_seed([23; 32]).public_key()),
            deposit: Amount::pza(5),
            max_price_per_unit: Amount::new(u128::MAX),
            expiry_blocks: u64::MAX,
        }),
        Message::Sessions(sessions::Msg::TopUp {
            session: u64::MAX,
            amount: Amount::new(1),
        }),
        Message::Sessions(sessions::Msg::Commit {
            session: 3,
            root: sessions::receipts_root(&receipts),
            count: 3,
            units: 24,
            voucher: sessions::Voucher {
                session: 3,
                seq: 2,
                total: Amount::new(1 << 90),
            }
            .sign(&client),
        }),
        Message::Sessions(sessions::Msg::Reveal {
            session: 3,
            commit: 0,
            index: 2,
            receipt: Box::new(receipt.clone()),
            proof: sessions::prove_receipt(&receipts, 2).unwrap(),
            request: Box::new(request.clone().sign(&client)),
        }),
        Message::Sessions(sessions::Msg::Challenge {
            session: 3,
            commit: u64::MAX,
            receipt: Box::new(receipt.sign(&provider)),
            request: Box::new(request.sign(&client)),
            trace_root: Hash([1; 32]),
            step_count: 40,
            ids: Hash::ZERO,
        }),
        Message::Sessions(sessions::Msg::Close { session: 0 }),
    ]
}

/// One message of every grants and agents kind and a transfer authorization, with edge values.
fn agent_messages() -> Vec<Message> {
    let payer = SecretKey::from_seed([31; 32]);
    let profile = agents::Profile {
        description: "ranks documents by relevance".into(),
        endpoints: vec![
            agents::Endpoint {
                protocol: agents::Protocol::A2a,
                url: "https://agent.example/a2a".into(),
            },
            agents::Endpoint {
                protocol: agents::Protocol::Http,
                url: "http://127.0.0.1:9000".into(),
            },
        ],
        tags: vec!["embedding".into(), "rank".into()],
        price: Amount::new(1),
    };
    let authorization = bank::authorization::TransferAuthorization {
        from: payer.public_key(),
        to: Address([5; 20]),
        amount: Amount::new(u128::MAX),
        valid_after: 0,
        valid_before: u64::MAX,
        nonce: Hash([4; 32]),
    };
    vec![
        Message::Grants(grants::Msg::Grant {
            grantee: SecretKey::from_seed([32; 32]).public_key(),
            scope: grants::Scope {
                kinds: vec![
                    grants::MessageKind {
                        module: 1,
                        message: 0,
                    },
                    grants::MessageKind {
                        module: 255,
                        message: 255,
                    },
                ],
                amount_per_message_max: Amount::new(u128::MAX),
                recipients: Some(vec![Address([1; 20]), Address([2; 20])]),
                agents: None,
                spend_cap: Amount::new(1),
                rate: grants::Rate {
                    messages_max: u32::MAX,
                    per_blocks: u64::MAX,
                },
                expiry_height: u64::MAX,
            },
        }),
        Message::Grants(grants::Msg::Grant {
            grantee: SecretKey::from_seed([33; 32]).public_key(),
            scope: grants::Scope {
                kinds: vec![grants::MessageKind {
                    module: 2,
                    message: 0,
                }],
                amount_per_message_max: Amount::ZERO,
                recipients: None,
                agents: Some(vec![0, u64::MAX]),
                spend_cap: Amount::new(u128::MAX),
                rate: grants::Rate {
                    messages_max: 1,
                    per_blocks: 1,
                },
                expiry_height: 1,
            },
        }),
        Message::Grants(grants::Msg::Revoke {
            grantee: SecretKey::from_seed([32; 32]).public_key(),
        }),
        Message::Bank(bank::Msg::SettleAuthorization {
            signature: authorization.sign(&payer, "fuzz"),
            authorization,
        }),
        Message::Agents(agents::Msg::Register {
            name: "ranker".into(),
            profile: profile.clone(),
            stake: Amount::new(u128::MAX),
            share_asset: Some(piazza_ledger::bank::assets::AssetId::Agent("ranker".into())),
        }),
        Message::Agents(agents::Msg::Update {
            agent: u64::MAX,
            profile: agents::Profile {
                description: String::new(),
                endpoints: vec![],
                tags: vec![],
                price: Amount::ZERO,
            },
        }),
        Message::Agents(agents::Msg::Deactivate { agent: 0 }),
        Message::Agents(agents::Msg::Call {
            agent: 1,
            request_hash: Hash([6; 32]),
            amount: Amount::new(u128::MAX),
            timeout_blocks: u64::MAX,
        }),
        Message::Agents(agents::Msg::Answer {
            call: u64::MAX,
            result_hash: Hash::ZERO,
        }),
        Message::Agents(agents::Msg::Release { call: 3 }),
        Message::Agents(agents::Msg::Rate {
            call: 4,
            rating: u8::MAX,
        }),
        Message::Agents(agents::Msg::PaidCall {
            agent: 2,
            request_hash: Hash([8; 32]),
            authorization: piazza_ledger::bank::authorization::TransferAuthorization {
                from: SecretKey::from_seed([3; 32]).public_key(),
                to: Address([4; 20]),
                amount: Amount::new(u128::MAX),
                valid_after: 0,
                valid_before: u64::MAX,
                nonce: Hash([5; 32]),
            },
            signature: Signature([6; 64]),
        }),
    ]
}

/// A small deterministic generator (SplitMix64) so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_txs() -> Vec<SignedTransaction> {
    let key = SecretKey::from_seed([9; 32]);
    let mut messages = vec![
        vec![Message::Bank(bank::Msg::Send {
            to: Address([1; 20]),
            amount: Amount::pza(3),
        })],
        vec![Message::Staking(staking::Msg::Bond {
            role: Role::Provider,
            amount: Amount::pza(100),
        })],
        vec![
            Message::Staking(staking::Msg::Unbond {
                role: Role::Storage,
                amount: Amount::new(1),
            }),
            Message::Bank(bank::Msg::Send {
                to: Address([2; 20]),
                amount: Amount::new(u128::MAX),
            }),
        ],
    ];
    messages.extend(every_message().into_iter().map(|m| vec![m]));
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let tx = Transaction {
                chain_id: "fuzz".into(),
                sender: key.public_key(),
                nonce: i as u64,
                max_fee: Amount::pza(1),
                messages: m,
            };
            // Every fourth is signed by a grantee, so the corpus carries the envelope.
            if i % 4 == 3 {
                tx.sign_as_grantee(&SecretKey::from_seed([10; 32]))
            } else {
                tx.sign(&key)
            }
        })
        .collect()
}

fn seed_block() -> Block {
    let key = SecretKey::from_seed([8; 32]);
    let txs = seed_txs();
    let (randomness, randomness_proof) = prove_randomness(&key, "fuzz", 1, &Hash::ZERO);
    let header = BlockHeader {
        chain_id: "fuzz".into(),
        height: 1,
        parent_hash: Hash::ZERO,
        time_ms: 5,
        proposer: key.public_key(),
        tx_root: tx_root(&txs),
        state_root: Hash([3; 32]),
        randomness,
        randomness_proof,
    };
    let signature = key.sign(&header.hash().0);
    Block {
        header,
        txs,
        signature,
    }
}

fn seed_receipt() -> Receipt {
    Receipt {
        tx_hash: Hash([4; 32]),
        height: 7,
        index: 2,
        status: TxStatus::Failed {
            code: 7,
            message: "insufficient".into(),
        },
        fee_paid: Amount::new(10),
        events: vec![Event::new(
            "bank.transfer",
            &[("from", "a".into()), ("to", "b".into())],
        )],
    }
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => out.truncate(rng.below(out.len() + 1)),
            3 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            4 if out.len() >= 4 => {
                // Overwrite what may be a length prefix with a huge or off-by-one value.
                let i = rng.below(out.len() - 3);
                let value: u32 = [u32::MAX, 0x8000_0000, 65_536, rng.next() as u32][rng.below(4)];
                out[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.below(64);
                out = (0..n).map(|_| rng.next() as u8).collect();
            }
        }
    }
    out
}

fn check<T: Decode + Encode>(bytes: &[u8], decode: impl Fn(&[u8]) -> Option<T>) -> bool {
    match decode(bytes) {
        Some(value) => {
            assert_eq!(
                value.to_bytes(),
                bytes,
                "a decoded value must re-encode to the same bytes"
            );
            true
        }
        None => false,
    }
}

#[test]
fn the_corpus_carries_every_message_kind() {
    let seen: BTreeSet<&str> = seed_txs()
        .iter()
        .flat_map(|tx| tx.tx.messages.iter().map(kind))
        .collect();
    let all: BTreeSet<&str> = KINDS.iter().copied().collect();
    assert_eq!(seen, all, "every message kind has a seed transaction");
}

#[test]
fn mutated_inputs_never_panic_and_decode_canonically() {
    let txs = seed_txs();
    let messages = every_message();
    let corpus: Vec<Vec<u8>> = txs
        .iter()
        .map(|t| t.to_bytes())
        .chain(messages.iter().map(|m| m.to_bytes()))
        .chain([seed_block().to_bytes(), seed_receipt().to_bytes()])
        .collect();
    let mut rng = Rng(0x5eed);
    let mut decoded = [0usize; 4];
    // Mutants of each message's own encoding that still decode as a message, by kind.
    let mut decoded_by_kind = vec![0usize; KINDS.len()];
    for round in 0..120_000 {
        let seed = round % corpus.len();
        let input = mutate(&mut rng, &corpus[seed], &corpus);
        decoded[0] += check(&input, |b| SignedTransaction::decode_bytes(b).ok()) as usize;
        decoded[1] += check(&input, |b| Block::decode_bytes(b).ok()) as usize;
        decoded[2] += check(&input, |b| Receipt::from_bytes(b).ok()) as usize;
        let message = check(&input, |b| Message::from_bytes(b).ok());
        decoded[3] += message as usize;
        if message && (txs.len()..txs.len() + messages.len()).contains(&seed) {
            let kind = kind(&messages[seed - txs.len()]);
            decoded_by_kind[KINDS.iter().position(|k| *k == kind).unwrap()] += 1;
        }
    }
    // Some mutations (a flipped amount bit, say) still decode: the corpus reaches past the
    // first length check, and past every message kind's tag.
    assert!(decoded.iter().all(|n| *n > 0), "decoded counts {decoded:?}");
    for message in &messages {
        let kind = kind(message);
        let n = decoded_by_kind[KINDS.iter().position(|k| *k == kind).unwrap()];
        assert!(n > 0, "no mutant of {kind} decoded: {decoded_by_kind:?}");
    }
    for (seed, tx) in corpus.iter().zip(&txs) {
        let decoded = SignedTransaction::decode_bytes(seed).unwrap();
        assert_eq!(&decoded, tx);
        let rebuilt = match decoded.grantee() {
            Some(grantee) => {
                SignedTransaction::new_as_grantee(decoded.tx.clone(), *grantee, decoded.signature)
            }
            None => SignedTransaction::new(decoded.tx.clone(), decoded.signature),
        };
        assert_eq!(decoded.hash(), rebuilt.hash());
    }
    for message in &messages {
        assert_eq!(&Message::from_bytes(&message.to_bytes()).unwrap(), message);
    }
}
