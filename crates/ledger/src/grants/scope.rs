//! What a grant allows: [`Scope`], and how one message uses it ([`Use`]).

use crate::error::{ErrorCode, TxError};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount};

/// Most message kinds one grant names.
pub const KINDS_MAX: usize = 32;
/// Most recipients (and, separately, agents) one grant names.
pub const PARTIES_MAX: usize = 32;

/// A kind of message: its module's tag and its own tag in that module, the first two bytes
/// of its canonical encoding (`bank::Msg::Send` is `{1, 0}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKind {
    pub module: u8,
    pub message: u8,
}

impl Encode for MessageKind {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.module);
        w.u8(self.message);
    }
}

impl Decode for MessageKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MessageKind {
            module: r.u8()?,
            message: r.u8()?,
        })
    }
}

/// Whom a message pays, when it names someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Account(Address),
    Agent(u64),
}

/// How one message of a grantee's transaction uses the grant: its kind, the amount it declares
/// it moves out of the owner's account, and whom it pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    pub kind: MessageKind,
    pub amount: Amount,
    pub party: Option<Party>,
}

/// At most `messages_max` messages in any window of `per_blocks` blocks (windows start at the
/// first message after the previous window ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub messages_max: u32,
    pub per_blocks: u64,
}

/// What an owner lets a key do. `recipients` and `agents` are `None` for "any"; `Some` of a
/// list allows only those (an empty list: no message that pays an account, or an agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Sorted, without repeats, non-empty.
    pub kinds: Vec<MessageKind>,
    /// The most one message may move out of the owner's account (declared or measured).
    pub amount_per_message_max: Amount,
    pub recipients: Option<Vec<Address>>,
    pub agents: Option<Vec<u64>>,
    /// The most the grantee may spend in all, fees included.
    pub spend_cap: Amount,
    pub rate: Rate,
    /// The first height at which the grant no longer acts.
    pub expiry_height: u64,
}

impl Encode for Scope {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.kinds);
        w.value(&self.amount_per_message_max);
        w.option(
            &self
                .recipients
                .as_ref()
                .map(|list| AddressList(list.clone())),
        );
        w.option(&self.agents.as_ref().map(|list| AgentList(list.clone())));
        w.value(&self.spend_cap);
        w.u32(self.rate.messages_max);
        w.u64(self.rate.per_blocks);
        w.u64(self.expiry_height);
    }
}

impl Decode for Scope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Scope {
            kinds: r.seq(KINDS_MAX)?,
            amount_per_message_max: r.value()?,
            recipients: r.option::<AddressList>()?.map(|l| l.0),
            agents: r.option::<AgentList>()?.map(|l| l.0),
            spend_cap: r.value()?,
            rate: Rate {
                messages_max: r.u32()?,
                per_blocks: r.u64()?,
            },
            expiry_height: r.u64()?,
        })
    }
}

struct AddressList(Vec<Address>);

impl Encode for AddressList {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl Decode for AddressList {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AddressList(r.seq(PARTIES_MAX)?))
    }
}

struct AgentList(Vec<u64>);

impl Encode for AgentList {
    fn encode(&self, w: &mut Writer) {
        w.len(self.0.len());
        for id in &self.0 {
            w.u64(*id);
        }
    }
}

impl Decode for AgentList {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len(PARTIES_MAX)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(r.u64()?);
        }
        Ok(AgentList(ids))
    }
}

fn invalid(message: &str) -> TxError {
    TxError::new(ErrorCode::InvalidMessage, message)
}

fn exceeded(message: String) -> TxError {
    TxError::new(ErrorCode::GrantExceeded, message)
}

impl Scope {
    pub(super) fn recipients_len(&self) -> usize {
        self.recipients.as_ref().map_or(0, Vec::len)
    }

    pub(super) fn agents_len(&self) -> usize {
        self.agents.as_ref().map_or(0, Vec::len)
    }

    /// The rules a scope must meet to be granted.
    pub fn validate(&self) -> Result<(), TxError> {
        if self.kinds.is_empty() {
            return Err(invalid("a grant names at least one message kind"));
        }
        if !self.kinds.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(invalid("a grant's kinds are sorted and without repeats"));
        }
        if self.kinds.iter().any(|k| k.module == super::MODULE_TAG) {
            return Err(invalid("a grantee can never send grants messages"));
        }
        if self.rate.per_blocks == 0 || self.rate.messages_max == 0 {
            return Err(invalid(
                "a grant's rate needs at least one message per block span",
            ));
        }
        if self.spend_cap.is_zero() {
            return Err(invalid(
                "a grant needs a positive spend cap (fees count against it)",
            ));
        }
        Ok(())
    }

    /// Whether one message's use fits: an allowed kind, within the per-message amount, to an
    /// allowed recipient or agent.
    pub fn allows(&self, one: &Use) -> Result<(), TxError> {
        if one.kind.module == super::MODULE_TAG || self.kinds.binary_search(&one.kind).is_err() {
            return Err(exceeded(format!(
                "the grant does not allow message kind {}/{}",
                one.kind.module, one.kind.message
            )));
        }
        super::check_message_amount(self, one.amount)?;
        let refused = match one.party {
            Some(Party::Account(to)) => self
                .recipients
                .as_ref()
                .filter(|list| !list.contains(&to))
                .map(|_| format!("the grant does not allow paying {to}")),
            Some(Party::Agent(agent)) => self
                .agents
                .as_ref()
                .filter(|list| !list.contains(&agent))
                .map(|_| format!("the grant does not allow paying agent {agent}")),
            None => None,
        };
        if let Some(message) = refused {
            return Err(exceeded(message));
        }
        Ok(())
    }
}
