//! The image a container runs: found in the node's image store and its layers unpacked.
//! (Pulling from registries per `imagePullPolicy` belongs here.)

use crate::pods::{blocking, PodRuntime};
use crate::podstatus::ContainerState;
use berth_images::Image;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::path::PathBuf;

impl PodRuntime {
    /// The container's image and its unpacked layers (lowest first), or the waiting state
    /// upstream reports when it cannot have them.
    pub(crate) async fn image_for(
        &self,
        _pod: &Pod,
        c: &Container,
    ) -> Result<(Image, Vec<PathBuf>), ContainerState> {
        let waiting = |reason: &str, message: String| ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        let image_name = c.image.clone().unwrap_or_default();
        let images = self.images.clone();
        let lookup = image_name.clone();
        let resolved = blocking(move || {
            images
                .resolve(&lookup)
                .map(|i| i.map(|img| images.unpack(&img).map(|l| (img, l))))
        })
        .await
        .map_err(|e| waiting("ErrImagePull", e))?;
        let (image, layers) = match resolved {
            Ok(Some(Ok(v))) => v,
            Ok(Some(Err(e))) | Err(e) => return Err(waiting("ErrImagePull", e.to_string())),
            Ok(None) => {
                return Err(waiting(
                    "ErrImageNeverPull",
                    format!("image {image_name:?} is not present on the node (pulling from registries is not implemented yet: use `berth images import`)"),
                ))
            }
        };
        if let Ok(mut ids) = self.image_ids.0.lock() {
            ids.insert(image_name, image.id.to_string());
        }
        Ok((image, layers))
    }
}
