//! `bank`: accounts, the native token PZA and transfers.
//!
//! Invariant: the sum of all account balances equals `supply`; only `mint` and `burn` change the
//! supply, and only genesis and slashing call them.

pub mod assets;
pub mod authorization;
pub mod curve;
pub mod shares;
pub mod state_key;

use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::GenesisError;
use crate::module::{Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Signature};

/// The account that collects transaction fees.
pub fn treasury() -> Address {
    Address::module("treasury")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Send {
        to: Address,
        amount: Amount,
    },
    /// Settles an x402 transfer authorization `from` signed (any account may submit it).
    SettleAuthorization {
        authorization: authorization::TransferAuthorization,
        signature: Signature,
    },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Send { to, amount } => {
                w.u8(0);
                w.value(to);
                w.value(amount);
            }
            Msg::SettleAuthorization {
                authorization,
                signature,
            } => {
                w.u8(1);
                w.value(authorization);
                w.value(signature);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Send {
                to: r.value()?,
                amount: r.value()?,
            }),
            1 => Ok(Msg::SettleAuthorization {
                authorization: r.value()?,
                signature: r.value()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "bank message",
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
}

impl Encode for Account {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.balance);
        w.u64(self.nonce);
    }
}

impl Decode for Account {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Account {
            balance: r.value()?,
            nonce: r.u64()?,
        })
    }
}

pub fn account(state: &StateDelta<'_>, address: &Address) -> Account {
    state.get(&state_key::account(address)).unwrap_or_default()
}

pub fn put_account(state: &mut StateDelta<'_>, address: &Address, account: &Account) {
    state.put(state_key::account(address), account);
}

pub fn supply(state: &StateDelta<'_>) -> Amount {
    state.get(&state_key::supply()).unwrap_or_default()
}

fn insufficient(address: &Address, balance: Amount, needed: Amount) -> TxError {
    TxError::new(
        ErrorCode::InsufficientFunds,
        format!("{address} holds {balance} PZA, needs {needed} PZA"),
    )
}

pub fn debit(state: &mut StateDelta<'_>, address: &Address, amount: Amount) -> Result<(), TxError> {
    let mut acct = account(state, address);
    acct.balance = acct
        .balance
        .checked_sub(amount)
        .ok_or_else(|| insufficient(address, acct.balance, amount))?;
    put_account(state, address, &acct);
    Ok(())
}

pub fn credit(
    state: &mut StateDelta<'_>,
    address: &Address,
    amount: Amount,
) -> Result<(), TxError> {
    let mut acct = account(state, address);
    acct.balance = acct.balance.checked_add(amount).ok_or_else(|| {
        TxError::new(
            ErrorCode::Overflow,
            format!("balance of {address} would overflow"),
        )
    })?;
    put_account(state, address, &acct);
    Ok(())
}

pub fn transfer(
    state: &mut StateDelta<'_>,
    from: &Address,
    to: &Address,
    amount: Amount,
) -> Result<(), TxError> {
    debit(state, from, amount)?;
    credit(state, to, amount)
}

/// Creates new tokens. Only genesis and the protocol's own rules call this.
pub fn mint(state: &mut StateDelta<'_>, to: &Address, amount: Amount) -> Result<(), TxError> {
    let total = supply(state)
        .checked_add(amount)
        .ok_or_else(|| TxError::new(ErrorCode::Overflow, "supply would overflow"))?;
    credit(state, to, amount)?;
    state.put(state_key::supply(), &total);
    Ok(())
}

/// Destroys tokens held by `from` (for example the burned share of a slash).
pub fn burn(state: &mut StateDelta<'_>, from: &Address, amount: Amount) -> Result<(), TxError> {
    debit(state, from, amount)?;
    let total = supply(state)
        .checked_sub(amount)
        .expect("supply covers every balance");
    state.put(state_key::supply(), &total);
    Ok(())
}

/// An account funded at genesis (the bank's genesis section is a list of them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: Amount,
}

pub struct Bank;

impl Module for Bank {
    type Msg = Msg;
    type Genesis = [GenesisAccount];
    const NAME: &'static str = "bank";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Send { .. } => 10,
            Msg::SettleAuthorization { .. } => authorization::fee_units(),
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Send { amount, .. } if amount.is_zero() => Err(TxError::new(
                ErrorCode::InvalidMessage,
                "a transfer needs a positive amount",
            )),
            Msg::Send { .. } => Ok(()),
            Msg::SettleAuthorization { authorization, .. } => authorization.check_stateless(),
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Send { amount, .. } => {
                let balance = account(state, &ctx.sender).balance;
                if balance < *amount {
                    return Err(insufficient(&ctx.sender, balance, *amount));
                }
                Ok(())
            }
            Msg::SettleAuthorization {
                authorization,
                signature,
            } => authorization::check_stateful(state, ctx, authorization, signature),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Send { to, amount } => {
                transfer(state, &ctx.sender, to, *amount)?;
                ctx.emit(Event::new(
                    "bank.transfer",
                    &[
                        ("from", ctx.sender.to_string()),
                        ("to", to.to_string()),
                        ("amount", amount.base_units().to_string()),
                    ],
                ));
                Ok(())
            }
            Msg::SettleAuthorization { authorization, .. } => {
                authorization::execute(state, ctx, authorization)
            }
        }
    }

    fn init_chain(
        state: &mut StateDelta<'_>,
        accounts: &[GenesisAccount],
    ) -> Result<(), GenesisError> {
        for entry in accounts {
            mint(state, &entry.address, entry.balance)
                .map_err(|e| GenesisError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}
