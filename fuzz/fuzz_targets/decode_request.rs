//! Fuzzes what the API server does with untrusted request bytes before touching storage:
//! URL routing, query parsing, selectors, body decoding (JSON/YAML), admission checks.
#![no_main]

use berth_apiserver::handlers::decode_object;
use berth_apiserver::request::{route, Query, Route};
use berth_apiserver::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (path, query) = head.split_once('?').unwrap_or((head, ""));
    let q = Query::parse(Some(query));
    let _ = LabelSelector::parse(q.get("labelSelector").unwrap_or(query));
    if let Ok(Route::Resource(rp)) = route(path) {
        let _ = FieldSelector::parse(q.get("fieldSelector").unwrap_or(query), rp.resource);
        for ctype in ["application/json", "application/yaml"] {
            if let Ok(obj) = decode_object(Some(ctype), body.as_bytes()) {
                let _ = berth_api::validation::check_types(rp.resource, &obj);
                let _ = berth_api::openapi::unknown_fields(rp.resource.definition, &obj);
                let mut defaulted = obj.clone();
                berth_api::defaults::apply(rp.resource, &mut defaulted);
                let _ = berth_api::validation::validate(rp.resource, &defaulted, Some(&obj));
            }
        }
    }
});
