//! The two channels against each other and against hostile peers.

use piazza_codec::{Decode, Encode};
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{
    Receipt, SignedReceipt, SignedRequest, Voucher, RECEIPTS_PER_COMMIT_MAX,
};
use piazza_primitives::{Amount, Hash, SecretKey};
use piazza_session::wire::{Event, EventReader, RequestBody, VoucherBody, EVENT_BYTES_MAX};
use piazza_session::{ClientChannel, ProviderChannel, ReceiptRefusal, Served, Terms};
use proptest::prelude::*;

const PRICE: Amount = Amount::new(7);
const MAX_PRICE: Amount = Amount::new(10);

fn owner() -> SecretKey {
    SecretKey::from_seed([1; 32])
}
fn delegate() -> SecretKey {
    SecretKey::from_seed([2; 32])
}
fn provider() -> SecretKey {
    SecretKey::from_seed([3; 32])
}
fn stranger() -> SecretKey {
    SecretKey::from_seed([4; 32])
}

fn session(deposit: u128) -> Terms {
    Terms {
        session: 5,
        owner_key: owner().public_key(),
        authorised: Some(delegate().public_key()),
        provider: provider().public_key().address(),
        deposit: Amount::new(deposit),
        max_price_per_unit: MAX_PRICE,
        committed_seq: 0,
        committed_total: Amount::ZERO,
        open: true,
    }
}

fn channels(deposit: u128) -> (ClientChannel, ProviderChannel) {
    let s = session(deposit);
    (
        ClientChannel::new(s.clone(), delegate()).unwrap(),
        ProviderChannel::new(s, provider().public_key().address()).unwrap(),
    )
}

fn output(seq: u64) -> Vec<u8> {
    format!("answer {seq}").into_bytes()
}

/// The provider serves the admitted request with `units` units and signs its receipt.
fn serve(server: &mut ProviderChannel, units: u64) -> (SignedReceipt, Vec<u8>) {
    let seq = server.view().in_flight.expect("a request in flight");
    let out = output(seq);
    let receipt = server
        .complete(Served {
            output: &out,
            trace_root: Hash::of("test/trace", &[&seq.to_le_bytes()]),
            units,
            input_units: 4,
            price_per_unit: PRICE,
        })
        .unwrap();
    (receipt.sign(&provider()), out)
}

/// One full round: request, serve, check, pay.
fn round(client: &mut ClientChannel, server: &mut ProviderChannel, units: u64) {
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    let (receipt, out) = serve(server, units);
    let voucher = client.accept(&receipt, &out).unwrap();
    server.pay(&voucher).unwrap();
}

#[test]
fn rounds_pay_exactly_what_receipts_say() {
    let (mut client, mut server) = channels(1_000);
    for units in [3, 0, 10] {
        round(&mut client, &mut server, units);
    }
    let view = server.view();
    assert_eq!(view.owed, Amount::new(7 * 13));
    assert_eq!(view.paid, view.owed);
    assert_eq!(client.paid(), view.owed);
    assert_eq!((view.next_seq, view.paid_seq), (4, 3));
    let commit = server.commit().unwrap();
    assert_eq!((commit.count, commit.units), (3, 13));
    assert_eq!(
        commit.root,
        piazza_ledger::sessions::receipts_root(&commit.receipts)
    );
    server.committed(3);
    assert!(server.commit().is_none());
}

/// The provider refuses `request` with `code`, and its view is unchanged.
fn check_refused(server: &mut ProviderChannel, request: &SignedRequest, code: &str) {
    let before = server.clone();
    let refusal = server.admit(request).unwrap_err();
    assert_eq!(refusal.code(), code, "{refusal}");
    assert_eq!(*server, before);
}

#[test]
fn hostile_requests_are_refused() {
    let (mut client, mut server) = channels(1_000);
    round(&mut client, &mut server, 2);
    let good = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();

    let mut forged = good.clone();
    forged.request.input = b"other".to_vec();
    check_refused(&mut server, &forged, "bad_signature");
    check_refused(
        &mut server,
        &good.request.clone().sign(&stranger()),
        "wrong_signer",
    );
    check_refused(
        &mut server,
        &good.request.clone().sign(&provider()),
        "wrong_signer",
    );
    let mut other = good.request.clone();
    other.session = 6;
    check_refused(&mut server, &other.sign(&owner()), "wrong_session");
    let mut replay = good.request.clone();
    replay.seq = 1;
    check_refused(&mut server, &replay.sign(&owner()), "replayed");
    let mut skip = good.request.clone();
    skip.seq = 3;
    check_refused(&mut server, &skip.sign(&owner()), "out_of_order");
    let mut greedy = good.request.clone();
    greedy.max_units = 99;
    check_refused(&mut server, &greedy.sign(&owner()), "over_deposit");
    let mut zero = good.request.clone();
    zero.max_units = 0;
    check_refused(&mut server, &zero.sign(&owner()), "max_units");

    server.admit(&good).unwrap();
    check_refused(&mut server, &good, "busy");
}

