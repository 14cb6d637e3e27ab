//! Fuzzes patch application: JSON patch, merge patch, strategic merge patch and server-side
//! apply of an arbitrary patch onto an arbitrary Deployment-shaped document.
#![no_main]

use berth_patch::{json_patch, managed_fields, merge_patch, strategic_merge_patch, Schema};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (doc, patch) = text.split_once('\n').unwrap_or(("{}", &text));
    let (Ok(doc), Ok(patch)) = (serde_json::from_str::<Value>(doc), serde_json::from_str::<Value>(patch)) else {
        return;
    };
    let schema = Schema { definitions: berth_api::openapi::definitions() };
    let def = "io.k8s.api.apps.v1.Deployment";
    let _ = json_patch(&doc, &patch);
    let _ = merge_patch(&doc, &patch);
    let _ = strategic_merge_patch(&doc, &patch, &schema, def);
    let _ = managed_fields::apply(&doc, &patch, "fuzz", false, &schema, def, "apps/v1", "2026-01-01T00:00:00Z");
    let _ = managed_fields::record_update(&doc, &patch, "fuzz", &schema, def, "apps/v1", "2026-01-01T00:00:00Z", None);
});
