// Piazza explorer: live blocks and events from the node's WebSocket (same origin, /ws).
// Every value is inserted as text (textContent), never as HTML.
(function () {
  "use strict";
  var EVENTS_SHOWN_MAX = 50;
  var BLOCKS_SHOWN_MAX = 20;
  // A job page's re-check command names this node's JSON-RPC URL: the explorer's own origin.
  var recheck = document.getElementById("recheck");
  if (recheck) recheck.textContent = recheck.textContent.replace("<node url>", location.origin);
  var blocks = document.querySelector("#blocks tbody");
  var events = document.getElementById("events");
  if (!blocks && !events) return;
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var socket = new WebSocket(scheme + location.host + "/ws");
  var topics = {};
  socket.onopen = function () {
    socket.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "piazza_subscribe", params: ["newBlocks"] }));
    socket.send(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "piazza_subscribe", params: ["events"] }));
    var live = document.getElementById("live");
    if (live) live.textContent = "live";
  };
  function cell(row, node) { var td = document.createElement("td"); td.appendChild(node); row.appendChild(td); }
  function text(value) { return document.createTextNode(String(value)); }
  function anchor(path, label) {
    var a = document.createElement("a");
    a.href = "/explorer/" + path;
    a.textContent = label;
    return a;
  }
  function onBlock(b) {
    var height = document.getElementById("height");
    if (height) height.textContent = String(b.height);
    if (!blocks) return;
    var row = document.createElement("tr");
    row.className = "new-block";
    cell(row, anchor("block/" + encodeURIComponent(b.height), "#" + b.height));
    cell(row, text(String(b.hash).slice(0, 8) + "…" + String(b.hash).slice(-6)));
    cell(row, text((b.tx_hashes || []).length));
    cell(row, anchor("account/" + encodeURIComponent(b.proposer), b.proposer));
    blocks.insertBefore(row, blocks.firstChild);
    while (blocks.children.length > BLOCKS_SHOWN_MAX) blocks.removeChild(blocks.lastChild);
  }
  function onEvent(e) {
    if (!events) return;
    var item = document.createElement("li");
    item.className = "new-event";
    var parts = [];
    for (var k in e.attributes) parts.push(k + "=" + e.attributes[k]);
    item.textContent = "#" + e.height + " " + e.kind + " " + parts.join(" ");
    events.insertBefore(item, events.firstChild);
    while (events.children.length > EVENTS_SHOWN_MAX) events.removeChild(events.lastChild);
  }
  socket.onmessage = function (message) {
    var data;
    try { data = JSON.parse(message.data); } catch (_) { return; }
    if (data.id === 1 && data.result) topics[data.result] = onBlock;
    if (data.id === 2 && data.result) topics[data.result] = onEvent;
    if (data.method === "piazza_subscription" && data.params) {
      var handle = topics[data.params.subscription];
      if (handle) handle(data.params.result);
    }
  };
})();
