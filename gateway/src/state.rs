//! Shared state handed to every handler.

use emporium_event_store::Store;

use crate::auth::KeyRing;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: KeyRing,
}
