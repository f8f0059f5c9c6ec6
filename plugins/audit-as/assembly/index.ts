// The Arcana audit policy in AssemblyScript (contract §6), same answers as the Rust plugin:
// user.login -> 0, user.data_access with action "export" -> 1, admin.config_change -> 1,
// anything else -> 0, malformed JSON -> -1.
import { JSON } from "assemblyscript-json/assembly";

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

function isObjectText(ptr: usize, len: i32): bool {
  // assemblyscript-json aborts (traps) on some malformed input; reject the obvious cases
  // here so they answer -1 instead.
  let start = 0;
  while (start < len && load<u8>(ptr + <usize>start) <= 32) start++;
  let end = len - 1;
  while (end >= 0 && load<u8>(ptr + <usize>end) <= 32) end--;
  return start < end && load<u8>(ptr + <usize>start) == 123 && load<u8>(ptr + <usize>end) == 125;
}

export function on_audit_event(ptr: i32, len: i32): i32 {
  if (ptr <= 0 || len <= 0) return -1;
  if (!isObjectText(<usize>ptr, len)) return -1;
  const bytes = new Uint8Array(len);
  memory.copy(bytes.dataStart, <usize>ptr, <usize>len);
  const value = JSON.parse(bytes);
  if (!value.isObj) return -1;
  const event = <JSON.Obj>value;
  const eventType = event.getString("event_type");
  const action = event.getString("action");
  if (eventType == null || action == null) return -1;
  const kind = eventType.valueOf();
  if (kind == "user.login") return 0;
  if (kind == "user.data_access") return action.valueOf() == "export" ? 1 : 0;
  if (kind == "admin.config_change") return 1;
  return 0;
}

function abort(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}
