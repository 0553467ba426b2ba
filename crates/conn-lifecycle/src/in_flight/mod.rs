//! A tower middleware that counts a connection's requests in flight until their response
//! bodies are dropped.

mod body;
pub mod future;
mod layer;
mod service;

pub use self::body::InFlightBody;
pub use self::layer::InFlightLayer;
pub use self::service::InFlight;
