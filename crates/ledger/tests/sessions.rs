//! Sessions on the pure executor: open and assignment, commits paid out after their window by
//! the fee split, every refusal of a commit, reveal and challenge, audits turning requests into
//! jobs, the bounds, and the close that returns the unspent deposit.

mod common;

use common::{attribute, failed, model_owner, register, Chain};
use piazza_ledger::block::Event;
use piazza_ledger::compute::{self, JobParams};
use piazza_ledger::sessions::{
    self, prove_receipt, receipts_root, CommitStatus, Receipt, Request, Session, SessionStatus,
    Voucher, RECEIPTS_PER_COMMIT_MAX, SESSIONS_PER_CLIENT_MAX, SESSIONS_PER_PROVIDER_MAX,
};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_ledger::verify;
use piazza_primitives::{Amount, Hash, SecretKey};

const MODEL: &str = "chat";
/// The session's maximum price per unit, in base units (the provider asks 1 000).
const MAX_PRICE: u128 = 2_000;
const DEPOSIT: u128 = 1_000_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

struct Fixture {
    chain: Chain,
    client: SecretKey,
    provider: SecretKey,
    delegate: SecretKey,
    stranger: SecretKey,
    auditor: SecretKey,
    session: u64,
}

/// A chain with one provider and one auditor of `chat`, audits drawn at `audit_rate_bps`, and
/// one open session of the client's.
fn fixture(audit_rate_bps: u16) -> Fixture {
    let (client, provider, delegate, stranger, auditor) = (key(1), key(2), key(3), key(4), key(5));
    let verify = verify::Params {
        audit_rate_bps,
        new_provider_audit_rate_bps: audit_rate_bps,
        ..Default::default()
    };
    let mut chain = Chain::with_verify(
        &[&client, &provider, &delegate, &stranger, &auditor],
        compute::Params::default(),
        verify,
    );
    let (r, _) = chain.one(&provider, register(MODEL, 1_000));
    assert_eq!(failed(&r), None);
    let (r, _) = chain.one(
        &auditor,
        Message::Verify(verify::Msg::RegisterAuditor {
            models: vec![MODEL.into()],
            stake: Amount::pza(200),
        }),
    );
    assert_eq!(failed(&r), None);
    let mut f = Fixture {
        chain,
        client,
        provider,
        delegate,
        stranger,
        auditor,
        session: 0,
    };
    f.session = f.open(100).expect("the session opens");
    f.chain.block(vec![]);
    assert_eq!(f.session().status, SessionStatus::Open);
    f
}

impl Fixture {
    fn view(&self) -> StateDelta<'_> {
        StateDelta::new(&self.chain.state)
    }

    fn session(&self) -> Session {
        sessions::session(&self.view(), self.session).unwrap()
    }

    fn commit_record(&self, id: u64) -> sessions::CommitRecord {
        sessions::commit(&self.view(), id).unwrap()
    }

    /// Sends `message` from `key` in its own block: the refusal's name, or the events of the
    /// transaction and the block hooks.
    fn send(&mut self, key: &SecretKey, message: Message) -> Result<Vec<Event>, String> {
        message
            .check_stateless()
            .map_err(|e| e.code.name().to_string())?;
        let (receipt, mut events) = self.chain.one(key, message);
        if let Some(name) = failed(&receipt) {
            return Err(name.to_string());
        }
        events.extend(receipt.events);
        Ok(events)
    }

    fn open_by(&mut self, key: &SecretKey, expiry_blocks: u64) -> Result<u64, String> {
        let events = self.send(
            key,
            Message::Sessions(sessions::Msg::Open {
                model: MODEL.into(),
                owner_key: key.public_key(),
                authorised: Some(self.delegate.public_key()),
                deposit: Amount::new(DEPOSIT),
                max_price_per_unit: Amount::new(MAX_PRICE),
                expiry_blocks,
            }),
        )?;
        Ok(attribute(&events, "sessions.opened", "session")
            .parse()
            .unwrap())
    }

    fn open(&mut self, expiry_blocks: u64) -> Result<u64, String> {
        let client = self.client.clone();
        self.open_by(&client, expiry_blocks)
    }

    fn voucher(&self, signer: &SecretKey, seq: u64, total: u128) -> sessions::SignedVoucher {
        Voucher {
            session: self.session,
            seq,
            total: Amount::new(total),
        }
        .sign(signer)
    }

    fn commit_message(&self, receipts: &[Receipt], voucher: sessions::SignedVoucher) -> Message {
        Message::Sessions(sessions::Msg::Commit {
            session: self.session,
            root: receipts_root(receipts),
            count: receipts.len() as u64,
            units: receipts.iter().map(|r| r.units).sum(),
            voucher,
        })
    }

    /// The provider commits `receipts` with the client's voucher for their total; returns the
    /// commit's id.
    fn commit(&mut self, receipts: &[Receipt]) -> Result<u64, String> {
        let seq = receipts.iter().map(|r| r.seq).max().unwrap();
        let total = self.session().committed_total.base_units()
            + receipts.iter().map(|r| r.price.base_units()).sum::<u128>();
        let message = self.commit_message(receipts, self.voucher(&self.client, seq, total));
        let provider = self.provider.clone();
        let events = self.send(&provider, message)?;
        Ok(attribute(&events, "sessions.committed", "commit")
            .parse()
            .unwrap())
    }

    /// The owner's challenge of `receipt` (signed by the provider) in `commit`, for `request`.
    fn challenge_message(&self, commit: u64, receipt: &Receipt, request: &Request) -> Message {
        Message::Sessions(sessions::Msg::Challenge {
            session: self.session,
            commit,
            receipt: Box::new(receipt.clone().sign(&self.provider)),
            request: Box::new(request.clone().sign(&self.client)),
            trace_root: Hash([0xcc; 32]),
            step_count: 40,
            ids: Hash::ZERO,
        })
    }

    fn blocks(&mut self, n: u64) -> Vec<Event> {
        (0..n).flat_map(|_| self.chain.block(vec![]).1).collect()
    }

    fn provider_stake(&self) -> Amount {
        staking::bonded(
            &self.view(),
            &self.provider.public_key().address(),
            Role::Provider,
        )
    }
}

