//! The API model of berth: which resources exist ([`registry`]), their OpenAPI schema
//! ([`openapi`]), defaulting ([`defaults`]), validation ([`validation`]) and server-side
//! `Table` columns ([`table`]), and where each resource is stored ([`storage`]). Pure
//! functions over `serde_json::Value`; no IO.

pub mod defaults;
pub mod openapi;
pub mod registry;
pub mod storage;
pub mod table;
pub mod validation;
