//! berth's node image store.
//!
//! A content-addressed store on disk (`blobs/sha256/<hex>`, digests verified on every
//! write), an index of image names (written atomically), import of OCI image layout and
//! `docker save` tarballs (streamed, every digest and diff_id verified), pulls from OCI
//! Distribution registries ([`ImageStore::pull`], configured by [`RegistriesConfig`]), and unpacking of
//! layers — once each, shared read-only — into directories that overlayfs uses as
//! lowerdirs, with OCI whiteouts turned into overlay whiteouts.
//!
//! The API is synchronous: it does file IO and hashing. Async callers wrap calls in
//! `tokio::task::spawn_blocking`.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>    manifests, configs, layer blobs (compressed as imported)
//! <dir>/layers/<diff_id hex>/ an unpacked layer, complete once it exists
//! <dir>/index.json            image names → manifest digest, id
//! <dir>/tmp/                  in-progress imports (removed on failure and at open)
//! <dir>/lock                  flock'ed while the index is changed
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), berth_images::ImageError> {
//! use std::path::Path;
//! use berth_images::ImageStore;
//!
//! let store = ImageStore::open(Path::new("/var/lib/berth/images"))?;
//! store.import(Path::new("busybox.tar"))?; // OCI layout or `docker save`
//! if let Some(image) = store.resolve("busybox")? {
//!     // Lowest first; overlayfs wants `lowerdir=top:...:bottom`.
//!     let layers = store.unpack(&image)?;
//!     let lowerdir: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
//!     println!("{} {:?} lowerdir={}", image.id, image.config.cmd, lowerdir.join(":"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Test images (no registry needed) come from [`testing`]: [`testing::build_busybox_oci_tar`]
//! in-process, or `tools/busybox-image.sh OUT.tar [TAG]` from a shell.

mod digest;
mod error;
mod import;
mod pull;
mod reference;
pub mod registries;
pub mod spec;
mod store;
#[allow(unsafe_code)]
mod sys;
pub mod testing;
mod unpack;

pub use digest::Digest;
pub use error::ImageError;
pub use pull::{
    docker_config_credentials, LayerProgress, LayerState, PullOptions, PullProgress, Pulled,
};
pub use reference::{normalize_reference, Reference, DEFAULT_DOMAIN, DEFAULT_TAG};
pub use registries::{Credentials, RegistriesConfig};
pub use store::{Image, ImageConfig, ImageInfo, ImageRef, ImageStore, Layer, Removed};