fn request(session: u64, seq: u64) -> Request {
    Request {
        session,
        seq,
        input: format!("question {seq}").into_bytes(),
        params: JobParams {
            max_tokens: 8,
            ..JobParams::default()
        },
        max_units: 8,
    }
}

/// The provider's receipt for `request`: 8 units at 1 000 base units each.
fn receipt(request: &Request) -> Receipt {
    Receipt {
        session: request.session,
        seq: request.seq,
        input_hash: compute::input_hash(&request.input),
        output_hash: compute::output_hash(format!("answer {}", request.seq).as_bytes()),
        trace_root: Hash::of("test/trace", &[&request.seq.to_le_bytes()]),
        units: 8,
        input_units: 5,
        price: Amount::new(8_000),
    }
}

fn receipts(session: u64, seqs: std::ops::RangeInclusive<u64>) -> Vec<Receipt> {
    seqs.map(|seq| receipt(&request(session, seq))).collect()
}

#[test]
fn open_escrows_and_a_later_block_assigns_the_provider() {
    let mut f = fixture(0);
    let before = f.chain.balance(&sessions::escrow());
    let id = f.open(100).unwrap();
    let opened = sessions::session(&f.view(), id).unwrap();
    assert_eq!(opened.status, SessionStatus::Pending);
    assert_eq!(opened.provider, None);
    assert_eq!(
        f.chain.balance(&sessions::escrow()),
        before.checked_add(Amount::new(DEPOSIT)).unwrap()
    );
    let events = f.blocks(1);
    assert_eq!(
        attribute(&events, "sessions.assigned", "provider"),
        f.provider.public_key().address().to_string()
    );
    let assigned = sessions::session(&f.view(), id).unwrap();
    assert_eq!(assigned.status, SessionStatus::Open);
    assert_eq!(
        sessions::sessions_of_provider(&f.view(), &f.provider.public_key().address()),
        vec![0, id]
    );
}

