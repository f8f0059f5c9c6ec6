//! The Arcana audit policy as a WebAssembly plugin (contract §6).
//!
//! login → 0, `user.data_access` with action `export` → 1 (flag), `admin.config_change` → 1,
//! anything else → 0, malformed JSON → -1.
use serde::Deserialize;
use std::alloc::{alloc as raw_alloc, dealloc as raw_dealloc, Layout};

#[derive(Deserialize)]
#[allow(dead_code)]
struct AuditEvent {
    event_type: String,
    user_id: String,
    resource: String,
    action: String,
    timestamp: String,
}

fn policy(bytes: &[u8]) -> i32 {
    let event: AuditEvent = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(_) => return -1,
    };
    match event.event_type.as_str() {
        "user.login" => 0,
        "user.data_access" => i32::from(event.action == "export"),
        "admin.config_change" => 1,
        _ => 0,
    }
}

/// The host writes `len` bytes of UTF-8 JSON at `ptr` and calls this.
#[no_mangle]
pub extern "C" fn on_audit_event(ptr: i32, len: i32) -> i32 {
    if len < 0 {
        return -1;
    }
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    policy(bytes)
}

/// A buffer of `len` bytes for the host to write the event into; 0 if out of memory.
#[no_mangle]
pub extern "C" fn alloc(len: i32) -> i32 {
    let size = len.max(1) as usize;
    match Layout::from_size_align(size, 1) {
        Ok(layout) => unsafe { raw_alloc(layout) as i32 },
        Err(_) => 0,
    }
}

/// Frees a buffer returned by `alloc` (the host passes the same `len`).
#[no_mangle]
pub extern "C" fn dealloc(ptr: i32, len: i32) {
    if ptr == 0 {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(len.max(1) as usize, 1) {
        unsafe { raw_dealloc(ptr as *mut u8, layout) }
    }
}

#[no_mangle]
pub extern "C" fn get_plugin_version() -> i32 {
    1
}
