// Checks an enforcer audit proof (docs/audit.md, "Proofs") in the browser, with the same
// byte formats and in the same order as `enforcer proof verify` (audit/proof/check.rs),
// so that a refusal here carries the same reason code:
//   checkpoint-signature  the C2SP signed note is not signed by the host key
//   record-altered        the record line's hash (its SHA-256 leaf hash from log format 3
//                         on, SHA3-512 before) is not the hash it states
//   wrong-index           the record's seq is not the leaf the proof names
//   not-included          the RFC 6962 inclusion proof does not reach the signed root
// The authorization artifact is shown but not checked here: that needs the verifier's
// own trust store, which `enforcer proof verify` reads.
"use strict";

(function () {
  const enc = new TextEncoder();

  // SHA3-512 (FIPS 202): WebCrypto has SHA-2 only, and log formats 1 and 2 hash records
  // with SHA3-512. BigInt lanes are slow but a record line is a few hundred bytes.
  const MASK = (1n << 64n) - 1n;
  const RC = [
    0x0000000000000001n, 0x0000000000008082n, 0x800000000000808An, 0x8000000080008000n,
    0x000000000000808Bn, 0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n,
    0x000000000000008An, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000An,
    0x000000008000808Bn, 0x800000000000008Bn, 0x8000000000008089n, 0x8000000000008003n,
    0x8000000000008002n, 0x8000000000000080n, 0x000000000000800An, 0x800000008000000An,
    0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
  ];
  // Rotation of lane x + 5y.
  const ROT = [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39,
    41, 45, 15, 21, 8, 18, 2, 61, 56, 14];
  const rotl = (v, n) => (n === 0 ? v : ((v << BigInt(n)) | (v >> BigInt(64 - n))) & MASK);

  function keccakF(a) {
    const b = new Array(25);
    const c = new Array(5);
    for (let round = 0; round < 24; round++) {
      for (let x = 0; x < 5; x++) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
      for (let x = 0; x < 5; x++) {
        const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
        for (let y = 0; y < 25; y += 5) a[x + y] ^= d;
      }
      for (let x = 0; x < 5; x++) {
        for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], ROT[x + 5 * y]);
      }
      for (let y = 0; y < 25; y += 5) {
        for (let x = 0; x < 5; x++) {
          a[x + y] = b[x + y] ^ (~b[((x + 1) % 5) + y] & b[((x + 2) % 5) + y] & MASK);
        }
      }
      a[0] ^= RC[round];
    }
  }

  function sha3_512(bytes) {
    const rate = 72;
    const padded = new Uint8Array(Math.floor(bytes.length / rate + 1) * rate);
    padded.set(bytes);
    padded[bytes.length] ^= 0x06;
    padded[padded.length - 1] ^= 0x80;
    const state = new Array(25).fill(0n);
    for (let off = 0; off < padded.length; off += rate) {
      for (let i = 0; i < rate / 8; i++) {
        let lane = 0n;
        for (let k = 7; k >= 0; k--) lane = (lane << 8n) | BigInt(padded[off + 8 * i + k]);
        state[i] ^= lane;
      }
      keccakF(state);
    }
    const out = new Uint8Array(64);
    for (let i = 0; i < 8; i++) {
      let lane = state[i];
      for (let k = 0; k < 8; k++) { out[8 * i + k] = Number(lane & 0xffn); lane >>= 8n; }
    }
    return out;
  }

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const equal = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  function base64(text) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return null;
    try { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); } catch { return null; }
  }
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  // RFC 6962: leaves and inner nodes are hashed with different prefixes.
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // RFC 9162 section 2.1.3.2: the root an inclusion proof leads to, or null when the
  // proof has the wrong length for the index and size.
  async function rootFromInclusion(leaf, index, size, path) {
    if (index >= size) return null;
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) return null;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    return sn === 0n ? r : null;
  }

  // A host key as `enforcer audit vkey` prints it (<name>+<hex id>+<base64(0x01||key)>),
  // or the bare base64 Ed25519 public key.
  function parseHostKey(text) {
    const t = text.trim();
    // The key's base64 may itself hold '+': only the first two split (names have none).
    const first = t.indexOf("+");
    if (first < 0) {
      const key = base64(t);
      return key && key.length === 32 ? { name: null, key } : null;
    }
    const second = t.indexOf("+", first + 1);
    if (second < 0 || !/^[0-9a-f]{8}$/.test(t.slice(first + 1, second))) return null;
    const raw = base64(t.slice(second + 1));
    if (!raw || raw.length !== 33 || raw[0] !== 1) return null;
    return { name: t.slice(0, first), key: raw.slice(1) };
  }

  class Refusal extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  // Splits a C2SP signed note into its text (ending in a newline) and signature lines.
  function splitNote(note) {
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0 || !note.endsWith("\n")) return null;
    const lines = note.slice(cut + 2, -1).split("\n");
    const sigs = [];
    for (const line of lines) {
      if (!line.startsWith("\u2014 ")) return null;
      const rest = line.slice(2);
      const space = rest.lastIndexOf(" ");
      const raw = space > 0 ? base64(rest.slice(space + 1)) : null;
      if (!raw || raw.length < 5) return null;
      sigs.push({ name: rest.slice(0, space), id: raw.slice(0, 4), signature: raw.slice(4) });
    }
    return { text: note.slice(0, cut + 1), sigs };
  }

  // `{…,"hash":"<H>"}` → the canonical bytes `{…}` and H (chain.rs, split_last_member).
  function unseal(line) {
    const marker = ',"hash":"';
    const at = line.lastIndexOf(marker);
    if (at < 0 || !line.endsWith('"}')) return null;
    const stated = line.slice(at + marker.length, -2);
    if (!/^([0-9a-f]{64}){1,2}$/.test(stated)) return null;
    return { canonical: line.slice(0, at) + "}", stated };
  }

  // Verifies `text` (a proof file) against `hostKeyText`. Returns what is established
  // and each step, or throws nothing: a refusal is a result with `code` set.
  async function verify(text, hostKeyText) {
    const steps = [];
    const facts = {};
    const step = (name, detail) => steps.push({ name, status: "pass", detail });
    try {
      if (!globalThis.crypto || !crypto.subtle) {
        throw new Refusal("no-webcrypto", "this page is not a secure context, so the browser " +
          "offers no WebCrypto: open the console over https or through an SSH tunnel to localhost");
      }
      let file;
      try { file = JSON.parse(text); } catch (e) { throw new Refusal("malformed", "not JSON: " + e.message); }
      if (typeof file !== "object" || file === null || typeof file.record !== "string" ||
          typeof file.checkpoint !== "string" || !Array.isArray(file.inclusion) ||
          typeof file.origin !== "string" || !Number.isSafeInteger(file.index)) {
        throw new Refusal("malformed", "not a proof file: origin, index, record, inclusion and checkpoint are required");
      }
      if (file.format !== "enforcer-audit-proof/v1") {
        throw new Refusal("unknown-format", `proof format ${JSON.stringify(file.format)} is not enforcer-audit-proof/v1`);
      }
      facts.origin = file.origin;
      facts.artifacts = Array.isArray(file.artifacts) ? file.artifacts.length : 0;

      // 1. The checkpoint: signed by the host key under the proof's origin.
      const host = parseHostKey(hostKeyText || "");
      if (!host) throw new Refusal("malformed", "the host key is neither a vkey (name+id+key) nor a base64 Ed25519 key");
      const sigFail = (why) => new Refusal("checkpoint-signature",
        `the checkpoint is not signed by the host key for origin ${JSON.stringify(file.origin)}: ${why}; it is forged, altered, or from another log`);
      if (host.name !== null && host.name !== file.origin) {
        throw sigFail(`the host key given is for ${JSON.stringify(host.name)}`);
      }
      const keyId = (await sha256(concat(enc.encode(file.origin), Uint8Array.of(0x0a, 0x01), host.key))).slice(0, 4);
      const note = splitNote(file.checkpoint);
      if (!note) throw sigFail("the checkpoint is not a signed note");
      const ours = note.sigs.filter((s) => s.name === file.origin && equal(s.id, keyId));
      if (ours.length === 0) throw sigFail("no signature on it is by that key");
      const key = await crypto.subtle.importKey("raw", host.key, { name: "Ed25519" }, false, ["verify"]);
      for (const s of ours) {
        if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, s.signature, enc.encode(note.text)))) {
          throw sigFail("the signature does not verify (the note was altered after signing)");
        }
      }
      const lines = note.text.slice(0, -1).split("\n");
      if (lines.length < 3 || lines[0] !== file.origin) throw sigFail("the checkpoint is of another origin");
      if (!/^(0|[1-9][0-9]*)$/.test(lines[1])) throw sigFail("its tree size is not a number");
      const root = base64(lines[2]);
      if (!root || root.length !== 32) throw sigFail("its root is not a hash");
      facts.treeSize = lines[1];
      facts.root = lines[2];
      facts.otherSignatures = note.sigs.length - ours.length;
      step("checkpoint signature", `signed by the host key; tree size ${lines[1]}, ` +
        `${facts.otherSignatures} other signature(s) (witness cosignatures are not checked here)`);

      // 2. The record: intact, at the leaf the proof names.
      const unsealed = unseal(file.record);
      if (!unsealed) throw new Refusal("record-malformed", "the record line does not end with a \"hash\" member");
      // The length of the stated hash says which (chain.rs): 64 hex digits from format 3
      // on, where the record's hash is its leaf, 128 (SHA3-512 of the same bytes) before,
      // where the leaf is the hash of the whole line.
      const canonical = enc.encode(unsealed.canonical);
      const isLeaf = unsealed.stated.length === 64;
      const actual = isLeaf ? await leafHash(canonical) : sha3_512(canonical);
      if (hex(actual) !== unsealed.stated) {
        throw new Refusal("record-altered", "the record was altered: its content does not match the hash it states");
      }
      let record;
      try { record = JSON.parse(unsealed.canonical); } catch (e) { throw new Refusal("record-malformed", e.message); }
      facts.record = record;
      step("record hash", `the record's ${isLeaf ? "SHA-256 leaf hash" : "SHA3-512"} is the hash it states`);
      if (record.seq !== file.index) {
        throw new Refusal("wrong-index", `the record says seq ${record.seq}, but the proof puts it at leaf ${file.index}`);
      }
      step("record index", `seq ${record.seq} is leaf ${file.index}`);

      // 3. The path from the leaf to the signed root.
      const path = file.inclusion.map((h) => {
        const b = typeof h === "string" ? base64(h) : null;
        if (!b || b.length !== 32) throw new Refusal("malformed", `${JSON.stringify(h)} in the inclusion proof is not a hash`);
        return b;
      });
      const leaf = isLeaf ? actual : await leafHash(enc.encode(file.record));
      const computed = await rootFromInclusion(leaf,
        BigInt(file.index), BigInt(lines[1]), path);
      if (!computed || !equal(computed, root)) {
        throw new Refusal("not-included", "the inclusion proof does not lead from this record to the " +
          "checkpoint's root: the record or the proof was changed, or the record is not in this log");
      }
      step("inclusion", `${path.length} hash(es) lead from the record's leaf to the signed root`);
      steps.push({
        name: "authorization", status: "skip",
        detail: facts.artifacts > 0
          ? `${facts.artifacts} artifact(s) carried; check them against your trust store with enforcer proof verify`
          : "the record cites no authorization",
      });
      return { ok: true, steps, facts };
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      steps.push({ name: e.code, status: "fail", detail: e.message });
      return { ok: false, code: e.code, message: e.message, steps, facts };
    }
  }

  globalThis.EnforcerProof = { verify, sha3_512, hex };
})();