#[test]
fn a_commit_pays_its_new_money_after_the_window_by_the_fee_split() {
    let mut f = fixture(0);
    let provider = f.provider.public_key().address();
    let client = f.client.public_key().address();
    let batch = receipts(f.session, 1..=3);
    let provider_before = f.chain.balance(&provider);
    let owner_before = f.chain.balance(&model_owner());
    let commit = f.commit(&batch).unwrap();
    let record = f.commit_record(commit);
    assert_eq!(record.amount, Amount::new(24_000));
    let window = sessions::params(&f.view()).challenge_window_blocks;
    // Nothing moves before the window ends (the provider only paid its commit's fee).
    f.blocks(window - 1);
    assert!(f.chain.balance(&provider) < provider_before);
    assert_eq!(f.commit_record(commit).status, CommitStatus::Pending);
    let events = f.blocks(1);
    assert_eq!(attribute(&events, "sessions.paid", "amount"), "24000");
    assert_eq!(f.commit_record(commit).status, CommitStatus::Paid);
    // compute's split: 15 % model owner, 10 % auditor pool, 5 % treasury, the rest provider.
    assert_eq!(attribute(&events, "sessions.paid", "to_provider"), "16800");
    assert_eq!(
        f.chain.balance(&model_owner()),
        owner_before.checked_add(Amount::new(3_600)).unwrap()
    );
    let session = f.session();
    assert_eq!(session.paid, Amount::new(24_000));
    assert_eq!(session.deposit, Amount::new(DEPOSIT - 24_000));

    // A second commit pays only what the voucher adds.
    let second = f.commit(&receipts(f.session, 4..=4)).unwrap();
    assert_eq!(f.commit_record(second).amount, Amount::new(8_000));

    // Closing returns the rest once the provider's grace and the last window are over.
    let client_before = f.chain.balance(&client);
    let events = f
        .send(
            &f.client.clone(),
            Message::Sessions(sessions::Msg::Close { session: f.session }),
        )
        .unwrap();
    assert_eq!(f.session().status, SessionStatus::Closing);
    assert!(events.iter().all(|e| e.kind != "sessions.closed"));
    let events = f.blocks(window);
    assert_eq!(
        attribute(&events, "sessions.closed", "refund"),
        (DEPOSIT - 32_000).to_string()
    );
    let session = f.session();
    assert_eq!(session.status, SessionStatus::Closed);
    assert_eq!(session.deposit, Amount::ZERO);
    assert!(f.chain.balance(&client) > client_before);
    assert!(sessions::sessions_of_client(&f.view(), &client).is_empty());
}

/// One way to spoil a commit, and the refusal it earns.
struct Spoiled {
    name: &'static str,
    /// Builds the message from the fixture (after one good commit of receipts 1..=2).
    message: fn(&Fixture) -> Message,
    by_provider: bool,
    refusal: &'static str,
}

/// The honest second commit, claiming `count` receipts.
fn with_count(f: &Fixture, claimed: u64) -> Message {
    let mut message = f.commit_message(&receipts(0, 3..=4), f.voucher(&f.client, 4, 32_000));
    if let Message::Sessions(sessions::Msg::Commit { count, .. }) = &mut message {
        *count = claimed;
    }
    message
}

