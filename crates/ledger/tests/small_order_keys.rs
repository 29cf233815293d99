//! Keys of small order have no secret: under ZIP-215 `R` = identity with `s = 0` verifies any
//! message for them. The ledger refuses them wherever a key signs a transaction or is
//! registered or bound to value (`small_order_key`, 18), and accepts ordinary keys there.

mod common;

use common::{failed, Chain};
use piazza_ledger::bank::{self, authorization::TransferAuthorization};
use piazza_ledger::executor::{check_admission, BlockExecutor};
use piazza_ledger::grants::{self, MessageKind, Rate, Scope};
use piazza_ledger::module::BlockContext;
use piazza_ledger::sessions;
use piazza_ledger::staking::validators;
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{check_stateless, Message, SignedTransaction, Transaction};
use piazza_ledger::ErrorCode;
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey, Signature};

/// The 8 points of small order in their canonical encodings (identity, order 2, the two of
/// order 4, the four of order 8).
const SMALL_ORDER_KEYS_HEX: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
];

fn small_order_keys() -> Vec<PublicKey> {
    let keys: Vec<PublicKey> = SMALL_ORDER_KEYS_HEX
        .iter()
        .map(|h| {
            let mut bytes = [0u8; 32];
            for (i, byte) in bytes.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
            }
            PublicKey(bytes)
        })
        .collect();
    for key in &keys {
        assert!(key.is_small_order(), "{key}");
    }
    keys
}

/// The signature anyone can make for a small-order key: `R` = identity, `s` = 0.
fn forged() -> Signature {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    Signature(bytes)
}

fn code(result: Result<(), piazza_ledger::TxError>) -> Option<ErrorCode> {
    result.err().map(|e| e.code)
}

#[test]
fn a_transaction_signed_by_a_small_order_key_is_refused_though_its_signature_verifies() {
    let user = SecretKey::from_seed([7; 32]);
    let mut chain = Chain::new(&[&user], Default::default());
    for key in small_order_keys() {
        let tx = Transaction {
            chain_id: "compute".into(),
            sender: key,
            nonce: 0,
            max_fee: Amount::pza(1),
            messages: vec![Message::Bank(bank::Msg::Send {
                to: Address([2; 20]),
                amount: Amount::new(1),
            })],
        };
        assert_eq!(key.verify(&tx.sign_bytes(), &forged()), Ok(()));
        let tx = SignedTransaction::new(tx, forged());
        assert_eq!(tx.verify_signature(), Ok(()));
        for signature_checked in [false, true] {
            assert_eq!(
                code(check_stateless(&tx, "compute", signature_checked)),
                Some(ErrorCode::SmallOrderKey)
            );
        }
        let admitted = check_admission(&chain.state, &tx, 16).map(|_| ());
        assert_eq!(code(admitted), Some(ErrorCode::SmallOrderKey));
        assert_eq!(code(include(&chain, &tx)), Some(ErrorCode::SmallOrderKey));
    }
    // An ordinary signer passes the same checks.
    let tx = chain.tx(
        &user,
        Message::Bank(bank::Msg::Send {
            to: Address([2; 20]),
            amount: Amount::new(1),
        }),
    );
    assert_eq!(code(check_stateless(&tx, "compute", false)), None);
    assert_eq!(code(include(&chain, &tx)), None);
    let (receipts, _) = chain.block(vec![tx]);
    assert_eq!(failed(&receipts[0]), None);
}

/// Whether the next block of `chain` could include `tx` (what a proposal's validation asks).
fn include(chain: &Chain, tx: &SignedTransaction) -> Result<(), piazza_ledger::TxError> {
    let context = BlockContext {
        chain_id: "compute".into(),
        height: chain.height + 1,
        time_ms: chain.height + 1,
        randomness: Hash([5; 32]),
        proposer: chain.validator.public_key(),
    };
    let mut executor = BlockExecutor::begin(&chain.state, context);
    executor.apply_tx(tx, false).map(|_| ())
}

/// `message` in a transaction by `user`, checked as admission and inclusion check it.
fn refusal(chain: &Chain, user: &SecretKey, message: Message) -> Option<ErrorCode> {
    let tx = Transaction {
        chain_id: "compute".into(),
        sender: user.public_key(),
        nonce: 0,
        max_fee: Amount::pza(1),
        messages: vec![message],
    }
    .sign(user);
    let stateless = code(check_stateless(&tx, "compute", false));
    assert_eq!(code(include(chain, &tx)), stateless);
    stateless
}

fn grant_to(grantee: PublicKey) -> Message {
    Message::Grants(grants::Msg::Grant {
        grantee,
        scope: Scope {
            kinds: vec![MessageKind {
                module: 1,
                message: 0,
            }],
            amount_per_message_max: Amount::new(10),
            recipients: None,
            agents: None,
            spend_cap: Amount::pza(1),
            rate: Rate {
                messages_max: 1,
                per_blocks: 1,
            },
            expiry_height: 1_000,
        },
    })
}

fn open_session(owner: &SecretKey, authorised: PublicKey) -> Message {
    Message::Sessions(sessions::Msg::Open {
        model: "m".into(),
        owner_key: owner.public_key(),
        authorised: Some(authorised),
        deposit: Amount::pza(1),
        max_price_per_unit: Amount::new(1),
        expiry_blocks: 10,
    })
}

fn settle_from(from: PublicKey, signature: Signature) -> Message {
    Message::Bank(bank::Msg::SettleAuthorization {
        authorization: TransferAuthorization {
            from,
            to: Address([3; 20]),
            amount: Amount::new(1),
            valid_after: 0,
            valid_before: u64::MAX,
            nonce: Hash([4; 32]),
        },
        signature,
    })
}

#[test]
fn a_small_order_key_is_refused_as_grantee_session_key_authorization_signer_and_validator() {
    let user = SecretKey::from_seed([8; 32]);
    let ordinary = SecretKey::from_seed([9; 32]).public_key();
    let chain = Chain::new(&[&user], Default::default());
    for key in small_order_keys() {
        for message in [
            grant_to(key),
            open_session(&user, key),
            settle_from(key, forged()),
        ] {
            assert_eq!(
                refusal(&chain, &user, message),
                Some(ErrorCode::SmallOrderKey)
            );
        }
        let mut state = StateDelta::new(&chain.state);
        assert_eq!(
            code(validators::register(&mut state, &key)),
            Some(ErrorCode::SmallOrderKey)
        );
    }
    // Ordinary keys in the same places pass those checks.
    for message in [
        grant_to(ordinary),
        open_session(&user, ordinary),
        settle_from(ordinary, forged()),
    ] {
        assert_eq!(refusal(&chain, &user, message), None);
    }
    let mut state = StateDelta::new(&chain.state);
    assert_eq!(code(validators::register(&mut state, &ordinary)), None);
}
