//! Pod networking for berth: network namespaces bind-mounted without a process
//! ([`netns`]), a CNI runtime that executes the standard plugins ([`cni`]), per-server
//! host routing safety ([`routing`]) and the pod sandbox that ties them together
//! ([`sandbox`]).

pub mod cni;
pub mod netns;
pub mod routing;
pub mod sandbox;
mod sys;

pub use cni::{CniError, CniResult, PortMapping, Protocol};
pub use netns::{NetnsDir, NetnsError};
pub use routing::RoutingError;
pub use sandbox::{NetworkConfig, Sandbox, SandboxError, SandboxInfo};
