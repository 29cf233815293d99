//! WebSockets: JSON-RPC calls in; answers and subscription notifications out.
//!
//! Each committed block's notifications are rendered once per topic by the hub (only for topics
//! someone subscribes to) and shared by every socket as `Arc`'d JSON text; a socket only splices
//! its own subscription id into the envelope of the message it is sending. A socket with more
//! than `socket_queue_bytes_max` of later blocks' notifications waiting, or whose one message
//! takes longer than
//! `socket_send_timeout_ms` to write, is closed with a reason instead of buffered. The hub keeps
//! at most [`HUB_BLOCKS_MAX`] rendered blocks ([`HUB_LAG_MS`] of blocks at the fastest block
//! interval, [`BLOCK_INTERVAL_MIN_MS`]), so notification memory does not grow with the number of
//! sockets; a socket further behind than that has lost notifications and is closed.

use super::convert::{block_info, event_info};
use super::framing::{clip, handle_body, response, rpc_error, scan};
use super::server::Peer;
use super::{stopped, RpcState, SERVER_BUSY, SUBSCRIPTIONS_PER_SOCKET_MAX};
use crate::app::{App, CommittedBlock};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use piazza_api::{error_code, method, RpcError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How far behind, in time, a socket may fall in blocks before it is closed (the byte budget,
/// `socket_queue_bytes_max`, usually closes a slow socket first).
pub const HUB_LAG_MS: u64 = 30_000;
/// The shortest block interval the hub is sized for (devnets and tests run 100 ms blocks).
pub const BLOCK_INTERVAL_MIN_MS: u64 = 100;
/// Rendered blocks the hub keeps for sockets still sending earlier ones: at least [`HUB_LAG_MS`]
/// of blocks at [`BLOCK_INTERVAL_MIN_MS`], rounded up to a power of two as the channel holds them
/// (512 blocks: 51.2 s at 100 ms).
pub const HUB_BLOCKS_MAX: usize =
    ((HUB_LAG_MS / BLOCK_INTERVAL_MIN_MS) as usize).next_power_of_two();
/// Calls read from one socket and not yet answered.
const SOCKET_COMMANDS_MAX: usize = 4;
/// How often a socket blocked on a send checks how far behind it is.
const BEHIND_CHECK_MS: u64 = 50;
/// Time given to a close frame before the socket is dropped.
const CLOSE_SEND_MS: u64 = 200;
/// WebSocket close code: the client broke a policy (here: it fell behind).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code: the server is going away.
const CLOSE_GOING_AWAY: u16 = 1001;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topic {
    NewBlocks = 0,
    Events = 1,
}

const TOPICS: [Topic; 2] = [Topic::NewBlocks, Topic::Events];

impl Topic {
    fn parse(name: &str) -> Option<Topic> {
        match name {
            "newBlocks" => Some(Topic::NewBlocks),
            "events" => Some(Topic::Events),
            _ => None,
        }
    }
}

/// One block's notifications for one topic: each item is a notification's `result` as JSON.
struct TopicRender {
    /// The topic's byte offset where this block starts (bytes published before it).
    start: u64,
    items: Vec<Box<str>>,
}

/// One committed block, rendered for the topics that had subscribers.
struct Rendered {
    topics: [Option<TopicRender>; 2],
    /// Blocks were lost before this one (the hub fell behind the app).
    gap: bool,
}

/// Renders each committed block once and shares it with every socket.
pub(crate) struct Hub {
    /// Bytes published so far, per topic.
    published: [AtomicU64; 2],
    /// Subscriptions open, per topic, across all sockets.
    subscribers: [AtomicUsize; 2],
    sender: broadcast::Sender<Arc<Rendered>>,
}

impl Hub {
    pub(crate) fn start(app: &App, mut shutdown: watch::Receiver<bool>) -> Arc<Hub> {
        let (sender, _) = hub_channel();
        let hub = Arc::new(Hub {
            published: [AtomicU64::new(0), AtomicU64::new(0)],
            subscribers: [AtomicUsize::new(0), AtomicUsize::new(0)],
            sender,
        });
        let mut committed = app.subscribe();
        let publisher = hub.clone();
        tokio::spawn(async move {
            loop {
                let block = tokio::select! {
                    block = committed.recv() => block,
                    _ = stopped(&mut shutdown) => return,
                };
                let rendered = match block {
                    Ok(block) => {
                        let wanted =
                            TOPICS.map(|t| publisher.subscribers[t as usize].load(Relaxed) > 0);
                        if !wanted.contains(&true) {
                            continue;
                        }
                        let Ok(items) =
                            tokio::task::spawn_blocking(move || render(&block, wanted)).await
                        else {
                            continue;
                        };
                        publisher.publish(items, false)
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the notification hub fell behind the app");
                        publisher.publish([None, None], true)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // No receiver is not an error: nobody listens right now.
                let _ = publisher.sender.send(Arc::new(rendered));
            }
        });
        hub
    }

    fn publish(&self, items: [Option<Vec<Box<str>>>; 2], gap: bool) -> Rendered {
        let mut topics: [Option<TopicRender>; 2] = [None, None];
        for (t, items) in items.into_iter().enumerate() {
            if let Some(items) = items {
                let bytes: u64 = items.iter().map(|i| i.len() as u64).sum();
                let start = self.published[t].fetch_add(bytes, Relaxed);
                topics[t] = Some(TopicRender { start, items });
            }
        }
        Rendered { topics, gap }
    }
}

fn render(block: &CommittedBlock, wanted: [bool; 2]) -> [Option<Vec<Box<str>>>; 2] {
    let text = |v: Result<String, serde_json::Error>| v.ok().map(String::into_boxed_str);
    let height = block.block.header.height;
    let new_blocks = wanted[Topic::NewBlocks as usize].then(|| {
        text(serde_json::to_string(&block_info(&block.block, false)))
            .into_iter()
            .collect()
    });
    let events = wanted[Topic::Events as usize].then(|| {
        block
            .receipts
            .iter()
            .flat_map(|r| {
                r.events
                    .iter()
                    .map(move |e| event_info(e, height, Some(r.tx_hash)))
            })
            .chain(block.events.iter().map(|e| event_info(e, height, None)))
            .filter_map(|e| text(serde_json::to_string(&e)))
            .collect()
    });
    [new_blocks, events]
}

/// Open sockets, in total and per IP address.
#[derive(Default)]
pub(crate) struct SocketCaps {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted socket; its drop frees the place.
struct SocketPermit {
    state: Arc<RpcState>,
    ip: IpAddr,
}

impl SocketPermit {
    fn admit(state: &Arc<RpcState>, ip: IpAddr) -> Option<SocketPermit> {
        let limits = &state.limits;
        let mut open = state.sockets.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_address = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= limits.sockets_max || from_address >= limits.sockets_per_address_max {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        state.app.metrics.server.sockets_open.fetch_add(1, Relaxed);
        Some(SocketPermit {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut open = self
            .state
            .sockets
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        self.state
            .app
            .metrics
            .server
            .sockets_open
            .fetch_sub(1, Relaxed);
    }
}

/// `GET /ws`.
pub(super) async fn upgrade(
    State(state): State<Arc<RpcState>>,
    peer: Option<Extension<Peer>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.addr.ip());
    let Some(permit) = SocketPermit::admit(&state, ip) else {
        state
            .app
            .metrics
            .server
            .sockets_refused
            .fetch_add(1, Relaxed);
        let limits = &state.limits;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many WebSockets: at most {} in all, {} per address",
                limits.sockets_max, limits.sockets_per_address_max
            ),
        )
            .into_response();
    };
    let bytes_max = state.limits.socket_message_bytes_max;
    ws.max_message_size(bytes_max)
        .max_frame_size(bytes_max)
        .on_upgrade(move |socket| serve_socket(socket, permit))
}

enum Command {
    Answer(Value),
    Subscribe {
        id: Value,
        topic: Option<Topic>,
    },
    Unsubscribe {
        id: Value,
        subscription: Option<u64>,
    },
}

async fn serve_socket(socket: WebSocket, permit: SocketPermit) {
    let state = permit.state.clone();
    let (sink, stream) = socket.split();
    let (commands, inbox) = mpsc::channel(SOCKET_COMMANDS_MAX);
    let notifications = state.hub.sender.subscribe();
    tokio::select! {
        _ = read_calls(&state, stream, commands) => {}
        _ = write_out(&state, sink, inbox, notifications) => {}
    }
    drop(permit);
}

/// Reads calls until the client closes; subscribe/unsubscribe go to the writer, every other
/// call is answered like HTTP.
async fn read_calls(
    state: &Arc<RpcState>,
    mut stream: SplitStream<WebSocket>,
    commands: mpsc::Sender<Command>,
) {
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            WsMessage::Text(text) => text.as_str().to_owned(),
            WsMessage::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            WsMessage::Close(_) => return,
        };
        let command = match subscription_call(&text) {
            Some(command) => command,
            None => {
                let Ok(handler) = state.bodies.handler().await else {
                    return;
                };
                let app = state.app.clone();
                let answer =
                    tokio::task::spawn_blocking(move || handle_body(&app, text.as_bytes())).await;
                drop(handler);
                match answer {
                    Ok(Some(answer)) => Command::Answer(answer),
                    Ok(None) => continue,
                    Err(_) => return,
                }
            }
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
}

/// A subscribe or unsubscribe call; `None` for anything else.
fn subscription_call(text: &str) -> Option<Command> {
    scan(text.as_bytes()).ok()?;
    let call: Value = serde_json::from_str(text).ok()?;
    let name = call.get("method")?.as_str()?;
    if name != method::SUBSCRIBE && name != method::UNSUBSCRIBE {
        return None;
    }
    let id = match call.get("id") {
        Some(id @ Value::Number(_)) => id.clone(),
        Some(Value::String(s)) => Value::String(clip(s)),
        _ => Value::Null,
    };
    let first = call.get("params").and_then(|p| p.get(0));
    Some(if name == method::SUBSCRIBE {
        Command::Subscribe {
            id,
            topic: first.and_then(Value::as_str).and_then(Topic::parse),
        }
    } else {
        Command::Unsubscribe {
            id,
            subscription: first
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok()),
        }
    })
}

/// One socket's subscriptions; counted in the hub so it renders only topics someone wants.
struct Subscriptions {
    hub: Arc<Hub>,
    topics: BTreeMap<u64, Topic>,
    next_id: u64,
}

impl Subscriptions {
    fn add(&mut self, topic: Option<Topic>) -> Result<Value, RpcError> {
        let Some(topic) = topic else {
            return Err(rpc_error(
                error_code::INVALID_PARAMS,
                "subscribe to \"newBlocks\" or \"events\"",
                None,
            ));
        };
        if self.topics.len() >= SUBSCRIPTIONS_PER_SOCKET_MAX {
            return Err(rpc_error(
                error_code::INVALID_REQUEST,
                format!("at most {SUBSCRIPTIONS_PER_SOCKET_MAX} subscriptions per connection"),
                None,
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.topics.insert(id, topic);
        self.hub.subscribers[topic as usize].fetch_add(1, Relaxed);
        Ok(json!(id.to_string()))
    }

    fn remove(&mut self, id: Option<u64>) -> bool {
        match id.and_then(|id| self.topics.remove(&id)) {
            Some(topic) => {
                self.hub.subscribers[topic as usize].fetch_sub(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for topic in self.topics.values() {
            self.hub.subscribers[*topic as usize].fetch_sub(1, Relaxed);
        }
    }
}

/// The channel from the hub to the sockets, holding the last [`HUB_BLOCKS_MAX`] rendered blocks.
fn hub_channel() -> (
    broadcast::Sender<Arc<Rendered>>,
    broadcast::Receiver<Arc<Rendered>>,
) {
    broadcast::channel(HUB_BLOCKS_MAX)
}

/// Why a socket whose `missed` blocks left the hub before it sent them is closed.
fn lagged(missed: u64) -> Stop {
    Stop::Slow(format!(
        "fell behind by more than {HUB_BLOCKS_MAX} blocks ({} s of {BLOCK_INTERVAL_MIN_MS} ms \
         blocks); {missed} blocks of notifications were lost, subscribe again",
        HUB_BLOCKS_MAX as u64 * BLOCK_INTERVAL_MIN_MS / 1000
    ))
}

/// Why a socket stops.
enum Stop {
    /// The client went away (or the reader stopped).
    Gone,
    /// Closed by the node with a reason.
    Close(u16, String),
    /// Closed as too slow.
    Slow(String),
}

/// Sends answers and notifications until the socket closes or falls behind.
async fn write_out(
    state: &Arc<RpcState>,
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut inbox: mpsc::Receiver<Command>,
    mut notifications: broadcast::Receiver<Arc<Rendered>>,
) {
    let mut subscriptions = Subscriptions {
        hub: state.hub.clone(),
        topics: BTreeMap::new(),
        next_id: 1,
    };
    let mut shutdown = state.shutdown.clone();
    let stop = loop {
        let step = tokio::select! {
            command = inbox.recv() => match command {
                None => Err(Stop::Gone),
                Some(command) => answer(state, &mut sink, &mut subscriptions, command).await,
            },
            rendered = notifications.recv() => match rendered {
                Ok(rendered) => notify(state, &mut sink, &subscriptions, &rendered).await,
                Err(broadcast::error::RecvError::Lagged(missed))
                    if !subscriptions.topics.is_empty() =>
                {
                    Err(lagged(missed))
                }
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => {
                    Err(Stop::Close(CLOSE_GOING_AWAY, "the node is shutting down".into()))
                }
            },
            _ = stopped(&mut shutdown) => {
                Err(Stop::Close(CLOSE_GOING_AWAY, "the node is shutting down".into()))
            }
        };
        if let Err(stop) = step {
            break stop;
        }
    };
    let (code, reason) = match stop {
        Stop::Gone => return,
        Stop::Close(code, reason) => (code, reason),
        Stop::Slow(reason) => {
            state
                .app
                .metrics
                .server
                .sockets_closed_slow
                .fetch_add(1, Relaxed);
            (CLOSE_POLICY, format!("too slow: {reason}"))
        }
    };
    let close = WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_SEND_MS), sink.send(close)).await;
}

async fn answer(
    state: &RpcState,
    sink: &mut SplitSink<WebSocket, WsMessage>,
    subscriptions: &mut Subscriptions,
    command: Command,
) -> Result<(), Stop> {
    let mut permit = None;
    let text = match command {
        Command::Answer(value) => {
            let text = value.to_string();
            let limits = &state.limits;
            match state.bodies.cover(&mut permit, text.len(), limits).await {
                Ok(()) => text,
                Err(_) => {
                    state.app.metrics.server.bodies_busy.fetch_add(1, Relaxed);
                    let id = value.get("id").cloned().unwrap_or(Value::Null);
                    let busy = rpc_error(
                        SERVER_BUSY,
                        format!(
                            "answers over {} bytes share a budget of {} bytes, in use now; retry later",
                            limits.small_body_bytes_max, limits.large_bodies_bytes_max
                        ),
                        None,
                    );
                    response(id, Err(busy)).to_string()
                }
            }
        }
        Command::Subscribe { id, topic } => {
            let result = subscriptions.add(topic);
            state.app.metrics.record_rpc(result.is_ok());
            response(id, result).to_string()
        }
        Command::Unsubscribe { id, subscription } => {
            let removed = subscriptions.remove(subscription);
            state.app.metrics.record_rpc(true);
            response(id, Ok(json!(removed))).to_string()
        }
    };
    let sent = send(state, sink, text).await;
    drop(permit);
    sent
}

async fn notify(
    state: &RpcState,
    sink: &mut SplitSink<WebSocket, WsMessage>,
    subscriptions: &Subscriptions,
    rendered: &Rendered,
) -> Result<(), Stop> {
    if rendered.gap && !subscriptions.topics.is_empty() {
        return Err(Stop::Close(
            CLOSE_POLICY,
            "notifications were lost (the node fell behind); subscribe again".into(),
        ));
    }
    for topic in TOPICS {
        let Some(render) = &rendered.topics[topic as usize] else {
            continue;
        };
        let end = render.start + render.items.iter().map(|i| i.len() as u64).sum::<u64>();
        let behind = Behind {
            published: &state.hub.published[topic as usize],
            end,
            bytes_max: state.limits.socket_queue_bytes_max as u64,
        };
        for (id, _) in subscriptions.topics.iter().filter(|(_, t)| **t == topic) {
            for item in &render.items {
                send_watched(state, sink, notification(*id, item), Some(&behind)).await?;
            }
        }
    }
    Ok(())
}

/// How far a socket is behind: bytes of the topic published after the block it is sending.
struct Behind<'a> {
    published: &'a AtomicU64,
    end: u64,
    bytes_max: u64,
}

impl Behind<'_> {
    fn check(&self) -> Result<(), Stop> {
        let waiting = self.published.load(Relaxed).saturating_sub(self.end);
        if waiting > self.bytes_max {
            return Err(Stop::Slow(format!(
                "more than {} bytes of later notifications waiting",
                self.bytes_max
            )));
        }
        Ok(())
    }
}

/// The notification envelope around a shared `result`, for subscription `id`.
fn notification(id: u64, result: &str) -> String {
    let mut text = String::with_capacity(result.len() + 96);
    text.push_str(r#"{"jsonrpc":"2.0","method":""#);
    text.push_str(method::SUBSCRIPTION);
    text.push_str(r#"","params":{"subscription":""#);
    text.push_str(&id.to_string());
    text.push_str(r#"","result":"#);
    text.push_str(result);
    text.push_str("}}");
    text
}

async fn send(
    state: &RpcState,
    sink: &mut SplitSink<WebSocket, WsMessage>,
    text: String,
) -> Result<(), Stop> {
    send_watched(state, sink, text, None).await
}

/// Sends one message within `socket_send_timeout_ms`; while it waits, checks every
/// [`BEHIND_CHECK_MS`] that the socket is not too far `behind`.
async fn send_watched(
    state: &RpcState,
    sink: &mut SplitSink<WebSocket, WsMessage>,
    text: String,
    behind: Option<&Behind<'_>>,
) -> Result<(), Stop> {
    if let Some(behind) = behind {
        behind.check()?;
    }
    let timeout_ms = state.limits.socket_send_timeout_ms;
    let deadline = tokio::time::sleep(Duration::from_millis(timeout_ms));
    let sending = sink.send(WsMessage::Text(text.into()));
    tokio::pin!(deadline, sending);
    loop {
        tokio::select! {
            sent = &mut sending => return sent.map_err(|_| Stop::Gone),
            _ = &mut deadline => {
                return Err(Stop::Slow(format!("a message was not taken within {timeout_ms} ms")));
            }
            _ = tokio::time::sleep(Duration::from_millis(BEHIND_CHECK_MS)), if behind.is_some() => {
                if let Some(behind) = behind {
                    behind.check()?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Arc<Rendered> {
        let items = vec![Box::<str>::from(r#"{"height":1}"#)];
        Arc::new(Rendered {
            topics: [Some(TopicRender { start: 0, items }), None],
            gap: false,
        })
    }

    fn reason(stop: Stop) -> String {
        match stop {
            Stop::Slow(reason) => reason,
            Stop::Close(_, reason) => reason,
            Stop::Gone => String::from("gone"),
        }
    }

    #[test]
    fn a_socket_seconds_behind_keeps_every_block_and_one_past_the_bound_is_closed() {
        // 4 s of 100 ms blocks: within the bound, every block still reaches the socket.
        let (sender, mut slow) = hub_channel();
        for _ in 0..40 {
            assert!(sender.send(block()).is_ok());
        }
        for _ in 0..40 {
            assert!(slow.try_recv().is_ok(), "a block within the bound was lost");
        }
        // More blocks than the hub keeps: the socket lost some and is told why.
        for _ in 0..HUB_BLOCKS_MAX + 3 {
            assert!(sender.send(block()).is_ok());
        }
        let Err(broadcast::error::TryRecvError::Lagged(missed)) = slow.try_recv() else {
            panic!("a socket past the bound was not told it lost blocks");
        };
        assert_eq!(missed, 3);
        let reason = reason(lagged(missed));
        assert!(
            reason.contains("more than 512 blocks (51 s of 100 ms blocks)"),
            "{reason}"
        );
        assert!(
            reason.contains("3 blocks of notifications were lost"),
            "{reason}"
        );
    }

    #[test]
    fn the_envelope_is_the_notification_json() {
        let result = r#"{"kind":"bank.transfer","height":3}"#;
        let parsed: Value = serde_json::from_str(&notification(7, result)).unwrap();
        assert_eq!(
            parsed,
            json!({"jsonrpc": "2.0", "method": method::SUBSCRIPTION,
                   "params": {"subscription": "7", "result": {"kind": "bank.transfer", "height": 3}}})
        );
    }
}
