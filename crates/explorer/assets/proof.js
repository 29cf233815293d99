// Piazza explorer: checks an account's or a job's state proof in the browser, the way the Rust
// client does (piazza_client::verify_account_proof, verify_job_proof): the proof must prove the
// shown value at the state key under the shown state root; an account's value must decode to the
// shown balance and nonce; a job's output must hash to the output hash its proven record carries.
// BLAKE3 and the Jellyfish Merkle proof (jmt 0.12, borsh-encoded) are implemented here; nothing
// is fetched. Every value shown is inserted as text.
(function () {
  "use strict";

  // ---- BLAKE3 (the reference algorithm: 1 KiB chunks, 64-byte blocks, a binary tree) ----
  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  var PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
  var CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;
  var BLOCK_BYTES = 64, CHUNK_BYTES = 1024;

  function rotr(x, n) { return (x >>> n) | (x << (32 - n)); }
  function g(s, a, b, c, d, x, y) {
    s[a] = (s[a] + s[b] + x) | 0; s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = (s[c] + s[d]) | 0; s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = (s[a] + s[b] + y) | 0; s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = (s[c] + s[d]) | 0; s[b] = rotr(s[b] ^ s[c], 7);
  }
  // The compression function: 16 output words.
  function compress(cv, block, counter, blockLen, flags) {
    var s = [cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], IV[0], IV[1], IV[2], IV[3],
      counter >>> 0, Math.floor(counter / 0x100000000) >>> 0, blockLen, flags];
    var m = block.slice();
    for (var round = 0; round < 7; round++) {
      g(s, 0, 4, 8, 12, m[0], m[1]); g(s, 1, 5, 9, 13, m[2], m[3]);
      g(s, 2, 6, 10, 14, m[4], m[5]); g(s, 3, 7, 11, 15, m[6], m[7]);
      g(s, 0, 5, 10, 15, m[8], m[9]); g(s, 1, 6, 11, 12, m[10], m[11]);
      g(s, 2, 7, 8, 13, m[12], m[13]); g(s, 3, 4, 9, 14, m[14], m[15]);
      var next = new Array(16);
      for (var i = 0; i < 16; i++) next[i] = m[PERMUTATION[i]];
      m = next;
    }
    for (var j = 0; j < 8; j++) { s[j] ^= s[j + 8]; s[j + 8] ^= cv[j]; }
    return s;
  }
  function words(bytes, start, length) {
    var w = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for (var i = 0; i < length; i++) w[i >> 2] |= bytes[start + i] << (8 * (i & 3));
    return w;
  }
  // A chunk's last block, not yet compressed: the root flag is added only at the top.
  function chunkOutput(bytes, start, end, counter) {
    var cv = IV, flags = CHUNK_START, at = start;
    while (end - at > BLOCK_BYTES) {
      cv = compress(cv, words(bytes, at, BLOCK_BYTES), counter, BLOCK_BYTES, flags).slice(0, 8);
      flags = 0;
      at += BLOCK_BYTES;
    }
    return { cv: cv, block: words(bytes, at, end - at), counter: counter, len: end - at, flags: flags | CHUNK_END };
  }
  function parentOutput(left, right) {
    return { cv: IV, block: left.concat(right), counter: 0, len: BLOCK_BYTES, flags: PARENT };
  }
  function chainingValue(o) { return compress(o.cv, o.block, o.counter, o.len, o.flags).slice(0, 8); }
  function blake3(bytes) {
    var chunks = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
    var stack = [];
    for (var c = 0; c < chunks - 1; c++) {
      var cv = chainingValue(chunkOutput(bytes, c * CHUNK_BYTES, (c + 1) * CHUNK_BYTES, c));
      for (var total = c + 1; (total & 1) === 0; total >>= 1) cv = chainingValue(parentOutput(stack.pop(), cv));
      stack.push(cv);
    }
    var output = chunkOutput(bytes, (chunks - 1) * CHUNK_BYTES, bytes.length, chunks - 1);
    while (stack.length) output = parentOutput(stack.pop(), chainingValue(output));
    var root = compress(output.cv, output.block, 0, output.len, output.flags | ROOT);
    var out = new Uint8Array(32);
    for (var k = 0; k < 32; k++) out[k] = (root[k >> 2] >>> (8 * (k & 3))) & 0xff;
    return out;
  }

  // ---- bytes ----
  function fromHex(hex, what) {
    if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error(what + " is not hex");
    var out = new Uint8Array(hex.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }
  function toHex(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return s;
  }
  function ascii(text) {
    var out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  function concat(parts) {
    var length = 0, i;
    for (i = 0; i < parts.length; i++) length += parts[i].length;
    var out = new Uint8Array(length), at = 0;
    for (i = 0; i < parts.length; i++) { out.set(parts[i], at); at += parts[i].length; }
    return out;
  }
  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  // ---- addresses: bech32m with the `pz` prefix over 20 bytes ----
  var CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
  var BECH32M = 0x2bc830a3;
  function polymod(values) {
    var GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    var chk = 1;
    for (var i = 0; i < values.length; i++) {
      var top = chk >>> 25;
      chk = ((chk & 0x1ffffff) << 5) ^ values[i];
      for (var j = 0; j < 5; j++) if ((top >>> j) & 1) chk ^= GEN[j];
    }
    return chk >>> 0;
  }
  function addressBytes(address) {
    var text = String(address).toLowerCase();
    var sep = text.lastIndexOf("1");
    var hrp = text.slice(0, sep);
    if (hrp !== "pz" || text.length - sep < 7) throw new Error("not a pz1 address");
    var data = [];
    for (var i = sep + 1; i < text.length; i++) {
      var v = CHARSET.indexOf(text[i]);
      if (v < 0) throw new Error("not a pz1 address");
      data.push(v);
    }
    var expanded = [];
    for (i = 0; i < hrp.length; i++) expanded.push(hrp.charCodeAt(i) >> 5);
    expanded.push(0);
    for (i = 0; i < hrp.length; i++) expanded.push(hrp.charCodeAt(i) & 31);
    if (polymod(expanded.concat(data)) !== BECH32M) throw new Error("the address checksum is wrong");
    var out = [], acc = 0, bits = 0;
    for (i = 0; i < data.length - 6; i++) {
      acc = (acc << 5) | data[i]; bits += 5;
      if (bits >= 8) { bits -= 8; out.push((acc >> bits) & 0xff); }
    }
    if (out.length !== 20) throw new Error("an address is 20 bytes");
    return new Uint8Array(out);
  }

  // ---- the Jellyfish Merkle proof (borsh: Option<leaf>, Vec<sibling>) ----
  var LEAF_DOMAIN = ascii("JMT::LeafNode");
  var INTERNAL_DOMAIN = ascii("JMT::IntrnalNode");
  var PLACEHOLDER = ascii("SPARSE_MERKLE_PLACEHOLDER_HASH__");
  var SIBLINGS_MAX = 256;
  function leafHash(key, value) { return blake3(concat([LEAF_DOMAIN, key, value])); }
  function internalHash(left, right) { return blake3(concat([INTERNAL_DOMAIN, left, right])); }
  function decodeProof(bytes) {
    var at = 0;
    function take(n) {
      if (at + n > bytes.length) throw new Error("the proof is cut short");
      var part = bytes.subarray(at, at + n); at += n; return part;
    }
    var leaf = null, tag = take(1)[0];
    if (tag === 1) leaf = { key: take(32), value: take(32) };
    else if (tag !== 0) throw new Error("the proof's leaf tag is " + tag);
    var n = take(4), count = (n[0] | (n[1] << 8) | (n[2] << 16)) + n[3] * 0x1000000;
    if (count > SIBLINGS_MAX) throw new Error("the proof has " + count + " siblings");
    var siblings = [];
    for (var i = 0; i < count; i++) {
      var kind = take(1)[0];
      if (kind === 0) siblings.push(PLACEHOLDER);
      else if (kind === 1) siblings.push(internalHash(take(32), take(32)));
      else if (kind === 2) siblings.push(leafHash(take(32), take(32)));
      else throw new Error("a sibling's tag is " + kind);
    }
    if (at !== bytes.length) throw new Error("the proof has trailing bytes");
    return { leaf: leaf, siblings: siblings };
  }
  function bit(hash, index) { return (hash[index >> 3] >> (7 - (index & 7))) & 1; }
  function commonPrefixBits(a, b) {
    var n = 0;
    while (n < 256 && bit(a, n) === bit(b, n)) n++;
    return n;
  }
  // Throws with the reason unless `proof` proves `value` (null: absent) at `key` under `root`.
  function verifyProof(root, key, value, proof) {
    var p = decodeProof(proof);
    var keyHash = blake3(key);
    if (value !== null) {
      if (!p.leaf) throw new Error("an inclusion proof was expected");
      if (!equal(p.leaf.key, keyHash)) throw new Error("the proof is for another key");
      if (!equal(p.leaf.value, blake3(value))) throw new Error("the value's hash is not the proven one");
    } else if (p.leaf) {
      if (equal(p.leaf.key, keyHash)) throw new Error("the key exists, but no value is shown");
      if (commonPrefixBits(keyHash, p.leaf.key) < p.siblings.length) throw new Error("not a valid proof of absence");
    }
    var hash = p.leaf ? leafHash(p.leaf.key, p.leaf.value) : PLACEHOLDER;
    var n = p.siblings.length;
    for (var j = 0; j < n; j++) {
      hash = bit(keyHash, n - 1 - j) ? internalHash(p.siblings[j], hash) : internalHash(hash, p.siblings[j]);
    }
    if (!equal(hash, root)) throw new Error("the root it proves is " + toHex(hash).slice(0, 16) + "…, not the block's");
  }
  function littleEndian(bytes) {
    var n = BigInt(0);
    for (var i = bytes.length - 1; i >= 0; i--) n = n * BigInt(256) + BigInt(bytes[i]);
    return n;
  }
  // The account checks of piazza_client::verify_account_proof, over the page's data.
  function verifyAccount(d) {
    var key = fromHex(d.key, "the key");
    if (!equal(key, concat([ascii("bank/account/"), addressBytes(d.address)]))) throw new Error("the proof is for another key");
    var value = d.value ? fromHex(d.value, "the value") : null;
    var balance = BigInt(0), nonce = BigInt(0);
    if (value) {
      if (value.length !== 24) throw new Error("the account value is " + value.length + " bytes, not 24");
      balance = littleEndian(value.subarray(0, 16));
      nonce = littleEndian(value.subarray(16, 24));
    }
    if (balance.toString() !== d.balance || nonce.toString() !== d.nonce) throw new Error("balance or nonce differ from the proven value");
    var root = fromHex(d.root, "the state root");
    if (root.length !== 32) throw new Error("the state root is not 32 bytes");
    if (d.root.toLowerCase() !== String(d.blockRoot).toLowerCase()) throw new Error("the account's state root is not the block's");
    verifyProof(root, key, value, fromHex(d.proof, "the proof"));
  }

  function bigEndian64(n) {
    var out = new Uint8Array(8), v = BigInt(n);
    for (var i = 7; i >= 0; i--) { out[i] = Number(v & BigInt(255)); v = v >> BigInt(8); }
    return out;
  }
  function contains(haystack, needle) {
    outer: for (var i = 0; i + needle.length <= haystack.length; i++) {
      for (var j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
      return true;
    }
    return false;
  }
  // compute::output_hash: Hash::of("piazza/job-output", [output]), a length-prefixed domain tag.
  function outputHash(output) {
    var tag = ascii("piazza/job-output");
    var length = new Uint8Array([tag.length & 255, (tag.length >> 8) & 255, 0, 0]);
    return blake3(concat([length, tag, output]));
  }
  // The job checks of piazza_client::verify_job_proof over the page's data, and the shown
  // output against the shown output hash, which the proven record must carry.
  function verifyJob(d) {
    var key = fromHex(d.key, "the key");
    if (!equal(key, concat([ascii("compute/job/"), bigEndian64(d.id)]))) throw new Error("the proof is for another key");
    if (!d.value) throw new Error("the proof says no job " + d.id + " exists");
    var value = fromHex(d.value, "the record");
    if (value.length < 8 || littleEndian(value.subarray(0, 8)).toString() !== String(d.id)) throw new Error("the proven record is not job " + d.id);
    var root = fromHex(d.root, "the state root");
    if (root.length !== 32) throw new Error("the state root is not 32 bytes");
    if (d.root.toLowerCase() !== String(d.blockRoot).toLowerCase()) throw new Error("the job's state root is not the block's");
    verifyProof(root, key, value, fromHex(d.proof, "the proof"));
    if (!d.outputHash) return "";
    var hash = fromHex(d.outputHash, "the output hash");
    if (!contains(value, hash)) throw new Error("the proven record does not carry the output hash shown");
    var output = fromHex(d.output, "the output");
    if (equal(outputHash(output), hash)) return "";
    // A session's result adopted on chain carries the hash only; its output stayed off chain.
    if (output.length === 0) return " (the output is not on chain: only its hash is proven)";
    throw new Error("the output's hash is not the output hash shown");
  }

  window.piazzaProof = { blake3Hex: function (hex) { return toHex(blake3(fromHex(hex, "input"))); }, verifyAccount: verifyAccount, verifyJob: verifyJob };

  var box = document.getElementById("proof");
  var result = document.getElementById("proof-result");
  var button = document.getElementById("verify-proof");
  if (!box || !result) return;
  function run() {
    try {
      var d = box.dataset, note = "";
      if (d.kind === "job") {
        note = verifyJob({
          id: d.id, key: d.key, value: d.value || null, proof: d.proof, root: d.root, blockRoot: d.blockRoot,
          output: d.output || "", outputHash: d.outputHash || null,
        });
      } else {
        verifyAccount({
          address: d.address, key: d.key, value: d.value || null,
          proof: d.proof, root: d.root, blockRoot: d.blockRoot, balance: d.balance, nonce: d.nonce,
        });
      }
      result.textContent = "verified" + note;
      result.className = "verified";
    } catch (e) {
      result.textContent = "failed: " + e.message;
      result.className = "failed";
    }
  }
  if (button) button.addEventListener("click", run);
  run();
})();
