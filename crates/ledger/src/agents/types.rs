//! The agents module's records: agents with their history, and paid calls.

use crate::bank::assets::AssetId;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};

/// Longest agent name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Longest description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 1024;
/// Most endpoints of one agent.
pub const ENDPOINTS_MAX: usize = 4;
/// Longest endpoint URL, in bytes.
pub const URL_BYTES_MAX: usize = 256;
/// Most capability tags of one agent.
pub const TAGS_MAX: usize = 8;
/// Longest capability tag, in bytes (`a-z`, `0-9`, `-`).
pub const TAG_BYTES_MAX: usize = 32;

/// The protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// Google's Agent2Agent (the URL serves `/.well-known/agent-card.json`).
    A2a = 0,
    /// Anthropic's Model Context Protocol (Streamable HTTP).
    Mcp = 1,
    /// Plain HTTP, paid with x402.
    Http = 2,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::A2a, Protocol::Mcp, Protocol::Http];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::A2a => "a2a",
            Protocol::Mcp => "mcp",
            Protocol::Http => "http",
        }
    }
}

impl Encode for Protocol {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for Protocol {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let tag = r.u8()?;
        Protocol::ALL
            .get(tag as usize)
            .copied()
            .ok_or(DecodeError::InvalidTag {
                offset,
                tag,
                what: "agent protocol",
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub url: String,
}

impl Encode for Endpoint {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.protocol);
        w.str(&self.url);
    }
}

impl Decode for Endpoint {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Endpoint {
            protocol: r.value()?,
            url: r.string(URL_BYTES_MAX)?,
        })
    }
}

/// What the owner states about an agent (registration and update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub description: String,
    pub endpoints: Vec<Endpoint>,
    /// Capability tags, sorted and without repeats.
    pub tags: Vec<String>,
    /// The least a call escrows.
    pub price: Amount,
}

struct Tag(String);

impl Encode for Tag {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.0)
    }
}

impl Decode for Tag {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Tag(r.string(TAG_BYTES_MAX)?))
    }
}

impl Encode for Profile {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.description);
        w.seq(&self.endpoints);
        w.len(self.tags.len());
        for tag in &self.tags {
            w.str(tag);
        }
        w.value(&self.price);
    }
}

impl Decode for Profile {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Profile {
            description: r.string(DESCRIPTION_BYTES_MAX)?,
            endpoints: r.seq(ENDPOINTS_MAX)?,
            tags: r.seq::<Tag>(TAGS_MAX)?.into_iter().map(|t| t.0).collect(),
            price: r.value()?,
        })
    }
}

/// What paid, settled calls and their ratings say about an agent. Self-calls (the payer owns
/// the agent) never count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// Calls answered and released.
    pub completed: u64,
    /// Calls refunded because the agent did not answer by the deadline.
    pub timeouts: u64,
    /// What completed calls paid.
    pub paid: Amount,
    /// Σ rating × what the rated call paid (ratings 1..=5).
    pub rating_points: u128,
    /// Σ what the rated calls paid.
    pub rated_paid: Amount,
}

impl Encode for History {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.completed);
        w.u64(self.timeouts);
        w.value(&self.paid);
        w.u128(self.rating_points);
        w.value(&self.rated_paid);
    }
}

impl Decode for History {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(History {
            completed: r.u64()?,
            timeouts: r.u64()?,
            paid: r.value()?,
            rating_points: r.u128()?,
            rated_paid: r.value()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    pub profile: Profile,
    /// Held by the agents module while the agent is active; returned on deactivation.
    pub stake: Amount,
    /// The agent's share asset (`AssetId::Agent(name)`), when it offers one.
    pub share_asset: Option<AssetId>,
    pub active: bool,
    pub registered_height: u64,
    pub history: History,
}

impl Encode for Agent {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.value(&self.owner);
        w.str(&self.name);
        w.value(&self.profile);
        w.value(&self.stake);
        w.option(&self.share_asset);
        w.bool(self.active);
        w.u64(self.registered_height);
        w.value(&self.history);
    }
}

impl Decode for Agent {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Agent {
            id: r.u64()?,
            owner: r.value()?,
            name: r.string(NAME_BYTES_MAX)?,
            profile: r.value()?,
            stake: r.value()?,
            share_asset: r.option()?,
            active: r.bool()?,
            registered_height: r.u64()?,
            history: r.value()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CallStatus {
    /// Escrowed, waiting for the agent's result until `deadline`.
    Open = 0,
    /// The result hash is posted; the payer may release now, or it releases at `release_at`.
    Answered = 1,
    /// Paid to the agent's owner.
    Settled = 2,
    /// Refunded to the payer (no answer by the deadline).
    Refunded = 3,
}

impl Encode for CallStatus {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for CallStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(CallStatus::Open),
            1 => Ok(CallStatus::Answered),
            2 => Ok(CallStatus::Settled),
            3 => Ok(CallStatus::Refunded),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "call status",
            }),
        }
    }
}

/// A paid call: the payer's escrow for one request to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub id: u64,
    pub agent: u64,
    pub payer: Address,
    pub amount: Amount,
    pub request_hash: Hash,
    pub result_hash: Option<Hash>,
    pub status: CallStatus,
    /// The last height at which the agent may answer.
    pub deadline: u64,
    /// When an answered call releases by itself.
    pub release_at: u64,
    /// The payer's rating (1..=5), once given.
    pub rating: Option<u8>,
}

impl Encode for Call {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.u64(self.agent);
        w.value(&self.payer);
        w.value(&self.amount);
        w.value(&self.request_hash);
        w.option(&self.result_hash);
        w.value(&self.status);
        w.u64(self.deadline);
        w.u64(self.release_at);
        match self.rating {
            None => w.u8(0),
            Some(r) => {
                w.u8(1);
                w.u8(r);
            }
        }
    }
}

impl Decode for Call {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Call {
            id: r.u64()?,
            agent: r.u64()?,
            payer: r.value()?,
            amount: r.value()?,
            request_hash: r.value()?,
            result_hash: r.option()?,
            status: r.value()?,
            deadline: r.u64()?,
            release_at: r.u64()?,
            rating: match r.bool()? {
                false => None,
                true => Some(r.u8()?),
            },
        })
    }
}
