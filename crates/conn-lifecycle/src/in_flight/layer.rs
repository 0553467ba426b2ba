use tower_layer::Layer;

use super::InFlight;
use crate::connection::Connection;

/// Builds [`InFlight`] services that count requests on one [`Connection`].
///
/// Made per connection, usually by [`Connection::layer`], since the count belongs to the
/// connection.
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    conn: Connection,
}

impl InFlightLayer {
    /// A layer counting requests on `conn`.
    pub fn new(conn: Connection) -> Self {
        InFlightLayer { conn }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight::new(inner, self.conn.clone())
    }
}
