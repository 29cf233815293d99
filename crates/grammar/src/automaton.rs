//! The byte automaton: a state is a sorted, deduplicated set of configurations, each a bounded
//! stack of frames (the value being written and the containers around it). Nesting and every
//! string, number and array are bounded, so the state space is finite: a deterministic finite
//! automaton over bytes, run without building its table.

use crate::schema::{Node, NodeId, Nodes};
use crate::{CONFIGS_MAX, DEPTH_MAX, NUMBER_DIGITS_MAX};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum StringPhase {
    Open,
    Body,
    Escape,
    /// Inside a multi-byte UTF-8 character: `left` continuation bytes, the next in `lo..=hi`.
    Utf8 {
        left: u8,
        lo: u8,
        hi: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum NumberPhase {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ObjectPhase {
    Open,
    /// After `{`: a key of property `from` or later, or `}`.
    FirstKeyOrClose,
    /// After `,`: a key of property `from` or later.
    Key {
        from: u32,
    },
    InKey {
        property: u32,
        at: u32,
    },
    Colon {
        property: u32,
    },
    /// After a value: `,` and a later property, or `}`.
    CommaOrClose {
        from: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ListPhase {
    Open,
    FirstOrClose,
    Next,
    /// Maps only: the key was written, `:` comes next.
    Colon,
    CommaOrClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Frame {
    Literal {
        node: NodeId,
        at: u32,
    },
    String {
        node: NodeId,
        chars: u32,
        phase: StringPhase,
    },
    Number {
        node: NodeId,
        digits: u32,
        phase: NumberPhase,
    },
    Object {
        node: NodeId,
        phase: ObjectPhase,
    },
    /// An array or a map; `count` items or members so far.
    List {
        node: NodeId,
        count: u32,
        phase: ListPhase,
    },
}

/// A state of the automaton (compare with `==`; equal states accept the same continuations).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    configs: Vec<Vec<Frame>>,
}

/// What the top frame does with a byte.
enum Action {
    Reject,
    Stay(Frame),
    /// Consumed, and the frame is complete.
    Done,
    /// The frame was complete before this byte (a number): pop it, give the byte to its parent.
    DoneRefeed,
    /// Consumed; the frame becomes `.0` and a value of node `.1` begins.
    Push(Frame, NodeId),
    /// Not consumed: the frame becomes `.0` and the byte begins a value of node `.1`.
    PushRefeed(Frame, NodeId),
    /// Consumed, in one of several ways (which property's key).
    Branch(Vec<Frame>),
}

impl Nodes {
    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    fn min(&self, id: NodeId) -> u64 {
        self.min_bytes.get(id as usize).copied().unwrap_or(0)
    }

    pub(crate) fn start(&self) -> State {
        let mut configs = Vec::new();
        for frame in self.starts(self.root) {
            configs.push(vec![frame]);
        }
        State { configs }
    }

    /// The frames a value of `id` may begin as (one per `anyOf` alternative, flattened).
    fn starts(&self, id: NodeId) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut pending = vec![id];
        while let Some(id) = pending.pop() {
            let frame = match self.node(id) {
                Some(Node::Literal(_)) => Frame::Literal { node: id, at: 0 },
                Some(Node::String { .. }) => Frame::String {
                    node: id,
                    chars: 0,
                    phase: StringPhase::Open,
                },
                Some(Node::Number { .. }) => Frame::Number {
                    node: id,
                    digits: 0,
                    phase: NumberPhase::Start,
                },
                Some(Node::Object { .. }) => Frame::Object {
                    node: id,
                    phase: ObjectPhase::Open,
                },
                Some(Node::Map { .. } | Node::Array { .. }) => Frame::List {
                    node: id,
                    count: 0,
                    phase: ListPhase::Open,
                },
                Some(Node::AnyOf(alternatives)) => {
                    // Reversed so the popped order is the schema's order.
                    pending.extend(alternatives.iter().rev());
                    continue;
                }
                None => continue,
            };
            out.push(frame);
        }
        out
    }

    /// The state after `bytes`, or `None` when no configuration accepts them.
    pub(crate) fn advance(&self, state: &State, bytes: &[u8]) -> Option<State> {
        let mut configs = state.configs.clone();
        for &byte in bytes {
            let mut next = Vec::new();
            for config in configs {
                self.feed(config, byte, &mut next);
                if next.len() > CONFIGS_MAX * 4 {
                    return None;
                }
            }
            next.sort_unstable();
            next.dedup();
            if next.is_empty() || next.len() > CONFIGS_MAX {
                return None;
            }
            configs = next;
        }
        Some(State { configs })
    }

    fn feed(&self, mut stack: Vec<Frame>, byte: u8, out: &mut Vec<Vec<Frame>>) {
        let Some(&top) = stack.last() else {
            return;
        };
        match self.step(top, byte) {
            Action::Reject => {}
            Action::Stay(frame) => {
                if let Some(last) = stack.last_mut() {
                    *last = frame;
                }
                out.push(stack);
            }
            Action::Done => {
                stack.pop();
                out.push(stack);
            }
            Action::DoneRefeed => {
                stack.pop();
                self.feed(stack, byte, out);
            }
            Action::Push(frame, child) => self.push(stack, frame, child, None, out),
            Action::PushRefeed(frame, child) => self.push(stack, frame, child, Some(byte), out),
            Action::Branch(frames) => {
                for frame in frames {
                    let mut branch = stack.clone();
                    if let Some(last) = branch.last_mut() {
                        *last = frame;
                    }
                    out.push(branch);
                }
            }
        }
    }

    /// Replace the top with `frame` and begin a value of `child` above it (then feed it
    /// `refeed`, the byte that begins it, when the parent did not consume that byte).
    fn push(
        &self,
        mut stack: Vec<Frame>,
        frame: Frame,
        child: NodeId,
        refeed: Option<u8>,
        out: &mut Vec<Vec<Frame>>,
    ) {
        if stack.len() > DEPTH_MAX + 1 {
            return;
        }
        if let Some(last) = stack.last_mut() {
            *last = frame;
        }
        for start in self.starts(child) {
            let mut branch = stack.clone();
            branch.push(start);
            match refeed {
                Some(byte) => self.feed(branch, byte, out),
                None => out.push(branch),
            }
        }
    }

    fn step(&self, frame: Frame, byte: u8) -> Action {
        match frame {
            Frame::Literal { node, at } => {
                let Some(Node::Literal(bytes)) = self.node(node) else {
                    return Action::Reject;
                };
                match bytes.get(at as usize) {
                    Some(&b) if b == byte && at as usize + 1 == bytes.len() => Action::Done,
                    Some(&b) if b == byte => Action::Stay(Frame::Literal { node, at: at + 1 }),
                    _ => Action::Reject,
                }
            }
            Frame::String { node, chars, phase } => {
                let Some(Node::String { chars_max }) = self.node(node) else {
                    return Action::Reject;
                };
                string_step(node, chars, *chars_max, phase, byte)
            }
            Frame::Number {
                node,
                digits,
                phase,
            } => {
                let Some(Node::Number { integer }) = self.node(node) else {
                    return Action::Reject;
                };
                number_step(node, *integer, digits, phase, byte)
            }
            Frame::Object { node, phase } => {
                let Some(Node::Object { properties }) = self.node(node) else {
                    return Action::Reject;
                };
                self.object_step(node, properties, phase, byte)
            }
            Frame::List { node, count, phase } => self.list_step(node, count, phase, byte),
        }
    }

    fn object_step(
        &self,
        node: NodeId,
        properties: &[crate::schema::Property],
        phase: ObjectPhase,
        byte: u8,
    ) -> Action {
        let frame = |phase| Frame::Object { node, phase };
        // Properties that may come next from `from` on: up to and including the first
        // required one (a required property cannot be skipped).
        let candidates = |from: u32| {
            let mut list = Vec::new();
            for (i, p) in properties.iter().enumerate().skip(from as usize) {
                list.push(frame(ObjectPhase::InKey {
                    property: i as u32,
                    at: 1,
                }));
                if p.required {
                    break;
                }
            }
            list
        };
        let may_close = |from: u32| !properties.iter().skip(from as usize).any(|p| p.required);
        match (phase, byte) {
            (ObjectPhase::Open, b'{') => Action::Stay(frame(ObjectPhase::FirstKeyOrClose)),
            (ObjectPhase::FirstKeyOrClose, b'}') if may_close(0) => Action::Done,
            (ObjectPhase::FirstKeyOrClose, b'"') => branch(candidates(0)),
            (ObjectPhase::Key { from }, b'"') => branch(candidates(from)),
            (ObjectPhase::InKey { property, at }, b) => {
                let Some(key) = properties.get(property as usize).map(|p| &p.key) else {
                    return Action::Reject;
                };
                match key.get(at as usize) {
                    Some(&k) if k == b && at as usize + 1 == key.len() => {
                        Action::Stay(frame(ObjectPhase::Colon { property }))
                    }
                    Some(&k) if k == b => Action::Stay(frame(ObjectPhase::InKey {
                        property,
                        at: at + 1,
                    })),
                    _ => Action::Reject,
                }
            }
            (ObjectPhase::Colon { property }, b':') => match properties.get(property as usize) {
                Some(p) => Action::Push(
                    frame(ObjectPhase::CommaOrClose { from: property + 1 }),
                    p.value,
                ),
                None => Action::Reject,
            },
            (ObjectPhase::CommaOrClose { from }, b',') if (from as usize) < properties.len() => {
                Action::Stay(frame(ObjectPhase::Key { from }))
            }
            (ObjectPhase::CommaOrClose { from }, b'}') if may_close(from) => Action::Done,
            _ => Action::Reject,
        }
    }

    fn list_step(&self, node: NodeId, count: u32, phase: ListPhase, byte: u8) -> Action {
        let frame = |count, phase| Frame::List { node, count, phase };
        match self.node(node) {
            Some(&Node::Array { items, items_max }) => match (phase, byte) {
                (ListPhase::Open, b'[') => Action::Stay(frame(0, ListPhase::FirstOrClose)),
                (ListPhase::FirstOrClose, b']') => Action::Done,
                (ListPhase::FirstOrClose | ListPhase::Next, _) if count < items_max => {
                    Action::PushRefeed(frame(count + 1, ListPhase::CommaOrClose), items)
                }
                (ListPhase::CommaOrClose, b',') if count < items_max => {
                    Action::Stay(frame(count, ListPhase::Next))
                }
                (ListPhase::CommaOrClose, b']') => Action::Done,
                _ => Action::Reject,
            },
            Some(&Node::Map {
                key,
                value,
                entries_max,
            }) => match (phase, byte) {
                (ListPhase::Open, b'{') => Action::Stay(frame(0, ListPhase::FirstOrClose)),
                (ListPhase::FirstOrClose, b'}') => Action::Done,
                (ListPhase::FirstOrClose | ListPhase::Next, b'"') if count < entries_max => {
                    Action::PushRefeed(frame(count, ListPhase::Colon), key)
                }
                (ListPhase::Colon, b':') => {
                    Action::Push(frame(count + 1, ListPhase::CommaOrClose), value)
                }
                (ListPhase::CommaOrClose, b',') if count < entries_max => {
                    Action::Stay(frame(count, ListPhase::Next))
                }
                (ListPhase::CommaOrClose, b'}') => Action::Done,
                _ => Action::Reject,
            },
            _ => Action::Reject,
        }
    }

    /// Whether the bytes so far are a whole value (a number may still grow).
    pub(crate) fn is_complete(&self, state: &State) -> bool {
        state.configs.iter().any(|config| match config.as_slice() {
            [] => true,
            [Frame::Number { phase, .. }] => number_accepts(*phase),
            _ => false,
        })
    }

    /// The fewest bytes that complete the value from `state`.
    pub(crate) fn min_bytes_to_complete(&self, state: &State) -> u64 {
        state
            .configs
            .iter()
            .map(|config| config.iter().map(|f| self.rest(*f)).sum::<u64>())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Fewest bytes that complete `frame`, its active child (if any) being complete.
    fn rest(&self, frame: Frame) -> u64 {
        match frame {
            Frame::Literal { node, at } => self.min(node).saturating_sub(u64::from(at)),
            Frame::String { phase, .. } => match phase {
                StringPhase::Open | StringPhase::Escape => 2,
                StringPhase::Body => 1,
                StringPhase::Utf8 { left, .. } => u64::from(left) + 1,
            },
            Frame::Number { phase, .. } => u64::from(!number_accepts(phase)),
            Frame::Object { node, phase } => {
                let Some(Node::Object { properties }) = self.node(node) else {
                    return 0;
                };
                let entry = |i: usize| {
                    properties
                        .get(i)
                        .map_or(0, |p| p.key.len() as u64 + 1 + self.min(p.value))
                };
                // `,` + entry for each required property from `from` on, then `}`.
                let after = |from: u32| {
                    1 + (from as usize..properties.len())
                        .filter(|&i| properties[i].required)
                        .map(|i| 1 + entry(i))
                        .sum::<u64>()
                };
                match phase {
                    ObjectPhase::Open => self.min(node),
                    ObjectPhase::FirstKeyOrClose => self.min(node) - 1,
                    ObjectPhase::Key { from } => (from as usize..properties.len())
                        .take_while(|&i| i == from as usize || !properties[i - 1].required)
                        .map(|i| entry(i) + after(i as u32 + 1))
                        .min()
                        .unwrap_or(u64::MAX / 4),
                    ObjectPhase::InKey { property, at } => {
                        entry(property as usize) - u64::from(at) + after(property + 1)
                    }
                    ObjectPhase::Colon { property } => {
                        let p = properties.get(property as usize);
                        1 + p.map_or(0, |p| self.min(p.value)) + after(property + 1)
                    }
                    ObjectPhase::CommaOrClose { from } => after(from),
                }
            }
            Frame::List { node, phase, .. } => match (self.node(node), phase) {
                (_, ListPhase::Open) => 2,
                (_, ListPhase::FirstOrClose | ListPhase::CommaOrClose) => 1,
                (Some(Node::Array { items, .. }), ListPhase::Next) => self.min(*items) + 1,
                (Some(Node::Map { key, value, .. }), ListPhase::Next) => {
                    self.min(*key) + 1 + self.min(*value) + 1
                }
                (Some(Node::Map { value, .. }), ListPhase::Colon) => 1 + self.min(*value) + 1,
                _ => 1,
            },
        }
    }
}

fn branch(frames: Vec<Frame>) -> Action {
    if frames.is_empty() {
        Action::Reject
    } else {
        Action::Branch(frames)
    }
}

fn number_accepts(phase: NumberPhase) -> bool {
    matches!(
        phase,
        NumberPhase::Zero | NumberPhase::Int | NumberPhase::Frac
    )
}

fn number_step(node: NodeId, integer: bool, digits: u32, phase: NumberPhase, byte: u8) -> Action {
    let frame = |digits, phase| {
        Action::Stay(Frame::Number {
            node,
            digits,
            phase,
        })
    };
    let more = digits < NUMBER_DIGITS_MAX;
    match (phase, byte) {
        (NumberPhase::Start, b'-') => frame(0, NumberPhase::Minus),
        (NumberPhase::Start, b'0') => frame(1, NumberPhase::Zero),
        // `-0` is a float to JSON parsers: an integer has no negative zero.
        (NumberPhase::Minus, b'0') if !integer => frame(1, NumberPhase::Zero),
        (NumberPhase::Start | NumberPhase::Minus, b'1'..=b'9') => frame(1, NumberPhase::Int),
        (NumberPhase::Int, b'0'..=b'9') if more => frame(digits + 1, NumberPhase::Int),
        (NumberPhase::Zero | NumberPhase::Int, b'.') if !integer => frame(0, NumberPhase::Dot),
        (NumberPhase::Dot, b'0'..=b'9') => frame(1, NumberPhase::Frac),
        (NumberPhase::Frac, b'0'..=b'9') if more => frame(digits + 1, NumberPhase::Frac),
        (phase, _) if number_accepts(phase) => Action::DoneRefeed,
        _ => Action::Reject,
    }
}

fn string_step(node: NodeId, chars: u32, chars_max: u32, phase: StringPhase, byte: u8) -> Action {
    let frame = |chars, phase| Action::Stay(Frame::String { node, chars, phase });
    let more = chars < chars_max;
    let utf8 = |left, lo, hi| frame(chars + 1, StringPhase::Utf8 { left, lo, hi });
    match (phase, byte) {
        (StringPhase::Open, b'"') => frame(0, StringPhase::Body),
        (StringPhase::Open, _) => Action::Reject,
        (StringPhase::Body, b'"') => Action::Done,
        (StringPhase::Body, _) if !more => Action::Reject,
        (StringPhase::Body, b'\\') => frame(chars + 1, StringPhase::Escape),
        (StringPhase::Body, 0x20..=0x7F) => frame(chars + 1, StringPhase::Body),
        (StringPhase::Body, 0xC2..=0xDF) => utf8(1, 0x80, 0xBF),
        (StringPhase::Body, 0xE0) => utf8(2, 0xA0, 0xBF),
        (StringPhase::Body, 0xE1..=0xEC | 0xEE..=0xEF) => utf8(2, 0x80, 0xBF),
        (StringPhase::Body, 0xED) => utf8(2, 0x80, 0x9F),
        (StringPhase::Body, 0xF0) => utf8(3, 0x90, 0xBF),
        (StringPhase::Body, 0xF1..=0xF3) => utf8(3, 0x80, 0xBF),
        (StringPhase::Body, 0xF4) => utf8(3, 0x80, 0x8F),
        (StringPhase::Body, _) => Action::Reject,
        (StringPhase::Escape, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
            frame(chars, StringPhase::Body)
        }
        (StringPhase::Escape, _) => Action::Reject,
        (StringPhase::Utf8 { left, lo, hi }, b) if (lo..=hi).contains(&b) => {
            if left <= 1 {
                frame(chars, StringPhase::Body)
            } else {
                frame(
                    chars,
                    StringPhase::Utf8 {
                        left: left - 1,
                        lo: 0x80,
                        hi: 0xBF,
                    },
                )
            }
        }
        (StringPhase::Utf8 { .. }, _) => Action::Reject,
    }
}
