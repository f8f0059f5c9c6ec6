import { JSON } from "json-as";

// The Arcana audit policy in AssemblyScript (contract §6), same answers as the Rust plugin:
// user.login -> 0, user.data_access with action "export" -> 1, admin.config_change -> 1,
// anything else -> 0, malformed JSON (or a missing field) -> -1.

@json
class AuditEvent {
  event_type: string = "";
  user_id: string = "";
  resource: string = "";
  action: string = "";
  timestamp: string = "";
}

// A strict JSON syntax check over raw bytes, without building any values. json-as assumes
// well-formed input (it may trap on malformed text), so the plugin answers -1 itself for
// anything that is not JSON, or that lacks one of the string fields the policy needs.

let pos: usize = 0;
let end: usize = 0;
let depth: i32 = 0;
let seen: i32 = 0;

const REQUIRED = ["event_type", "user_id", "resource", "action", "timestamp"];
const ALL_REQUIRED: i32 = 0b11111;
const MAX_DEPTH: i32 = 64;

function skipWs(): void {
  while (pos < end) {
    const c = load<u8>(pos);
    if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) pos++;
    else break;
  }
}

function isHex(c: u8): bool {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

function isDigit(c: u8): bool {
  return c >= 0x30 && c <= 0x39;
}

function str(): bool {
  pos++; // opening quote
  while (pos < end) {
    const c = load<u8>(pos++);
    if (c == 0x22) return true;
    if (c < 0x20) return false;
    if (c == 0x5c) {
      if (pos >= end) return false;
      const e = load<u8>(pos++);
      if (e == 0x75) {
        for (let i = 0; i < 4; i++) {
          if (pos >= end || !isHex(load<u8>(pos))) return false;
          pos++;
        }
      } else if (
        e != 0x22 && e != 0x5c && e != 0x2f && e != 0x62 &&
        e != 0x66 && e != 0x6e && e != 0x72 && e != 0x74
      ) {
        return false;
      }
    }
  }
  return false;
}

function digits(): bool {
  const start = pos;
  while (pos < end && isDigit(load<u8>(pos))) pos++;
  return pos > start;
}

function num(): bool {
  if (load<u8>(pos) == 0x2d) pos++;
  if (pos >= end) return false;
  if (load<u8>(pos) == 0x30) pos++;
  else if (!digits()) return false;
  if (pos < end && load<u8>(pos) == 0x2e) {
    pos++;
    if (!digits()) return false;
  }
  if (pos < end && (load<u8>(pos) == 0x65 || load<u8>(pos) == 0x45)) {
    pos++;
    if (pos < end && (load<u8>(pos) == 0x2b || load<u8>(pos) == 0x2d)) pos++;
    if (!digits()) return false;
  }
  return true;
}

function literal(word: string): bool {
  const n = <usize>word.length;
  if (pos + n > end) return false;
  for (let i: usize = 0; i < n; i++) {
    if (<i32>load<u8>(pos + i) != word.charCodeAt(<i32>i)) return false;
  }
  pos += n;
  return true;
}

function keyIndex(start: usize, len: usize): i32 {
  for (let k = 0; k < REQUIRED.length; k++) {
    const name = REQUIRED[k];
    if (<usize>name.length != len) continue;
    let same = true;
    for (let i: usize = 0; i < len; i++) {
      if (<i32>load<u8>(start + i) != name.charCodeAt(<i32>i)) {
        same = false;
        break;
      }
    }
    if (same) return k;
  }
  return -1;
}

function obj(): bool {
  pos++; // {
  if (++depth > MAX_DEPTH) return false;
  const top = depth == 1;
  skipWs();
  if (pos < end && load<u8>(pos) == 0x7d) {
    pos++;
    depth--;
    return true;
  }
  while (true) {
    skipWs();
    if (pos >= end || load<u8>(pos) != 0x22) return false;
    const keyStart = pos + 1;
    if (!str()) return false;
    const keyLen = pos - 1 - keyStart;
    skipWs();
    if (pos >= end || load<u8>(pos) != 0x3a) return false;
    pos++;
    skipWs();
    const isString = pos < end && load<u8>(pos) == 0x22;
    if (!value()) return false;
    if (top && isString) {
      const k = keyIndex(keyStart, keyLen);
      if (k >= 0) seen |= 1 << k;
    }
    skipWs();
    if (pos >= end) return false;
    const c = load<u8>(pos++);
    if (c == 0x2c) continue;
    if (c == 0x7d) {
      depth--;
      return true;
    }
    return false;
  }
}

function arr(): bool {
  pos++; // [
  if (++depth > MAX_DEPTH) return false;
  skipWs();
  if (pos < end && load<u8>(pos) == 0x5d) {
    pos++;
    depth--;
    return true;
  }
  while (true) {
    if (!value()) return false;
    skipWs();
    if (pos >= end) return false;
    const c = load<u8>(pos++);
    if (c == 0x2c) continue;
    if (c == 0x5d) {
      depth--;
      return true;
    }
    return false;
  }
}

function value(): bool {
  skipWs();
  if (pos >= end) return false;
  const c = load<u8>(pos);
  if (c == 0x7b) return obj();
  if (c == 0x5b) return arr();
  if (c == 0x22) return str();
  if (c == 0x2d || isDigit(c)) return num();
  if (c == 0x74) return literal("true");
  if (c == 0x66) return literal("false");
  if (c == 0x6e) return literal("null");
  return false;
}

/** True if [ptr, ptr+len) is one JSON object with the five policy fields as strings. */
function isAuditEvent(ptr: usize, len: usize): bool {
  pos = ptr;
  end = ptr + len;
  depth = 0;
  seen = 0;
  skipWs();
  if (pos >= end || load<u8>(pos) != 0x7b) return false;
  if (!obj()) return false;
  skipWs();
  return pos == end && seen == ALL_REQUIRED;
}

// The host asks for a buffer, writes the event into it, calls on_audit_event, then frees it.
export function alloc(len: i32): i32 {
  return <i32>heap.alloc(len > 0 ? <usize>len : 1);
}

export function dealloc(ptr: i32, len: i32): void {
  if (ptr != 0) heap.free(<usize>ptr);
}

export function get_plugin_version(): i32 {
  return 1;
}

export function on_audit_event(ptr: i32, len: i32): i32 {
  if (ptr <= 0 || len <= 0) return -1;
  if (!isAuditEvent(<usize>ptr, <usize>len)) return -1;
  const event = JSON.parse<AuditEvent>(String.UTF8.decodeUnsafe(<usize>ptr, <usize>len));
  const kind = event.event_type;
  if (kind == "user.login") return 0;
  if (kind == "user.data_access") return event.action == "export" ? 1 : 0;
  if (kind == "admin.config_change") return 1;
  return 0;
}

// Without this the module would import env.abort; a failed assertion just traps.
function abort(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}