#[test]
fn every_bad_commit_is_refused() {
    let good_receipts = receipts(0, 3..=4);
    let cases: Vec<Spoiled> = vec![
        Spoiled {
            name: "a voucher signed by a stranger",
            message: |f| f.commit_message(&receipts(0, 3..=4), f.voucher(&f.stranger, 4, 32_000)),
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a voucher for another session",
            message: |f| {
                let mut voucher = Voucher {
                    session: f.session + 1,
                    seq: 4,
                    total: Amount::new(32_000),
                }
                .sign(&f.client);
                voucher.voucher.session = f.session + 1;
                f.commit_message(&receipts(0, 3..=4), voucher)
            },
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a tampered voucher",
            message: |f| {
                let mut voucher = f.voucher(&f.client, 4, 32_000);
                voucher.voucher.total = Amount::new(32_001);
                f.commit_message(&receipts(0, 3..=4), voucher)
            },
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a seq that goes back",
            message: |f| f.commit_message(&receipts(0, 3..=4), f.voucher(&f.client, 1, 32_000)),
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a total that goes back",
            message: |f| f.commit_message(&receipts(0, 3..=4), f.voucher(&f.client, 4, 15_999)),
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a total above the deposit",
            message: |f| {
                let receipts: Vec<Receipt> = (3..=4)
                    .map(|seq| Receipt {
                        units: 1_000_000,
                        ..receipt(&request(0, seq))
                    })
                    .collect();
                f.commit_message(&receipts, f.voucher(&f.client, 4, DEPOSIT + 1))
            },
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "a total above the units at the maximum price",
            message: |f| {
                // 16 + 16 committed units at 2 000 each allow 64 000.
                f.commit_message(&receipts(0, 3..=4), f.voucher(&f.client, 4, 64_001))
            },
            by_provider: true,
            refusal: "bad_voucher",
        },
        Spoiled {
            name: "no receipts",
            message: |f| with_count(f, 0),
            by_provider: true,
            refusal: "invalid_message",
        },
        Spoiled {
            name: "more receipts than a commit may hold",
            message: |f| with_count(f, RECEIPTS_PER_COMMIT_MAX + 1),
            by_provider: true,
            refusal: "invalid_message",
        },
        Spoiled {
            name: "a commit by someone not the provider",
            message: |f| f.commit_message(&receipts(0, 3..=4), f.voucher(&f.client, 4, 32_000)),
            by_provider: false,
            refusal: "not_session_party",
        },
    ];
    for case in cases {
        let mut f = fixture(0);
        f.commit(&receipts(0, 1..=2)).unwrap();
        let message = (case.message)(&f);
        let sender = if case.by_provider {
            f.provider.clone()
        } else {
            f.stranger.clone()
        };
        assert_eq!(
            f.send(&sender, message),
            Err(case.refusal.to_string()),
            "{}",
            case.name
        );
        // The same fixture still takes the honest commit.
        f.commit(&good_receipts)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

#[test]
fn the_authorised_key_may_pay_and_one_commit_fits_in_a_block() {
    let mut f = fixture(0);
    let batch = receipts(0, 1..=1);
    let message = f.commit_message(&batch, f.voucher(&f.delegate, 1, 8_000));
    let twice = f.commit_message(&batch, f.voucher(&f.delegate, 1, 8_000));
    let provider = f.provider.clone();
    let first = f.chain.tx(&provider, message);
    let second = f.chain.tx(&provider, twice);
    let (receipts, _) = f.chain.block(vec![first, second]);
    assert_eq!(failed(&receipts[0]), None);
    assert_eq!(failed(&receipts[1]), Some("invalid_message"));
    assert_eq!(f.session().committed_total, Amount::new(8_000));
}

#[test]
fn a_top_up_raises_what_a_voucher_may_pay() {
    let mut f = fixture(0);
    let big: Vec<Receipt> = (1..=1)
        .map(|seq| Receipt {
            units: 100_000,
            ..receipt(&request(0, seq))
        })
        .collect();
    let over = DEPOSIT + 5;
    let message = f.commit_message(&big, f.voucher(&f.client, 1, over));
    let provider = f.provider.clone();
    assert_eq!(
        f.send(&provider, message.clone()),
        Err("bad_voucher".into())
    );
    let client = f.client.clone();
    assert_eq!(
        f.send(
            &f.stranger.clone(),
            Message::Sessions(sessions::Msg::TopUp {
                session: 0,
                amount: Amount::new(5),
            }),
        ),
        Err("not_session_party".into())
    );
    f.send(
        &client,
        Message::Sessions(sessions::Msg::TopUp {
            session: 0,
            amount: Amount::new(5),
        }),
    )
    .unwrap();
    assert_eq!(f.session().deposit, Amount::new(over));
    f.send(&provider, message).unwrap();
}

#[test]
fn sessions_per_client_are_bounded() {
    let mut f = fixture(0);
    for _ in 1..SESSIONS_PER_CLIENT_MAX {
        f.open(100).unwrap();
    }
    assert_eq!(f.open(100), Err("queue_full".into()));
    // Closing one makes room once it is settled.
    let client = f.client.clone();
    f.send(
        &client,
        Message::Sessions(sessions::Msg::Close { session: 0 }),
    )
    .unwrap();
    assert_eq!(f.open(100), Err("queue_full".into()));
    let window = sessions::params(&f.view()).challenge_window_blocks;
    f.blocks(window);
    f.open(100).unwrap();
}

#[test]
fn a_provider_serving_its_most_sessions_is_not_chosen_and_the_session_is_refunded() {
    let mut f = fixture(0);
    let clients: Vec<SecretKey> = (0..5).map(|i| key(40 + i)).collect();
    for client in &clients {
        let (r, _) = f.chain.one(
            &f.client.clone(),
            Message::Bank(piazza_ledger::bank::Msg::Send {
                to: client.public_key().address(),
                amount: Amount::pza(100),
            }),
        );
        assert_eq!(failed(&r), None);
    }
    let mut opened = 1;
    'fill: for client in &clients {
        for _ in 0..SESSIONS_PER_CLIENT_MAX {
            if opened == SESSIONS_PER_PROVIDER_MAX {
                break 'fill;
            }
            f.open_by(client, 100).unwrap();
            opened += 1;
        }
    }
    f.blocks(1);
    let provider = f.provider.public_key().address();
    assert_eq!(
        sessions::sessions_of_provider(&f.view(), &provider).len(),
        SESSIONS_PER_PROVIDER_MAX
    );
    let last = clients.last().unwrap();
    let before = f.chain.balance(&last.public_key().address());
    let id = f.open_by(last, 100).unwrap();
    let events = f.blocks(1);
    assert_eq!(
        attribute(&events, "sessions.unassigned", "session"),
        id.to_string()
    );
    let refused = sessions::session(&f.view(), id).unwrap();
    assert_eq!(refused.status, SessionStatus::Closed);
    // The deposit came back; only the open's fee is gone.
    let after = f.chain.balance(&last.public_key().address());
    assert!(after < before && after.checked_add(Amount::pza(1)).unwrap() > before);
}

#[test]
fn every_receipt_drawn_must_be_revealed_or_the_provider_is_slashed() {
    let mut f = fixture(10_000);
    let asked: Vec<Request> = (1..=3).map(|seq| request(0, seq)).collect();
    let batch: Vec<Receipt> = asked.iter().map(receipt).collect();
    let commit = f.commit(&batch).unwrap();
    let events = f.blocks(1);
    assert_eq!(attribute(&events, "sessions.audit_drawn", "audited"), "3");
    let record = f.commit_record(commit);
    assert_eq!(record.audited, vec![0, 1, 2]);

    let reveal = |f: &Fixture, index: usize, request: sessions::SignedRequest| {
        Message::Sessions(sessions::Msg::Reveal {
            session: f.session,
            commit,
            index: index as u64,
            receipt: Box::new(batch[index].clone()),
            proof: prove_receipt(&batch, index).unwrap(),
            request: Box::new(request),
        })
    };
    let provider = f.provider.clone();
    // A request the owner never signed, a receipt at the wrong index, a stranger revealing.
    let forged = reveal(&f, 1, asked[1].clone().sign(&f.stranger));
    assert_eq!(f.send(&provider, forged), Err("bad_voucher".into()));
    let mut misplaced = reveal(&f, 1, asked[1].clone().sign(&f.client));
    if let Message::Sessions(sessions::Msg::Reveal { index, .. }) = &mut misplaced {
        *index = 0;
    }
    assert_eq!(f.send(&provider, misplaced), Err("bad_receipt".into()));
    let honest = reveal(&f, 1, asked[1].clone().sign(&f.client));
    assert_eq!(
        f.send(&f.stranger.clone(), honest.clone()),
        Err("not_session_party".into())
    );

    let escrow_before = f.chain.balance(&compute::escrow());
    let events = f.send(&provider, honest.clone()).unwrap();
    let job: u64 = attribute(&events, "sessions.revealed", "job")
        .parse()
        .unwrap();
    assert_eq!(
        attribute(&events, "verify.audit_assigned", "auditor"),
        f.auditor.public_key().address().to_string()
    );
    let adopted = f.chain.job(job);
    assert!(matches!(adopted.status, compute::JobStatus::Posted { .. }));
    assert_eq!(adopted.input, asked[1].input);
    assert_eq!(adopted.max_price, Amount::new(8_000));
    assert_eq!(
        f.chain.balance(&compute::escrow()),
        escrow_before.checked_add(Amount::new(8_000)).unwrap()
    );
    assert_eq!(f.send(&provider, honest), Err("bad_receipt".into()));

    // Receipts 0 and 2 are never revealed: one penalty each at the deadline, then the payout
    // of what did not move into the job.
    let stake_before = f.provider_stake();
    let penalty = compute::params(&f.view()).missed_deadline_penalty;
    let reveal_blocks = sessions::params(&f.view()).reveal_blocks;
    let events = f.blocks(reveal_blocks);
    assert_eq!(attribute(&events, "sessions.reveal_missed", "missed"), "2");
    assert_eq!(
        f.provider_stake(),
        stake_before
            .checked_sub(penalty.checked_mul(2).unwrap())
            .unwrap()
    );
    assert_eq!(attribute(&events, "sessions.paid", "amount"), "16000");
    assert_eq!(f.commit_record(commit).status, CommitStatus::Paid);
    let late = reveal(&f, 0, asked[0].clone().sign(&f.client));
    assert_eq!(f.send(&provider, late), Err("not_audited".into()));
}

/// `count` receipts of one unit at 100 base units each, from seq `first`.
fn cheap_receipts(first: u64, count: u64) -> Vec<Receipt> {
    (first..first + count)
        .map(|seq| Receipt {
            units: 1,
            price: Amount::new(100),
            ..receipt(&request(0, seq))
        })
        .collect()
}

#[test]
fn a_commit_draws_the_same_few_audits_whatever_its_size() {
    let mut f = fixture(10_000);
    let audits = sessions::params(&f.view()).audits_per_commit;
    let mut first = 1;
    let mut fees = Vec::new();
    for count in [2, 100, 1_000] {
        let batch = cheap_receipts(first, count);
        first += count;
        let provider = f.provider.public_key().address();
        let before = f.chain.balance(&provider);
        let commit = f.commit(&batch).unwrap();
        fees.push(before.checked_sub(f.chain.balance(&provider)).unwrap());
        let events = f.blocks(1);
        let audited = f.commit_record(commit).audited;
        assert_eq!(
            attribute(&events, "sessions.audit_drawn", "audited"),
            audited.len().to_string()
        );
        if count <= audits {
            assert_eq!(audited, (0..count).collect::<Vec<_>>(), "every receipt");
        } else {
            assert!(
                !audited.is_empty() && audited.len() as u64 <= audits,
                "{audited:?}"
            );
            assert!(audited.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
            assert!(audited.iter().all(|&i| i < count));
        }
    }
    assert!(
        fees.windows(2).all(|w| w[0] == w[1]),
        "a commit's fee does not grow with its receipts: {fees:?}"
    );
}

#[test]
fn a_receipt_not_drawn_cannot_be_revealed() {
    let mut f = fixture(0);
    let asked = request(0, 1);
    let batch = vec![receipt(&asked)];
    let commit = f.commit(&batch).unwrap();
    f.blocks(1);
    assert!(f.commit_record(commit).audited.is_empty());
    let provider = f.provider.clone();
    let message = Message::Sessions(sessions::Msg::Reveal {
        session: 0,
        commit,
        index: 0,
        receipt: Box::new(batch[0].clone()),
        proof: prove_receipt(&batch, 0).unwrap(),
        request: Box::new(asked.sign(&f.client)),
    });
    assert_eq!(f.send(&provider, message), Err("not_audited".into()));
}

#[test]
fn the_owner_challenges_a_receipt_through_the_dispute_game() {
    let mut f = fixture(0);
    let asked: Vec<Request> = (1..=2).map(|seq| request(0, seq)).collect();
    let batch: Vec<Receipt> = asked.iter().map(receipt).collect();
    let commit = f.commit(&batch).unwrap();
    let challenge =
        |f: &Fixture, index: usize| f.challenge_message(commit, &batch[index], &asked[index]);
    let stranger = f.stranger.clone();
    assert_eq!(
        f.send(&stranger, challenge(&f, 0)),
        Err("not_session_party".into())
    );
    // A receipt the provider did not sign is no evidence.
    let mut unsigned = challenge(&f, 0);
    if let Message::Sessions(sessions::Msg::Challenge { receipt, .. }) = &mut unsigned {
        **receipt = batch[0].clone().sign(&f.client);
    }
    let client = f.client.clone();
    assert_eq!(f.send(&client, unsigned), Err("bad_receipt".into()));

    let bond = verify::params(&f.view()).challenge_bond;
    let before = f.chain.balance(&client.public_key().address());
    let events = f.send(&client, challenge(&f, 1)).unwrap();
    let job: u64 = attribute(&events, "sessions.challenged", "job")
        .parse()
        .unwrap();
    let dispute = verify::dispute(&f.view(), job).expect("the challenge opens a dispute");
    assert_eq!(dispute.parties[1].address, client.public_key().address());
    assert!(f.chain.balance(&client.public_key().address()) < before.checked_sub(bond).unwrap());
    assert_eq!(f.commit_record(commit).moved, Amount::new(8_000));
    assert_eq!(f.send(&client, challenge(&f, 1)), Err("bad_receipt".into()));

    // After the window the commit has paid out and nothing more can be challenged.
    let window = sessions::params(&f.view()).challenge_window_blocks;
    f.blocks(window);
    assert_eq!(f.commit_record(commit).status, CommitStatus::Paid);
    assert_eq!(
        f.send(&client, challenge(&f, 0)),
        Err("not_challengeable".into())
    );
}

#[test]
fn a_challenged_receipt_counting_no_prompt_is_disproven_at_once() {
    let mut f = fixture(0);
    let asked: Vec<Request> = (1..=2).map(|seq| request(0, seq)).collect();
    let mut batch: Vec<Receipt> = asked.iter().map(receipt).collect();
    // The provider signed a prompt of no tokens for request 2: no generation reads that.
    batch[1].input_units = 0;
    let commit = f.commit(&batch).unwrap();
    let challenge =
        |f: &Fixture, index: usize| f.challenge_message(commit, &batch[index], &asked[index]);
    let client = f.client.clone();
    let owner = client.public_key().address();
    let (stake, balance) = (f.provider_stake(), f.chain.balance(&owner));
    let events = f.send(&client, challenge(&f, 1)).unwrap();
    let job: u64 = attribute(&events, "sessions.input_units_disproven", "job")
        .parse()
        .unwrap();
    assert_eq!(f.chain.job(job).status, compute::JobStatus::Failed);
    assert_eq!(f.chain.job(job).result.unwrap().input_units, 0);
    assert!(
        verify::dispute(&f.view(), job).is_none(),
        "no game, no bond"
    );
    let record = f.commit_record(commit);
    assert!(record.fraud_slashed);
    let audits = sessions::params(&f.view()).audits_per_commit;
    let penalty = sessions::fraud_slash(&f.session(), &record, audits);
    assert_eq!(f.provider_stake(), stake.checked_sub(penalty).unwrap());
    // The request's 8 000 went back to the owner, and no challenge bond left it.
    assert_eq!(attribute(&events, "compute.job_failed", "refund"), "8000");
    let bond = verify::params(&f.view()).challenge_bond;
    assert!(f.chain.balance(&owner) > balance.checked_sub(bond).unwrap());

    // A receipt with a possible count goes to the game as before, its count on the job.
    let events = f.send(&client, challenge(&f, 0)).unwrap();
    let job: u64 = attribute(&events, "sessions.challenged", "job")
        .parse()
        .unwrap();
    assert!(verify::dispute(&f.view(), job).is_some());
    assert_eq!(f.chain.job(job).result.unwrap().input_units, 5);
}

#[test]
fn an_expired_session_takes_commits_through_its_grace_then_refunds() {
    let mut f = fixture(0);
    let client = f.client.public_key().address();
    let expiry = f.session().expiry_height;
    f.blocks(expiry - f.chain.height);
    assert_eq!(f.session().status, SessionStatus::Closing);
    // The provider still commits the last voucher inside the grace.
    f.commit(&receipts(0, 1..=1)).unwrap();
    let window = sessions::params(&f.view()).challenge_window_blocks;
    let before = f.chain.balance(&client);
    f.blocks(window);
    let session = f.session();
    assert_eq!(session.status, SessionStatus::Closed);
    assert_eq!(session.paid, Amount::new(8_000));
    assert_eq!(
        f.chain.balance(&client),
        before.checked_add(Amount::new(DEPOSIT - 8_000)).unwrap()
    );
    let late = f.commit_message(&receipts(0, 2..=2), f.voucher(&f.client, 2, 16_000));
    let provider = f.provider.clone();
    assert_eq!(f.send(&provider, late), Err("session_not_open".into()));
}

#[test]
fn a_challenged_request_the_provider_cannot_defend_is_refunded_and_slashed_by_the_job_path() {
    let mut f = fixture(0);
    let client = f.client.public_key().address();
    let asked = request(0, 1);
    let batch = vec![receipt(&asked)];
    let commit = f.commit(&batch).unwrap();
    let message = Message::Sessions(sessions::Msg::Challenge {
        session: 0,
        commit,
        receipt: Box::new(batch[0].clone().sign(&f.provider)),
        request: Box::new(asked.sign(&f.client)),
        trace_root: Hash([0xcc; 32]),
        step_count: 40,
        ids: Hash::ZERO,
    });
    let events = f.send(&f.client.clone(), message).unwrap();
    let job: u64 = attribute(&events, "sessions.challenged", "job")
        .parse()
        .unwrap();
    let before = f.chain.balance(&client);
    let stake_before = f.provider_stake();
    // The provider never answers round 0: it loses the dispute at the round's deadline.
    let v = verify::params(&f.view());
    let events = f.blocks(v.round_blocks + 1);
    assert_eq!(
        attribute(&events, "compute.job_failed", "refund"),
        "8000",
        "the request's price goes back to the owner"
    );
    assert!(matches!(
        f.chain.job(job).status,
        compute::JobStatus::Failed
    ));
    assert_eq!(
        f.provider_stake(),
        stake_before.checked_sub(v.fraud_slash).unwrap(),
        "the job path slashes its fraud_slash"
    );
    // Then the session's own look at the commit's jobs takes the commit's fraud slash, once.
    let owed = sessions::fraud_slash(
        &f.session(),
        &f.commit_record(commit),
        sessions::params(&f.view()).audits_per_commit,
    );
    assert_eq!(
        owed,
        Amount::new(16_000),
        "2 × max(M, ⌈1/4⌉ × M), M = 8 000"
    );
    let events = f.blocks(sessions::FRAUD_CHECK_BLOCKS);
    assert_eq!(
        attribute(&events, "sessions.fraud_slashed", "penalty"),
        "16000"
    );
    assert_eq!(
        f.provider_stake(),
        stake_before
            .checked_sub(v.fraud_slash)
            .and_then(|s| s.checked_sub(owed))
            .unwrap()
    );
    assert!(f.commit_record(commit).fraud_slashed);
    let events = f.blocks(2 * sessions::FRAUD_CHECK_BLOCKS);
    assert!(!events.iter().any(|e| e.kind == "sessions.fraud_slashed"));
    // The owner got the request's price and its bond back (and the winner's share).
    let refunded = Amount::new(8_000).checked_add(v.challenge_bond).unwrap();
    assert!(f.chain.balance(&client) >= before.checked_add(refunded).unwrap());
    // The rest of the commit (nothing here) pays out; the session still closes cleanly.
    assert_eq!(f.commit_record(commit).moved, Amount::new(8_000));
    assert_eq!(f.commit_record(commit).status, CommitStatus::Paid);
}

/// The commit of `session`'s request 1 as one receipt paying `price` base units.
fn one_receipt_commit(f: &mut Fixture, price: u128) -> Result<u64, String> {
    let mut receipt = receipt(&request(f.session, 1));
    receipt.price = Amount::new(price);
    f.commit(&[receipt])
}

#[test]
fn a_commit_whose_worst_slash_exceeds_the_bond_is_refused() {
    let mut f = fixture(0);
    let bond = f.provider_stake().base_units();
    // A session whose price per unit lets one request carry half the provider's bond.
    let client = f.client.clone();
    let events = f
        .send(
            &client,
            Message::Sessions(sessions::Msg::Open {
                model: MODEL.into(),
                owner_key: client.public_key(),
                authorised: None,
                deposit: Amount::new(bond),
                max_price_per_unit: Amount::new(bond),
                expiry_blocks: 100,
            }),
        )
        .unwrap();
    f.session = attribute(&events, "sessions.opened", "session")
        .parse()
        .unwrap();
    f.blocks(1);
    assert_eq!(f.session().status, SessionStatus::Open);
    // One receipt of new money M: S = 2 × max(M, ⌈1/A⌉ × M) = 2M.
    assert_eq!(
        one_receipt_commit(&mut f, bond / 2 + 1),
        Err("commit_exceeds_bond".into())
    );
    assert_eq!(f.session().commits, 0);
    let id = one_receipt_commit(&mut f, bond / 2).expect("a slash equal to the bond fits");
    assert_eq!(f.commit_record(id).amount, Amount::new(bond / 2));
}

#[test]
fn a_provider_cannot_exit_while_it_serves_a_session() {
    let mut f = fixture(0);
    let provider = f.provider.clone();
    let exit = Message::Compute(compute::Msg::ExitProvider);
    assert_eq!(
        f.send(&provider, exit.clone()),
        Err("invalid_message".into())
    );
    let client = f.client.clone();
    f.send(
        &client,
        Message::Sessions(sessions::Msg::Close { session: 0 }),
    )
    .unwrap();
    let window = sessions::params(&f.view()).challenge_window_blocks;
    f.blocks(window);
    assert_eq!(f.session().status, SessionStatus::Closed);
    f.send(&provider, exit).unwrap();
}

#[test]
fn genesis_sets_the_session_parameters_and_refuses_invalid_ones() {
    use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
    let validator = key(90);
    let me = validator.public_key().address();
    let mut genesis = Genesis {
        chain_id: "sessions-genesis".into(),
        genesis_time_ms: 0,
        fees: FeeParams::default(),
        staking: Default::default(),
        accounts: vec![GenesisAccount {
            address: me,
            balance: Amount::pza(10_000),
        }],
        bonds: vec![GenesisBond {
            address: me,
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }],
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: sessions::Params {
            expiry_blocks_max: 1_000,
            challenge_window_blocks: 7,
            reveal_blocks: 9,
            audits_per_commit: 3,
        },
        storage: Default::default(),
        agents: Default::default(),
    };
    let state: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        piazza_ledger::executor::init_chain(&genesis)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap()))
            .collect();
    assert_eq!(sessions::params(&StateDelta::new(&state)), genesis.sessions);
    for audits in [0, sessions::AUDITS_PER_COMMIT_MAX + 1] {
        genesis.sessions.audits_per_commit = audits;
        let refused = piazza_ledger::executor::init_chain(&genesis).unwrap_err();
        assert!(
            refused.to_string().contains("audits per commit"),
            "{refused}"
        );
    }
    genesis.sessions.audits_per_commit = 3;
    genesis.sessions.reveal_blocks = 0;
    let refused = piazza_ledger::executor::init_chain(&genesis).unwrap_err();
    assert!(refused.to_string().contains("reveal blocks"), "{refused}");
}