#[test]
fn a_second_request_before_paying_is_refused() {
    let (mut client, mut server) = channels(1_000);
    let first = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&first).unwrap();
    let (receipt, out) = serve(&mut server, 4);
    // The client checks the receipt but keeps its voucher back.
    let voucher = client.accept(&receipt, &out).unwrap();
    let second = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    check_refused(&mut server, &second, "unpaid");
    server.pay(&voucher).unwrap();
    server.admit(&second).unwrap();
}

#[test]
fn hostile_vouchers_are_refused() {
    let (mut client, mut server) = channels(1_000);
    round(&mut client, &mut server, 2);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    let (receipt, out) = serve(&mut server, 3);
    let good = client.accept(&receipt, &out).unwrap();
    let cases: Vec<(Voucher, SecretKey, &str)> = vec![
        (
            Voucher {
                session: 5,
                seq: 1,
                total: Amount::new(35),
            },
            owner(),
            "stale_voucher",
        ),
        (
            Voucher {
                session: 5,
                seq: 3,
                total: Amount::new(35),
            },
            owner(),
            "voucher_ahead",
        ),
        (
            Voucher {
                session: 5,
                seq: 2,
                total: Amount::new(34),
            },
            owner(),
            "under_paid",
        ),
        (
            Voucher {
                session: 5,
                seq: 2,
                total: Amount::new(1_001),
            },
            owner(),
            "voucher_over_deposit",
        ),
        (
            Voucher {
                session: 6,
                seq: 2,
                total: Amount::new(35),
            },
            owner(),
            "wrong_session",
        ),
        (good.voucher.clone(), stranger(), "wrong_signer"),
    ];
    for (voucher, key, code) in cases {
        let before = server.clone();
        let refusal = server.pay(&voucher.sign(&key)).unwrap_err();
        assert_eq!(refusal.code(), code, "{refusal}");
        assert_eq!(server, before);
    }
    let mut forged = good.clone();
    forged.voucher.total = Amount::new(10_000);
    assert_eq!(server.pay(&forged).unwrap_err().code(), "bad_signature");
    server.pay(&good).unwrap();
    assert_eq!(server.pay(&good).unwrap_err().code(), "stale_voucher");
}

#[test]
fn the_client_refuses_receipts_it_cannot_check() {
    let (mut client, mut server) = channels(1_000);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    let (good, out) = serve(&mut server, 4);
    let tampered = |edit: &dyn Fn(&mut Receipt)| {
        let mut r = good.receipt.clone();
        edit(&mut r);
        r.sign(&provider())
    };
    let cases: Vec<(SignedReceipt, &[u8], ReceiptRefusal)> = vec![
        (
            good.receipt.clone().sign(&stranger()),
            &out,
            ReceiptRefusal::Signature(piazza_ledger::sessions::SignatureError::WrongSigner {
                signer: stranger().public_key().address(),
            }),
        ),
        (good.clone(), b"other output", ReceiptRefusal::WrongOutput),
        (
            tampered(&|r| r.seq = 2),
            &out,
            ReceiptRefusal::WrongSeq {
                expected: 1,
                found: 2,
            },
        ),
        (
            tampered(&|r| r.input_hash = Hash::ZERO),
            &out,
            ReceiptRefusal::WrongInput,
        ),
        (
            tampered(&|r| r.units = 11),
            &out,
            ReceiptRefusal::TooManyUnits {
                units: 11,
                max_units: 10,
            },
        ),
        (
            tampered(&|r| r.price = Amount::new(41)),
            &out,
            ReceiptRefusal::Overpriced {
                price: Amount::new(41),
                units: 4,
                max_price_per_unit: MAX_PRICE,
            },
        ),
    ];
    for (receipt, output, expected) in cases {
        assert_eq!(client.accept(&receipt, output).unwrap_err(), expected);
        assert_eq!(client.paid(), Amount::ZERO);
    }
    // The signed prompt count: never none, and an embedding's is its units.
    assert_eq!(
        client
            .accept(&tampered(&|r| r.input_units = 0), &out)
            .unwrap_err(),
        ReceiptRefusal::WrongInputUnits {
            input_units: 0,
            units: 4
        }
    );
    assert_eq!(
        client
            .accept_embedding(&tampered(&|r| r.input_units = 5), &out)
            .unwrap_err(),
        ReceiptRefusal::WrongInputUnits {
            input_units: 5,
            units: 4
        }
    );
    assert_eq!(client.paid(), Amount::ZERO);
    let voucher = client.accept_embedding(&good, &out).unwrap();
    assert_eq!(voucher.voucher.total, Amount::new(28));
    assert_eq!(
        client.accept(&good, &out).unwrap_err(),
        ReceiptRefusal::NothingPending
    );
}

