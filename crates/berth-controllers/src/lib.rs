//! berth's controllers. Each is a client of the API server (never of the datastore), so it
//! can run in the server process or anywhere else with the same code.

pub mod namespace;
