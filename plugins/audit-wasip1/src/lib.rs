//! The Arcana audit policy as a WASI preview 1 plugin that uses Rust's `std` the way ordinary
//! code does: buffers are `Vec<u8>`, and an event it cannot read is reported on stderr with
//! `eprintln!` (WASI `fd_write`), which the host puts in Arcana's log under the plugin's name.
//!
//! login → 0, `user.data_access` with action `export` → 1 (flag), `admin.config_change` → 1,
//! anything else → 0, an event that is not a valid audit event → -1.
use serde::Deserialize;
use std::mem::ManuallyDrop;

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
        Err(err) => {
            eprintln!("unreadable audit event ({} bytes): {}", bytes.len(), err);
            return -1;
        }
    };
    match event.event_type.as_str() {
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

/// A buffer of `len` bytes for the host to write the event into.
#[no_mangle]
pub extern "C" fn alloc(len: i32) -> i32 {
    let mut buffer = ManuallyDrop::new(Vec::<u8>::with_capacity(len.max(1) as usize));
    buffer.as_mut_ptr() as i32
}

/// Gives back a buffer from `alloc` (the host passes the same `len`).
#[no_mangle]
pub extern "C" fn dealloc(ptr: i32, len: i32) {
    if ptr != 0 {
        unsafe { drop(Vec::<u8>::from_raw_parts(ptr as *mut u8, 0, len.max(1) as usize)) }
    }
}

#[no_mangle]
pub extern "C" fn get_plugin_version() -> i32 {
    1
}