#[test]
fn an_abandoned_request_costs_nothing_and_its_seq_is_reused() {
    let (mut client, mut server) = channels(1_000);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    server.abandon(1);
    assert_eq!(client.abandon().map(|r| r.seq), Some(1));
    assert_eq!(client.paid(), Amount::ZERO);
    let again = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    assert_eq!(again.request.seq, 1);
    server.admit(&again).unwrap();
}

#[test]
fn uncommitted_receipts_are_bounded() {
    let (mut client, mut server) = channels(u128::MAX / 2);
    for _ in 0..RECEIPTS_PER_COMMIT_MAX {
        round(&mut client, &mut server, 1);
    }
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    check_refused(&mut server, &request, "queue_full");
    server.committed(RECEIPTS_PER_COMMIT_MAX);
    server.admit(&request).unwrap();
}

#[test]
fn a_snapshot_restores_the_same_channel() {
    let (mut client, mut server) = channels(1_000);
    round(&mut client, &mut server, 2);
    round(&mut client, &mut server, 5);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    let restored = ProviderChannel::restore(
        session(1_000),
        provider().public_key().address(),
        &server.snapshot(),
    )
    .unwrap();
    server.abandon(3);
    assert_eq!(restored, server);
    let mut bytes = server.snapshot();
    bytes.push(0);
    assert!(
        ProviderChannel::restore(session(1_000), provider().public_key().address(), &bytes)
            .is_err()
    );
}

#[test]
fn events_survive_any_split_and_bad_streams_fail_cleanly() {
    let (mut client, mut server) = channels(1_000);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    server.admit(&request).unwrap();
    let (receipt, _) = serve(&mut server, 4);
    let events = vec![
        Event::Delta {
            text: "line\none \"quoted\"".into(),
        },
        Event::Embedding {
            vector: vec![0.5, -1.25],
        },
        Event::receipt(receipt),
        Event::error("unpaid", "pay first"),
    ];
    let stream: String = events.iter().map(Event::to_sse).collect();
    for piece in [1, 7, stream.len()] {
        let mut reader = EventReader::new();
        let mut read = Vec::new();
        for chunk in stream.as_bytes().chunks(piece) {
            read.extend(reader.push(chunk).unwrap());
        }
        assert_eq!(read, events);
    }
    let mut reader = EventReader::new();
    assert!(reader.push(b"event: nope\ndata: {}\n\n").is_err());
    assert!(reader
        .push(b"event: receipt\ndata: {\"receipt\":\"zz\"}\n\n")
        .is_err());
    let mut reader = EventReader::new();
    assert!(reader.push(&vec![b'x'; EVENT_BYTES_MAX + 1]).is_err());
}

#[test]
fn bodies_round_trip_and_refuse_garbage() {
    let (mut client, _) = channels(1_000);
    let request = client
        .request(b"q".to_vec(), JobParams::default(), 10)
        .unwrap();
    let voucher = Voucher {
        session: 5,
        seq: 1,
        total: Amount::new(3),
    }
    .sign(&owner());
    let body = serde_json::to_vec(&RequestBody::new(&request, Some(&voucher))).unwrap();
    assert_eq!(
        RequestBody::parse(&body).unwrap(),
        (request.clone(), Some(voucher.clone()))
    );
    let body = serde_json::to_vec(&VoucherBody::new(&voucher)).unwrap();
    assert_eq!(VoucherBody::parse(&body).unwrap(), voucher);
    let mut truncated = request.to_bytes();
    truncated.pop();
    for garbage in [
        b"{".to_vec(),
        br#"{"request":"zz"}"#.to_vec(),
        format!(r#"{{"request":"{}"}}"#, hex::encode(&truncated)).into_bytes(),
        br#"{"request":"00","extra":1}"#.to_vec(),
    ] {
        assert!(RequestBody::parse(&garbage).is_err());
    }
    assert_eq!(
        SignedRequest::from_bytes(&request.to_bytes()).unwrap(),
        request
    );
}

/// What a (possibly hostile) client does next.
#[derive(Debug, Clone)]
enum Step {
    /// Sends the request the client channel makes (if it has none pending, else resends it).
    Request { max_units: u64 },
    /// Sends a request with a seq off by `delta` from the expected one.
    OffSeq { delta: i8 },
    /// The provider answers what is in flight with `units` units.
    Serve { units: u64 },
    /// The client checks the last receipt (possibly tampered with) and keeps the voucher.
    Check { tamper: bool },
    /// The client sends the voucher it holds, or one short by `short`.
    Pay { short: u8 },
    /// The client replays an older voucher.
    Replay,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1..12u64).prop_map(|max_units| Step::Request { max_units }),
        (-2..3i8).prop_map(|delta| Step::OffSeq { delta }),
        (0..12u64).prop_map(|units| Step::Serve { units }),
        any::<bool>().prop_map(|tamper| Step::Check { tamper }),
        (0..3u8).prop_map(|short| Step::Pay { short }),
        Just(Step::Replay),
    ]
}

proptest! {
    /// Under any interleaving, the provider never holds more than one unpaid receipt (and
    /// never more than one request's worst case unpaid), and the client's total is exactly
    /// the sum of the receipts it checked.
    #[test]
    fn nobody_risks_more_than_one_request(steps in prop::collection::vec(step(), 1..60)) {
        let (mut client, mut server) = channels(400);
        let mut receipt: Option<(SignedReceipt, Vec<u8>)> = None;
        let mut vouchers = Vec::new();
        let mut checked_total = Amount::ZERO;
        let mut sent = None;
        for step in steps {
            match step {
                Step::Request { max_units } => {
                    let request = match client.pending() {
                        Some(_) => sent.clone(),
                        None => client.request(b"q".to_vec(), JobParams::default(), max_units).ok(),
                    };
                    if let Some(request) = request {
                        let _ = server.admit(&request);
                        sent = Some(request);
                    }
                }
                Step::OffSeq { delta } => {
                    let seq = server.view().next_seq.saturating_add_signed(delta.into());
                    let request = piazza_ledger::sessions::Request {
                        session: 5, seq, input: b"x".to_vec(), params: JobParams::default(), max_units: 1,
                    }.sign(&owner());
                    let admitted = server.admit(&request).is_ok();
                    prop_assert!(!admitted || delta == 0);
                    if admitted {
                        server.abandon(seq);
                    }
                }
                Step::Serve { units } => {
                    if server.view().in_flight.is_some() {
                        let seq = server.view().in_flight.unwrap();
                        let out = output(seq);
                        match server.complete(Served { output: &out, trace_root: Hash::ZERO, units, input_units: 4, price_per_unit: PRICE }) {
                            Ok(r) => receipt = Some((r.sign(&provider()), out)),
                            Err(_) => server.abandon(seq),
                        }
                    }
                }
                Step::Check { tamper } => {
                    if let Some((r, out)) = &receipt {
                        let mut r = r.clone();
                        if tamper {
                            r.receipt.price = r.receipt.price.checked_add(Amount::new(1)).unwrap();
                        }
                        if let Ok(v) = client.accept(&r, out) {
                            prop_assert!(!tamper);
                            checked_total = checked_total.checked_add(r.receipt.price).unwrap();
                            vouchers.push(v);
                        }
                    }
                }
                Step::Pay { short } => {
                    if let Some(v) = vouchers.last() {
                        let v = if short > 0 {
                            let mut body = v.voucher.clone();
                            body.total = body.total.checked_sub(Amount::new(short.into())).unwrap_or(Amount::ZERO);
                            body.sign(&owner())
                        } else {
                            v.clone()
                        };
                        let paid = server.pay(&v).is_ok();
                        prop_assert!(!paid || short == 0 || server.view().owed <= v.voucher.total);
                    }
                }
                Step::Replay => {
                    if let Some(v) = vouchers.first() {
                        let _ = server.pay(v);
                    }
                }
            }
            let view = server.view();
            let unpaid = view.owed.checked_sub(view.paid).unwrap_or(Amount::ZERO);
            prop_assert!(view.served_seq <= view.paid_seq + 1);
            prop_assert!(unpaid <= MAX_PRICE.checked_mul(11).unwrap());
            prop_assert!(view.paid <= session(400).deposit);
            prop_assert_eq!(client.paid(), checked_total);
        }
    }
}
